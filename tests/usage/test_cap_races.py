"""Every cap raced, per caller and in total, on every store available offline (memory,
SQLite, Redis): requests released together cannot pass a cap together, because each rule
reserves in one atomic store call (read-then-write would let them all through)."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from core.stores import open_store
from tests.support.metered import JSON, chats_at_once, metered, models_or
from tests.support.scripted_upstream import ScriptedUpstream
from tests.support.servers import LONG_WINDOW

PRICES = json.dumps({"fake-*": {"input": 10, "output": 100}})
USAGE = {"prompt_tokens": 30, "completion_tokens": 70, "total_tokens": 100}
COST = 30 * 10 / 1e6 + 70 * 100 / 1e6
BACKENDS = ["memory", "sqlite", "redis"]


def slow_reply() -> ScriptedUpstream:
    # Replies arrive after every request was admitted: nothing settles during the race.
    body = json.dumps({"choices": [], "usage": USAGE}).encode()
    return ScriptedUpstream(models_or(lambda r: (200, JSON, [(0.3, body)])))


def store_env(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, str]:
    if backend == "sqlite":
        return {"LIMIT_STORE": f"sqlite:///{tmp_path}/caps.db"}
    if backend == "redis":
        url = request.getfixturevalue("limits_redis_url")
        # The server is shared by the session's usage tests: what earlier tests spent as the
        # same caller today would count against this test's cap.
        import redis

        redis.Redis.from_url(url).flushdb()
        return {"LIMIT_STORE": url}
    return {}


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_request_limit_holds_for_one_caller_under_a_race(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    extra = {"RATE_LIMIT_REQUESTS": "5", **store_env(backend, tmp_path, request)}
    if backend == "redis":
        extra["RATE_LIMIT_WINDOW"] = LONG_WINDOW
    with metered(slow_reply(), **extra) as proxy:
        statuses = chats_at_once(proxy, 20)
    assert statuses.count(200) == 5
    assert statuses.count(429) == 15


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_token_limit_holds_for_one_caller_under_a_race(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    # Each request reserves its worst case (over max_tokens = 100): 500 tokens admit at most 5.
    extra = {"RATE_LIMIT_TOKENS": "500", **store_env(backend, tmp_path, request)}
    with metered(slow_reply(), **extra) as proxy:
        statuses = chats_at_once(proxy, 20)
    admitted = statuses.count(200)
    assert 1 <= admitted <= 5, statuses
    assert statuses.count(429) == 20 - admitted, statuses


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_callers_budget_holds_under_a_race(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    extra = {
        "BUDGET_PER_CALLER_USD": "0.05",
        "MODEL_PRICES": PRICES,
        **store_env(backend, tmp_path, request),
    }
    with metered(slow_reply(), **extra) as proxy:
        statuses = chats_at_once(proxy, 30)
    admitted = statuses.count(200)
    assert statuses.count(429) == 30 - admitted
    # Worst case ~$0.0104 a request: the cap admits about five, overshooting by at most one.
    assert admitted >= 4
    assert admitted * COST <= 0.05 + 0.0105


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_two_store_clients_reserve_one_cap_atomically(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Two instances of the proxy (two clients of one store), 40 threads each asking for 1
    of a cap of 25: exactly 25 are granted."""
    url = store_env(backend, tmp_path, request)["LIMIT_STORE"]
    stores = [open_store(url), open_store(url)]
    key = f"race:{backend}:{tmp_path.name}"
    gate = threading.Event()

    def one(i: int) -> int | None:
        gate.wait()
        return stores[i % 2].reserve(key, "n", 1, 25, expires_at=4e9)

    with ThreadPoolExecutor(40) as pool:
        futures = [pool.submit(one, i) for i in range(40)]
        gate.set()
        granted = [f.result() for f in futures]
    assert granted.count(1) == 25
    assert granted.count(None) == 15
    assert stores[0].increment(key, {}, expires_at=4e9)["n"] == 25


@pytest.mark.parametrize("backend", BACKENDS)
def test_reserve_grants_the_room_left_then_nothing_at_the_cap(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The edge a race only sometimes reaches: a reservation that would pass the cap gets the
    room left, and once the cap is reached exactly, the next gets None (refused), never 0."""
    url = store_env(backend, tmp_path, request).get("LIMIT_STORE", "memory://")
    store = open_store(url)
    key = f"edge:{backend}:{tmp_path.name}"
    assert store.reserve(key, "n", 40, 100, expires_at=4e9) == 40
    assert store.reserve(key, "n", 40, 100, expires_at=4e9) == 40
    assert store.reserve(key, "n", 40, 100, expires_at=4e9) == 20  # the room left
    assert store.reserve(key, "n", 1, 100, expires_at=4e9) is None  # exactly at the cap
    assert store.increment(key, {}, expires_at=4e9)["n"] == 100
    # Given back (a refund), the room is there again.
    store.increment(key, {"n": -30}, expires_at=4e9)
    assert store.reserve(key, "n", 40, 100, expires_at=4e9) == 30
    assert store.reserve(key, "n", 40, 100, expires_at=4e9) is None
