"""The response cache as an admission check: the last rule after the body is read.

It runs after scopes, policy, rate limits and the budget reservation, so a hit is still a
request the caller was allowed to make and still counts against its request limit. A hit
returns a ticket carrying the stored reply: the endpoint sends it, calls no upstream, and
settles every ticket with zero cost (limits and budgets give their reservation back), the
tokens saved going to the access log. A miss returns a ticket the relay feeds a copy of the
reply, bounded by CACHE_MAX_ENTRY_BYTES (it stops copying once over); settlement stores it
only if the reply is a 200 read to its end, uncompressed, not marked `no-store` (nor
`private` under CACHE_SCOPE=shared), and an answer by its own protocol's measure: a
finished stream, not an `{"error": ...}` body (core/cache/complete.py).

The caller's `Cache-Control: no-cache` (or `max-age=0`, a browser's `cache: "no-cache"`,
or `Pragma: no-cache`; or a `max-age` the entry is older than) skips the lookup; with
CACHE_SCOPE=caller it
refreshes the caller's own entry with the new reply, with CACHE_SCOPE=shared it writes
nothing (one caller must not replace the answer every other caller gets). `no-store` skips
the cache both ways. Every reply on a provider route says which happened:
`x-proxy-cache: hit`, `miss` or `bypass`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from core.cache.complete import finished
from core.cache.entry import EntryUnreadable, decode, encode, kept_headers, stored_bytes
from core.cache.key import cache_control, cache_key, cacheable_document, deterministic, max_age
from core.errors import NotCached
from core.stages import HeaderTicket, RawHeaders, ReplyTicket, StoredReply
from core.stores.calls import DEFAULT_STORE_TIMEOUT, call_store

if TYPE_CHECKING:
    from core.cache.settings import CacheSettings
    from core.request import ProxyRequest
    from core.stages import Outcome, Ticket
    from core.types import RequestLog
from core.stores import Store, StoreSet

logger = logging.getLogger("llm_proxy")

HIT: RawHeaders = [(b"x-proxy-cache", b"hit")]
# A stored reply older than the caller's max-age (`ResponseCache.lookup`).
STALE_FOR_CALLER = StoredReply(0, [], [])
MISS: RawHeaders = [(b"x-proxy-cache", b"miss")]
BYPASS: RawHeaders = [(b"x-proxy-cache", b"bypass")]

# DynamoDB refuses items over 400 KB. A body in base64 grows by a third, so a DynamoDB
# cache copies at most this much of a reply, and refuses a document that still does not
# fit (many small chunks, long headers).
DYNAMODB_MAX_BODY = 280 * 1024
DYNAMODB_MAX_DOCUMENT = 390 * 1024


def open_cache_store(settings: CacheSettings, stores: StoreSet | None = None) -> Store:
    if settings.url.startswith("memory:"):
        from core.stores.memory import MemoryStore

        # Its own, never the app's shared memory store: the LRU would evict tokens. Bound
        # by bytes too: a count of entries alone allows a thousand of the largest.
        return MemoryStore(
            max_items=settings.max_entries, max_bytes=settings.max_bytes, size=stored_bytes
        )
    if stores is not None:
        return stores.open(settings.url)  # one client with TOKEN_STORE etc. on one URL
    from core.stores import open_store

    return open_store(settings.url)


class ResponseCache:
    reads_body = True

    def __init__(
        self,
        store: Store,
        settings: CacheSettings,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.ttl = settings.ttl_seconds
        self.shared = settings.scope == "shared"
        self.nondeterministic = settings.nondeterministic
        self.max_body = settings.max_entry_bytes
        self.max_document: int | None = None
        if settings.url.startswith("dynamodb:"):
            self.max_body = min(self.max_body, DYNAMODB_MAX_BODY)
            self.max_document = DYNAMODB_MAX_DOCUMENT
        self.clock = clock
        self._last_error_log = 0.0
        # What replies being copied to be kept may still take, all requests together:
        # each copies up to max_body while it is relayed, and a thousand connections each
        # holding a MiB-long reply open would otherwise hold a GiB. A copy that finds no
        # room stops (that reply is not kept); its room comes back when it settles.
        self.copy_room = settings.max_bytes
        # A shared store (SQLite, Redis, DynamoDB) expires entries by itself and keeps no
        # total, so any caller allowed cacheable requests (every embeddings request is one)
        # could fill it, a Redis shared with the token store included. The bytes written
        # in each window of one TTL are counted in the store: an entry lives at most one
        # TTL, so what is stored at once was written in this window or the one before,
        # and half the bound a window keeps the whole under CACHE_MAX_BYTES.
        self.window_room: int | None = None
        if not settings.url.startswith("memory:"):
            self.window_room = settings.max_bytes // 2

    def take(self, size: int) -> bool:
        """Room for `size` more bytes of copies in flight, if there is some."""
        if size > self.copy_room:
            return False
        self.copy_room -= size
        return True

    def give_back(self, size: int) -> None:
        self.copy_room += size

    @classmethod
    def from_settings(
        cls, settings: CacheSettings, stores: StoreSet | None = None
    ) -> ResponseCache:
        return cls(open_cache_store(settings, stores), settings)

    async def _call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        # Bounded like every store call: a slow cache is a miss, not a stalled request.
        return await call_store(self.store, DEFAULT_STORE_TIMEOUT, method, *args, **kwargs)

    def _store_failed(self, doing: str, exc: BaseException) -> None:
        # A cache that fails is a miss, never a refusal; the log says so, at most every 10 s.
        now = time.monotonic()
        if now - self._last_error_log > 10:
            self._last_error_log = now
            # The type only: a driver's message may quote the store URL and its password.
            logger.error("response cache store failed to %s: %s", doing, type(exc).__name__)

    async def admit(self, request: ProxyRequest) -> Ticket | None:
        directives = cache_control(request.headers)
        ticket = await self._admit(request, directives)
        if b"only-if-cached" in directives and (
            not isinstance(ticket, CacheTicket) or ticket.replay is None
        ):
            # Only a stored reply was asked for (RFC 9111 5.2.1.7): a miss, or a request the
            # cache cannot answer, is a 504 rather than a call that spends.
            raise NotCached(
                "This request asked for a stored reply only (Cache-Control: only-if-cached), "
                "and the proxy's response cache has none for it."
            )
        return ticket

    async def _admit(self, request: ProxyRequest, directives: frozenset[bytes]) -> Ticket | None:
        log = request.log
        document = await cacheable_document(request)
        scope = "shared" if self.shared else request.counted_as
        if (
            document is None
            or not scope  # no identity to keep entries under: never risk sharing them
            or b"no-store" in directives
            or not (self.nondeterministic or deterministic(request, document))
        ):
            if log is not None:
                log.cache = "bypass"
            return HeaderTicket(BYPASS)
        oldest = max_age(request.headers)  # 0: `no-cache`, `max-age=0`
        if oldest == 0 and self.shared:
            # A fresh answer for this caller, kept for nobody: the shared entry is replaced
            # only when it expires.
            if log is not None:
                log.cache = "bypass"
            return HeaderTicket(BYPASS)
        key = await cache_key(request, document, scope)
        stream = await request.is_stream()
        wire = request.wire.name
        stored = await self.lookup(key, oldest) if oldest != 0 else None
        if stored is STALE_FOR_CALLER:
            if self.shared:  # as `no-cache` above: fresh for this caller, kept for nobody
                if log is not None:
                    log.cache = "bypass"
                return HeaderTicket(BYPASS)
            oldest = 0
        if oldest == 0:
            # The caller's own entry refreshed with the reply it gets.
            if log is not None:
                log.cache = "bypass"
            return CacheTicket(self, key, BYPASS, wire=wire, stream=stream)
        if stored is not None:
            if log is not None:
                log.cache = "hit"
                if stored.usage is not None:
                    log.saved_input_tokens = stored.usage.input_tokens
                    log.saved_output_tokens = stored.usage.output_tokens
            return CacheTicket(self, key, HIT, replay=stored, wire=wire, stream=stream)
        if log is not None:
            log.cache = "miss"
        return CacheTicket(self, key, MISS, wire=wire, stream=stream)

    async def lookup(self, key: str, oldest: int | None = None) -> StoredReply | None:
        """The stored reply under `key`; STALE_FOR_CALLER when it is older than `oldest`
        seconds (the caller's max-age)."""
        try:
            item = await self._call(self.store.get, key)
        except Exception as exc:
            self._store_failed("read", exc)
            return None
        if item is None:
            return None
        # Kept for the TTL from when it was stored: its age is the TTL less what is left.
        if (
            oldest is not None
            and item.expires_at is not None
            and self.ttl - (item.expires_at - self.clock()) > oldest
        ):
            return STALE_FOR_CALLER
        try:
            return decode(item.doc)
        except EntryUnreadable:
            return None  # replaced by the next reply

    async def keep(self, key: str, reply: StoredReply) -> None:
        doc = encode(reply)
        size = len(json.dumps(doc))
        if self.max_document is not None and size > self.max_document:
            return  # does not fit the store's item limit: not cached
        now = self.clock()
        try:
            if self.window_room is not None and not await self._room_in_window(now, size):
                return  # this window's bytes are written: not cached until the next
            await self._call(self.store.put, key, doc, expires_at=now + self.ttl)
        except Exception as exc:
            self._store_failed("write", exc)

    async def _room_in_window(self, now: float, size: int) -> bool:
        """Count `size` bytes written in the current window; whether they fit its room.
        A write refused still counts: a full window stays full (and one over its room by a
        single large reply no more than it would have been)."""
        window = int(now // self.ttl)
        counted = await self._call(
            self.store.increment,
            f"cache-bytes:{window}",
            {"bytes": size},
            expires_at=(window + 2) * self.ttl,
        )
        return bool(counted["bytes"] <= (self.window_room or 0))


class CacheTicket(ReplyTicket):
    """A hit (`replay`), or a miss or refresh that copies the reply to keep it."""

    def __init__(
        self,
        cache: ResponseCache,
        key: str,
        headers: RawHeaders,
        replay: StoredReply | None = None,
        *,
        wire: str = "openai",
        stream: bool = False,
    ) -> None:
        self.cache = cache
        self.key = key
        # What the reply must look like to be an answer (core/cache/complete.py).
        self.wire = wire
        self.stream = stream
        self.content_type = b""
        self.headers = headers
        self.replay = replay
        # A reply that may be kept is metered: its usage is stored with it, to report the
        # tokens a hit saves.
        self.needs_usage = replay is None
        self.status = 0
        self.kept: RawHeaders = []
        # None once the reply is known not to be kept: nothing more is copied.
        self.chunks: list[bytes] | None = None
        self.size = 0
        # Of the cache's room for copies in flight, what this copy holds (ResponseCache.take).
        self.held = 0

    def call_instead(self, log: RequestLog | None) -> None:
        super().call_instead(log)
        self.headers = MISS
        if log is not None:
            log.cache = "miss"
            log.saved_input_tokens = log.saved_output_tokens = None

    def start(self, status: int, headers: RawHeaders, upstream_headers: RawHeaders) -> None:
        if status != 200:
            return
        for name, value in (*headers, *upstream_headers):
            lowered = name.lower()
            if lowered == b"cache-control" and b"no-store" in value.lower():
                return
            if lowered == b"cache-control" and self.cache.shared and b"private" in value.lower():
                return  # for one user only: a shared cache must not keep it (RFC 9111 5.2.2.7)
            if lowered == b"content-encoding" and value.strip().lower() not in (b"", b"identity"):
                return  # a compressed body could reach a caller that cannot read it
        self.content_type = next((v for n, v in headers if n.lower() == b"content-type"), b"")
        self.status = status
        self.kept = kept_headers(headers)
        self.chunks = []

    def feed(self, chunk: bytes) -> None:
        chunks = self.chunks
        if chunks is None:
            return
        size = len(chunk)
        self.size += size
        if self.size > self.cache.max_body or not self.cache.take(size):
            self.drop()  # too large to keep, or no room left for copies: stop copying
            return
        self.held += size
        chunks.append(chunk)

    def drop(self) -> None:
        """Copies nothing more, and gives back the room the copy held."""
        self.chunks = None
        if self.held:
            self.cache.give_back(self.held)
            self.held = 0

    def __del__(self) -> None:
        # A request cancelled before it settled (a server shutting down) still gives its
        # room back: otherwise each such copy would shrink the room for good.
        if self.held:
            self.cache.give_back(self.held)

    async def settle(self, outcome: Outcome) -> None:
        chunks = self.chunks
        self.drop()
        if (
            chunks is None
            or self.replay is not None
            or outcome.cache_hit
            or not outcome.complete
            or outcome.upstream_status != 200
        ):
            return
        if not finished(self.wire, self.content_type, b"".join(chunks), self.stream):
            return  # unfinished, or an error with a 200: replayed, it would last the TTL
        reply = StoredReply(self.status, self.kept, chunks, outcome.usage)
        await self.cache.keep(self.key, reply)
