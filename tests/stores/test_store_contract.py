"""One contract, four backends: memory, SQLite (temp file), DynamoDB (moto), Redis (real
redis-server on loopback). What the proxy and the CLI rely on, and nothing else."""

from __future__ import annotations

import time

from core.stores import Store


def test_put_then_get_round_trips_the_document(store: Store) -> None:
    store.put("token:abc", {"label": "alice", "models": ["gpt-4o*"]})
    item = store.get("token:abc")
    assert item is not None
    assert item.doc == {"label": "alice", "models": ["gpt-4o*"]}
    assert item.expires_at is None
    assert store.get("token:missing") is None


def test_put_replaces_and_can_clear_the_expiry(store: Store) -> None:
    later = time.time() + 3600
    store.put("token:a", {"v": 1}, expires_at=later)
    assert store.get("token:a").expires_at >= later  # type: ignore[union-attr]
    store.put("token:a", {"v": 2})
    item = store.get("token:a")
    assert item is not None and item.doc == {"v": 2} and item.expires_at is None


def test_an_expired_item_is_gone(store: Store) -> None:
    store.put("token:old", {"v": 1}, expires_at=time.time() - 1)
    store.put("token:new", {"v": 2}, expires_at=time.time() + 60)
    assert store.get("token:old") is None
    assert [i.key for i in store.scan("token:")] == ["token:new"]


def test_delete_says_whether_it_removed_something(store: Store) -> None:
    store.put("token:a", {"v": 1})
    assert store.delete("token:a") is True
    assert store.get("token:a") is None
    assert store.delete("token:a") is False


def test_scan_lists_only_the_prefix(store: Store) -> None:
    store.put("token:b", {"v": 2})
    store.put("token:a", {"v": 1})
    store.put("other:x", {"v": 3})
    assert [i.key for i in store.scan("token:")] == ["token:a", "token:b"]


def test_touch_sets_last_used_and_put_keeps_it(store: Store) -> None:
    store.put("token:a", {"disabled": False})
    store.touch("token:a", 1_800_000_000.5)
    assert store.get("token:a").last_used == 1_800_000_000.5  # type: ignore[union-attr]
    # An admin's disable (a put) after a touch keeps the touch, and the touch never
    # overwrote the document.
    store.put("token:a", {"disabled": True})
    item = store.get("token:a")
    assert item is not None and item.doc == {"disabled": True}
    assert item.last_used == 1_800_000_000.5


def test_touch_never_brings_back_a_revoked_item(store: Store) -> None:
    store.put("token:a", {"v": 1})
    store.delete("token:a")
    store.touch("token:a", time.time())
    assert store.get("token:a") is None
    assert store.scan("token:") == []


def test_update_replaces_only_an_item_that_exists(store: Store) -> None:
    later = time.time() + 3600
    store.put("token:a", {"disabled": True})
    store.touch("token:a", 1_800_000_000.5)
    assert store.update("token:a", {"disabled": False}, expires_at=later) is True
    item = store.get("token:a")
    assert item is not None and item.doc == {"disabled": False}
    assert item.expires_at is not None and item.expires_at >= later
    assert item.last_used == 1_800_000_000.5  # kept, as `put` keeps it
    assert store.update("token:a", {"disabled": True}) is True  # the expiry can be cleared
    assert store.get("token:a").expires_at is None  # type: ignore[union-attr]
    # Deleted (a revoke) or never there: nothing is written.
    store.delete("token:a")
    assert store.update("token:a", {"disabled": False}) is False
    assert store.update("token:never", {"v": 1}) is False
    assert store.get("token:a") is None and store.get("token:never") is None
    assert store.scan("token:") == []


def test_update_never_brings_back_an_expired_item(store: Store) -> None:
    store.put("token:old", {"v": 1}, expires_at=time.time() - 1)
    assert store.update("token:old", {"v": 2}, expires_at=time.time() + 3600) is False
    assert store.get("token:old") is None
