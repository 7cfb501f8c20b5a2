"""One contract for the response cache on every store: memory (an LRU), SQLite, Redis (a
local redis-server) and DynamoDB (moto, with its 400 KB item limit)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.cache.check import MISS, CacheTicket, ResponseCache
from core.cache.settings import CacheSettings
from core.protocols import Usage
from core.stages import Outcome, RawHeaders, StoredReply
from tests.support.store_backends import fresh_store_url

KINDS = ["memory", "sqlite", "redis", "dynamodb"]
SSE = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
COMPLETE = Outcome(upstream_status=200, complete=True, usage=Usage(5, 8))


@pytest.fixture(autouse=True)
def any_body_is_an_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests hold the stores to one contract with arbitrary bytes; which replies are
    finished answers is tested over sockets (test_cache_keeps_only_answers.py)."""
    monkeypatch.setattr("core.cache.check.finished", lambda *args: True)


@pytest.fixture(params=KINDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    def redis_url() -> str:
        return str(request.getfixturevalue("cache_redis_url"))

    with fresh_store_url(request.param, tmp_path, redis_url) as url:
        yield url


def cache_on(url: str, **options: object) -> ResponseCache:
    return ResponseCache.from_settings(CacheSettings(url=url, **options))  # type: ignore[arg-type]


def keep(cache: ResponseCache, key: str, chunks: list[bytes], headers: RawHeaders = SSE) -> None:
    ticket = CacheTicket(cache, key, MISS)
    ticket.start(200, [*headers, (b"date", b"today"), (b"x-ratelimit-limit-requests", b"9")], [])
    for chunk in chunks:
        ticket.feed(chunk)
    asyncio.run(ticket.settle(COMPLETE))


def test_a_kept_reply_comes_back_byte_for_byte(store_url: str) -> None:
    cache = cache_on(store_url)
    chunks = [b'data: {"a":1}\n\n', b"\x00\xff binary \xc3\xa9", b"data: [DONE]\n\n"]
    keep(cache, "cache:one", chunks)
    stored = asyncio.run(cache.lookup("cache:one"))
    assert stored == StoredReply(200, SSE, chunks, Usage(5, 8))  # per-request headers gone
    assert asyncio.run(cache.lookup("cache:other")) is None


def test_an_expired_entry_is_gone(store_url: str) -> None:
    cache = cache_on(store_url, ttl_seconds=60.0)
    cache.clock = lambda: time.time() - 61
    keep(cache, "cache:old", [b"{}"], [(b"content-type", b"application/json")])
    assert asyncio.run(cache.lookup("cache:old")) is None


def test_a_reply_over_the_entry_limit_is_not_kept_nor_copied_past_it(store_url: str) -> None:
    cache = cache_on(store_url, max_entry_bytes=1000)
    ticket = CacheTicket(cache, "cache:big", MISS)
    ticket.start(200, SSE, [])
    ticket.feed(b"x" * 600)
    ticket.feed(b"x" * 600)
    assert ticket.chunks is None  # copying stopped at the limit
    ticket.feed(b"x" * 600)
    asyncio.run(ticket.settle(COMPLETE))
    assert asyncio.run(cache.lookup("cache:big")) is None


def test_incomplete_or_failed_replies_are_not_kept(store_url: str) -> None:
    cache = cache_on(store_url)
    for key, status, outcome in (
        ("cache:cut", 200, Outcome(upstream_status=200, complete=False)),
        ("cache:error", 500, Outcome(upstream_status=500, complete=True)),
    ):
        ticket = CacheTicket(cache, key, MISS)
        ticket.start(status, SSE, [])
        ticket.feed(b"data: {}\n\n")
        asyncio.run(ticket.settle(outcome))
        assert asyncio.run(cache.lookup(key)) is None


@pytest.fixture(params=["sqlite", "redis", "dynamodb"])
def shared_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    def redis_url() -> str:
        return str(request.getfixturevalue("cache_redis_url"))

    with fresh_store_url(request.param, tmp_path, redis_url) as url:
        yield url


def test_what_one_ttl_writes_is_bounded_on_the_shared_stores(shared_store_url: str) -> None:
    """SQLite, Redis and DynamoDB expire entries by themselves and kept no total: a caller
    allowed cacheable requests (every embeddings request) filled them at will, a Redis
    shared with the token store included. Now the bytes written in one TTL-long window are
    at most half of CACHE_MAX_BYTES, so what lives at once is at most all of it (memory is
    bounded by its LRU: test_cache_bounds.py). Failed before on the three."""
    cache = cache_on(shared_store_url, ttl_seconds=600.0, max_bytes=8000)
    window_start = (time.time() // 600) * 600
    cache.clock = lambda: window_start + 1
    for n in range(4):  # 1,492 bytes a stored document
        keep(cache, f"cache:n{n}", [b"x" * 1000])
    kept = [n for n in range(4) if asyncio.run(cache.lookup(f"cache:n{n}")) is not None]
    assert kept == [0, 1]  # 2,984 of the window's 4,000 bytes; a third would pass them
    # The next window has room of its own: entries of two windows at most live at once.
    cache.clock = lambda: window_start + 601
    keep(cache, "cache:next", [b"x" * 1000])
    assert asyncio.run(cache.lookup("cache:next")) is not None


def test_a_damaged_entry_is_a_miss(store_url: str) -> None:
    cache = cache_on(store_url)
    cache.store.put("cache:bad", {"v": 1, "body": "not base64!", "chunks": [3]})
    assert asyncio.run(cache.lookup("cache:bad")) is None


def test_dynamodb_refuses_what_does_not_fit_its_item_limit(tmp_path: Path) -> None:
    with fresh_store_url("dynamodb", tmp_path, str) as url:
        cache = cache_on(url)
        assert cache.max_body == 280 * 1024  # below the 1 MiB default: base64 must fit
        # Just under the body limit, but in 28,000 chunks: the lengths overflow the item.
        keep(cache, "cache:many", [b"0123456789"] * 28_000)
        assert asyncio.run(cache.lookup("cache:many")) is None
        keep(cache, "cache:fits", [b"0123456789" * 1000] * 28)
        stored = asyncio.run(cache.lookup("cache:fits"))
        assert stored is not None and len(b"".join(stored.chunks)) == 280_000


def test_the_memory_cache_forgets_the_least_recently_used() -> None:
    cache = cache_on("memory://", max_entries=2)
    keep(cache, "cache:a", [b"a"])
    keep(cache, "cache:b", [b"b"])
    assert asyncio.run(cache.lookup("cache:a")) is not None  # a is now the most recent
    keep(cache, "cache:c", [b"c"])
    assert asyncio.run(cache.lookup("cache:b")) is None
    assert asyncio.run(cache.lookup("cache:a")) is not None
    assert asyncio.run(cache.lookup("cache:c")) is not None


class BrokenStore:
    blocking = False

    def get(self, key: str) -> None:
        raise ConnectionError("store down")

    def put(self, key: str, doc: object, *, expires_at: float | None = None) -> None:
        raise ConnectionError("store down")


def test_a_failing_store_is_a_miss_and_a_skipped_write() -> None:
    cache = ResponseCache(BrokenStore(), CacheSettings(url="redis://down"))  # type: ignore[arg-type]
    assert asyncio.run(cache.lookup("cache:any")) is None
    keep(cache, "cache:any", [b"{}"])  # logged, not raised
