"""A caller filling the response cache with large replies: what the cache holds stays
bounded, in memory and on disk. Each test failed before its fix."""

from __future__ import annotations

import asyncio
import itertools
import json
import sqlite3
import time
import tracemalloc
from pathlib import Path
from typing import Any

import httpx

from core.cache.check import CacheTicket, ResponseCache
from core.cache.settings import DEFAULT_MAX_BYTES, CacheSettings
from core.stages import Outcome, StoredReply
from tests.support.metered import AUTH, JSON, metered
from tests.support.scripted_upstream import ScriptedUpstream

_counter = itertools.count()


def _embeddings_of(size: int) -> Any:
    """An embeddings answer of about `size` bytes: the cheapest large reply to ask for."""
    vector = [0.123456789] * (size // 12)
    answer = {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": vector}],
        "model": "fake-embedder",
        "usage": {"prompt_tokens": 1, "total_tokens": 1},
    }
    body = json.dumps(answer).encode()

    def reply(request: dict[str, Any]) -> Any:
        return 200, JSON, [(0, body)]

    return reply


def _embed(proxy_url: str, text: str) -> httpx.Response:
    body = {"model": "fake-embedder", "input": text}
    return httpx.post(f"{proxy_url}/v1/embeddings", json=body, headers=AUTH, timeout=10)


def test_the_memory_cache_drops_the_least_recently_used_by_bytes_too() -> None:
    """CACHE_MAX_ENTRIES alone bounded the count: a thousand replies of the default 1 MiB
    entry limit were kept, 1.3 GiB of one process (272 MiB measured for 200 of 0.9 MB).
    Six replies of about 150 kB under a bound of 400 kB: the oldest are dropped."""
    upstream = ScriptedUpstream(_embeddings_of(150_000))
    with metered(upstream, CACHE_URL="memory", CACHE_MAX_BYTES="400000") as proxy:
        texts = [f"text {next(_counter)}" for _ in range(6)]
        for text in texts:
            assert _embed(proxy.url, text).headers["x-proxy-cache"] == "miss"
        assert _embed(proxy.url, texts[-1]).headers["x-proxy-cache"] == "hit"
        assert _embed(proxy.url, texts[0]).headers["x-proxy-cache"] == "miss"  # main: a hit
        assert len(upstream.seen) == 7


def _keep(cache: ResponseCache, key: str, chunks: list[bytes]) -> None:
    reply = StoredReply(200, [(b"content-type", b"application/json")], chunks, None)
    asyncio.run(cache.keep(key, reply))


def test_the_default_memory_cache_holds_at_most_its_byte_bound() -> None:
    """With every setting at its default, a hundred distinct replies of the largest size
    an entry may have: the memory the cache holds stays under CACHE_MAX_BYTES (on main it
    held them all, about 133 MiB)."""
    cache = ResponseCache.from_settings(CacheSettings(url="memory://"))
    chunk = b"x" * (64 * 1024)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(100):
            _keep(cache, f"cache:{n}", [chunk] * 16)  # 1 MiB, the default entry limit
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < DEFAULT_MAX_BYTES * 1.1, f"the memory cache holds {held / 2**20:.0f} MiB"
    assert asyncio.run(cache.lookup("cache:99")) is not None  # the newest are kept
    assert asyncio.run(cache.lookup("cache:0")) is None


def test_a_reply_larger_than_the_whole_bound_is_not_kept() -> None:
    cache = ResponseCache.from_settings(CacheSettings(url="memory://", max_bytes=100_000))
    _keep(cache, "cache:small", [b"{}"])
    _keep(cache, "cache:large", [b"x" * 200_000])
    assert asyncio.run(cache.lookup("cache:large")) is None
    assert asyncio.run(cache.lookup("cache:small")) is not None


def test_an_sqlite_cache_deletes_expired_entries(tmp_path: Path) -> None:
    """`get` never returned an expired entry, but nothing deleted it: a cache on SQLite kept
    every distinct reply it ever stored, up to CACHE_MAX_ENTRY_BYTES each, for good."""
    path = tmp_path / "cache.db"
    now = [time.time() - 3600]  # the first entries were written an hour ago
    cache = ResponseCache.from_settings(CacheSettings(url=f"sqlite:///{path}", ttl_seconds=60))
    cache.clock = lambda: now[0]
    for n in range(150):
        _keep(cache, f"cache:old-{n}", [b"x" * 10_000])
    now[0] = time.time()
    for n in range(150):
        _keep(cache, f"cache:new-{n}", [b"x" * 10_000])
    with sqlite3.connect(path) as db:
        (rows,) = db.execute("SELECT count(*) FROM items WHERE key LIKE 'cache:old-%'").fetchone()
    assert rows == 0, f"{rows} expired entries still in the file"


def _copying(cache: ResponseCache, name: str) -> CacheTicket:
    ticket = CacheTicket(cache, f"cache:{name}", [], stream=True)
    ticket.start(200, [(b"content-type", b"text/event-stream")], [])
    return ticket


def _copied(ticket: CacheTicket) -> int:
    return sum(len(chunk) for chunk in ticket.chunks or ())


def test_replies_being_copied_hold_at_most_the_byte_bound_together() -> None:
    """Each reply that may be kept is copied while it is relayed, up to the entry limit:
    a hundred connections each holding open a reply of the default 1 MiB held 100 MiB of
    copies (any store, not only `memory`). Together they now hold at most CACHE_MAX_BYTES;
    a copy that finds no room stops, and its reply is not kept."""
    cache = ResponseCache.from_settings(CacheSettings(url="memory://"))
    tickets = [_copying(cache, str(n)) for n in range(100)]
    for ticket in tickets:
        for _ in range(16):
            ticket.feed(b"data: x\n\n" * 6_000)  # 54 kB a chunk, about 860 kB a reply
    held = sum(_copied(ticket) for ticket in tickets)
    assert held <= DEFAULT_MAX_BYTES, f"copies in flight hold {held / 2**20:.0f} MiB"
    assert tickets[-1].chunks is None  # no room left: not copied

    # Settled, a copy gives its room back, kept or not; so does one never settled.
    for ticket in tickets[:50]:
        asyncio.run(ticket.settle(Outcome(upstream_status=502)))
    del ticket
    tickets[50:] = []
    assert cache.copy_room == DEFAULT_MAX_BYTES
    later = _copying(cache, "later")
    later.feed(b"data: x\n\n")
    assert _copied(later) == 9
