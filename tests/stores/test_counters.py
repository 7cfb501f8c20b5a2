"""The counter operation every store adds for rate limits: atomic, per key, expiring."""

from __future__ import annotations

import threading
import time

from core.stores import open_store


def test_increment_adds_and_returns_every_counter(store_url: str) -> None:
    store = open_store(store_url)
    later = time.time() + 120
    assert store.increment("rl:1:a", {"requests": 1, "tokens": 0}, expires_at=later) == {
        "requests": 1,
        "tokens": 0,
    }
    assert store.increment("rl:1:a", {"requests": 1, "tokens": 0}, expires_at=later) == {
        "requests": 2,
        "tokens": 0,
    }
    assert store.increment("rl:1:a", {"tokens": 40}, expires_at=later) == {
        "requests": 2,
        "tokens": 40,
    }
    # Another caller's key is its own count.
    assert store.increment("rl:1:b", {"requests": 1}, expires_at=later) == {"requests": 1}


def test_counters_do_not_show_up_as_tokens(store_url: str) -> None:
    store = open_store(store_url)
    store.increment("rl:1:a", {"requests": 1}, expires_at=time.time() + 60)
    assert store.scan("token:") == []
    assert store.get("token:rl:1:a") is None


def test_concurrent_increments_lose_nothing(store_url: str) -> None:
    store = open_store(store_url)
    later = time.time() + 120
    if store_url.startswith("dynamodb"):
        # moto's in-memory table is not thread-safe, so hammering it tests moto. What
        # makes the count atomic on real DynamoDB is that an increment is one UpdateItem
        # with ADD (no read-modify-write): check exactly that.
        calls: list[tuple[str, dict]] = []
        store._client.meta.events.register(  # type: ignore[attr-defined]
            "provide-client-params.dynamodb.*",
            lambda model, params, **_: calls.append((model.name, params)),
        )
        store.increment("rl:1:busy", {"requests": 1, "tokens": 7}, expires_at=later)
        assert [name for name, _ in calls] == ["UpdateItem"]
        assert " ADD #c0 :a0, #c1 :a1" in calls[0][1]["UpdateExpression"]
        return

    def hammer() -> None:
        for _ in range(25):
            store.increment("rl:1:busy", {"requests": 1}, expires_at=later)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert store.increment("rl:1:busy", {"requests": 0}, expires_at=later) == {"requests": 100}


def test_two_store_objects_on_one_backend_share_the_count(shared_store_url: str) -> None:
    """Two function instances: each opens its own client to the same table/server/file."""
    first, second = open_store(shared_store_url), open_store(shared_store_url)
    later = time.time() + 120
    first.increment("rl:1:x", {"requests": 1}, expires_at=later)
    second.increment("rl:1:x", {"requests": 1}, expires_at=later)
    assert first.increment("rl:1:x", {"requests": 1}, expires_at=later) == {"requests": 3}


def test_an_expired_counter_starts_again(tmp_path) -> None:
    # Memory and SQLite expire counters themselves; Redis by EXPIREAT. (DynamoDB's TTL
    # sweeps only eventually: the window number in every key is what starts a new count.)
    for url in ("memory://", f"sqlite:///{tmp_path}/expiry.db"):
        store = open_store(url)
        store.increment("rl:1:old", {"requests": 5}, expires_at=time.time() - 1)
        assert store.increment("rl:1:old", {"requests": 1}, expires_at=time.time() + 60) == {
            "requests": 1
        }


def test_scan_counters_lists_counters_by_prefix_and_never_documents(store_url: str) -> None:
    store = open_store(store_url)
    later = time.time() + 120
    store.increment("usage:2026-11-30:b", {"requests": 2, "tokens": 9}, expires_at=later)
    store.increment("usage:2026-11-30:a", {"requests": 1}, expires_at=later)
    store.increment("rl:1:a", {"requests": 1}, expires_at=later)
    store.put("usage:doc", {"not": "a counter"})
    assert store.scan_counters("usage:") == [
        ("usage:2026-11-30:a", {"requests": 1}),
        ("usage:2026-11-30:b", {"requests": 2, "tokens": 9}),
    ]
    assert store.scan_counters("nothing:") == []
    # And the document scan does not trip over counters.
    assert [item.key for item in store.scan("usage:")] == ["usage:doc"]


def test_scan_counters_skips_expired_counters(store_url: str) -> None:
    store = open_store(store_url)
    store.increment("usage:old", {"requests": 1}, expires_at=time.time() - 1)
    store.increment("usage:new", {"requests": 1}, expires_at=time.time() + 60)
    assert [key for key, _ in store.scan_counters("usage:")] == ["usage:new"]
