"""The memory and SQLite stores at their edges, on a frozen clock: an item and a counter end
exactly at their `expires_at`, a reservation takes exactly the room left, and the memory
store's LRU forgets the least recently used. The contract tests (test_counters.py,
tests/tokens/test_store_contract.py) use expiries far from now; these pin the instant,
found by mutation testing (docs/mutation.md)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.stores import memory, sqlite
from core.stores.memory import MemoryStore
from core.stores.sqlite import SQLiteStore

NOW = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def time(self) -> float:
        return self.now


@pytest.fixture()
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(memory, "time", fake)
    monkeypatch.setattr(sqlite, "time", fake)
    return fake


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MemoryStore | SQLiteStore]:
    yield MemoryStore() if request.param == "memory" else SQLiteStore(str(tmp_path / "s.db"))


def test_an_item_is_gone_at_the_instant_it_expires(
    store: MemoryStore | SQLiteStore, clock: Clock
) -> None:
    store.put("token:a", {"v": 1}, expires_at=NOW + 10)
    clock.now = NOW + 9.999
    assert store.get("token:a") is not None
    assert [item.key for item in store.scan("token:")] == ["token:a"]
    clock.now = NOW + 10
    assert store.get("token:a") is None
    assert store.scan("token:") == []


def test_a_counter_starts_again_at_the_instant_it_expires(
    store: MemoryStore | SQLiteStore, clock: Clock
) -> None:
    assert store.increment("rl:1:a", {"requests": 2}, expires_at=NOW + 10) == {"requests": 2}
    clock.now = NOW + 9.999
    assert store.increment("rl:1:a", {"requests": 1}, expires_at=NOW + 10) == {"requests": 3}
    assert store.scan_counters("rl:") == [("rl:1:a", {"requests": 3})]
    clock.now = NOW + 10
    assert store.scan_counters("rl:") == []
    assert store.increment("rl:1:a", {"requests": 1}, expires_at=NOW + 20) == {"requests": 1}


def test_a_reservation_takes_the_room_left_and_none_past_the_limit(
    store: MemoryStore | SQLiteStore, clock: Clock
) -> None:
    later = NOW + 60
    assert store.reserve("rl:1:a", "tokens", 60, 100, expires_at=later) == 60
    assert store.reserve("rl:1:a", "tokens", 39, 100, expires_at=later) == 39
    assert store.reserve("rl:1:a", "tokens", 50, 100, expires_at=later) == 1
    assert store.reserve("rl:1:a", "tokens", 1, 100, expires_at=later) is None
    assert store.increment("rl:1:a", {}, expires_at=later) == {"tokens": 100}
    # Another key, and the same key once its window is over, start from nothing.
    assert store.reserve("rl:1:b", "tokens", 100, 100, expires_at=later) == 100
    clock.now = later
    assert store.reserve("rl:1:a", "tokens", 70, 100, expires_at=later + 60) == 70


def test_a_reservation_counts_beside_the_other_counters_of_its_key(
    store: MemoryStore | SQLiteStore, clock: Clock
) -> None:
    later = NOW + 60
    store.increment("rl:1:a", {"requests": 1, "tokens": 30}, expires_at=later)
    assert store.reserve("rl:1:a", "tokens", 80, 100, expires_at=later) == 70
    assert store.increment("rl:1:a", {}, expires_at=later) == {"requests": 1, "tokens": 100}


def test_the_memory_lru_forgets_the_least_recently_used_document() -> None:
    store = MemoryStore(max_items=2)
    store.put("a", {"v": 1})
    store.put("b", {"v": 2})
    assert store.get("a") is not None  # a is now the most recently used
    store.put("c", {"v": 3})
    assert store.get("b") is None
    assert store.get("a") is not None and store.get("c") is not None
    # Replacing a document is a use, not another entry.
    store.put("a", {"v": 4})
    store.put("d", {"v": 5})
    assert store.get("c") is None
    assert store.get("a") is not None and store.get("a").doc == {"v": 4}  # type: ignore[union-attr]
    # Counters are not documents: they do not push any out.
    store.increment("rl:1:x", {"requests": 1}, expires_at=NOW + 60)
    assert store.get("d") is not None


def test_without_a_bound_the_memory_store_keeps_every_document() -> None:
    store = MemoryStore()
    for n in range(50):
        store.put(f"k{n}", {"v": n})
    assert len(store.scan("k")) == 50


def test_marking_an_item_used_keeps_its_expiry(
    store: MemoryStore | SQLiteStore, clock: Clock
) -> None:
    """A token's last use is written on every use: it must not make an expiring item
    permanent."""
    store.put("token:a", {"v": 1}, expires_at=NOW + 10)
    store.touch("token:a", NOW + 5)
    item = store.get("token:a")
    assert item is not None and item.last_used == NOW + 5 and item.expires_at == NOW + 10
    clock.now = NOW + 10
    assert store.get("token:a") is None


def test_touch_of_a_missing_item_creates_nothing(store: MemoryStore | SQLiteStore) -> None:
    store.touch("token:gone", NOW)
    assert store.get("token:gone") is None


def test_the_sqlite_sweep_of_expired_items_reads_an_index(tmp_path: Path) -> None:
    """A SQLite cache is mostly entries that expire: each sweep (every 100th expiring put,
    each scan) must find them without reading the whole table."""
    store = SQLiteStore(str(tmp_path / "cache.db"))
    store.put("cache:a", {"v": 1}, expires_at=time.time() + 60)
    [(*_, plan)] = (
        store._db()
        .execute(
            "EXPLAIN QUERY PLAN DELETE FROM items WHERE expires_at IS NOT NULL AND expires_at <= ?",
            (time.time(),),
        )
        .fetchall()
    )
    assert plan.startswith("SEARCH items USING INDEX"), plan
