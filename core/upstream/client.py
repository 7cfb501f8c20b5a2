"""The shared, pooled upstream HTTP client: one per event loop, reused across requests.

httpx is the API the code uses. Under it, long-running servers get aiohttp's transport:
httpx's own connection pool is the throughput bottleneck under concurrency (see docs/performance.md,
Performance). A function instance that serves one request at a time (Lambda, Vercel)
keeps httpx's own transport and skips importing aiohttp, which costs ~200 ms of cold start.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import AsyncIterable
from typing import Protocol

import httpx

from core.config import Settings

# Parsed upstream URLs by string: a proxy sees the same few URLs over and over, and
# parsing one costs more than half of building an httpx.Request.
_URL_CACHE_SIZE = 512
# Longer URLs are one-offs and are not kept: a caller sending distinct ~80 KB URLs (the
# HTTP server's limit) would otherwise hold 512 of them, tens of MB, in every instance.
_CACHEABLE_URL_LENGTH = 2048

# Generous pool: a proxy's concurrency is its callers', not ours to cap.
_LIMITS = httpx.Limits(max_connections=1000, max_keepalive_connections=200, keepalive_expiry=30)


def aiohttp_available() -> bool:
    return importlib.util.find_spec("aiohttp") is not None


def choose_transport(settings: Settings, *, concurrent: bool) -> str:
    if settings.transport != "auto":
        return settings.transport
    return "aiohttp" if concurrent and aiohttp_available() else "httpx"


def build_transport(
    settings: Settings, transport: str, timeout: httpx.Timeout
) -> httpx.AsyncBaseTransport:
    if transport == "aiohttp":
        # Heavy (~200 ms): imported only when chosen.
        from core.upstream.aiohttp_transport import AiohttpTransport

        return AiohttpTransport(
            max_connections=_LIMITS.max_connections or 1000,
            keepalive_expiry=_LIMITS.keepalive_expiry or 30,
            timeout=timeout,
        )
    return httpx.AsyncHTTPTransport(limits=_LIMITS, trust_env=False)


class UpstreamReply(Protocol):
    """An upstream response as the relay needs it: status, raw headers, the body as it
    arrives (failures raise httpx.TransportError subclasses), and a way to close it."""

    status_code: int
    raw_headers: list[tuple[bytes, bytes]]
    stream: AsyncIterable[bytes]
    # What reading `stream` raises when the body breaks, besides httpx.HTTPError: the
    # transport's own errors, so the relay reads the transport's stream with no adapter
    # in between (one async generator less per relayed event).
    stream_errors: tuple[type[BaseException], ...]

    async def aclose(self) -> None: ...


class HttpxReply:
    """An httpx.Response seen as an UpstreamReply (functions use httpx's own transport)."""

    def __init__(self, response: httpx.Response) -> None:
        self.status_code = response.status_code
        self.raw_headers = response.headers.raw
        self.stream: AsyncIterable[bytes] = response.stream  # type: ignore[assignment]
        self.stream_errors: tuple[type[BaseException], ...] = (httpx.HTTPError,)
        self.aclose = response.aclose


class UpstreamClient:
    """Sends httpx Requests through one pooled transport per event loop.

    The proxy talks to httpx's transport API directly rather than through
    `httpx.AsyncClient`: a client would keep a cookie jar shared by every caller (an
    upstream's Set-Cookie must not ride along on someone else's request), add default
    headers the caller did not send, and spend a quarter of the proxy's CPU time on
    auth, redirect and cookie bookkeeping the proxy never wants.

    Some platforms run each invocation on a fresh event loop; a pool bound to a closed
    loop would fail, so a new loop gets a new transport and the old one is dropped.
    """

    def __init__(self, settings: Settings, transport: str) -> None:
        self._settings = settings
        self.transport = transport
        self._timeouts = httpx.Timeout(
            connect=settings.connect_timeout,
            # Bounds the first byte and each gap between bytes; no total timeout.
            read=settings.read_timeout,
            write=settings.read_timeout,
            pool=settings.connect_timeout,
        )
        self._timeout = self._timeouts.as_dict()
        self._pool: httpx.AsyncBaseTransport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._urls: dict[str, httpx.URL] = {}

    def warm(self) -> None:
        """Build the pool (and import its transport) now rather than on the first request."""
        self._get_pool()

    def _get_pool(self) -> httpx.AsyncBaseTransport:
        loop = asyncio.get_running_loop()
        if self._pool is None or self._loop is not loop:
            self._pool = build_transport(self._settings, self.transport, self._timeouts)
            self._loop = loop
        return self._pool

    def _parsed(self, url: str) -> httpx.URL:
        """The URL checked and parsed (httpx.InvalidURL if it is not one), cached."""
        parsed = self._urls.get(url)
        if parsed is None:
            parsed = httpx.URL(url)
            if len(url) <= _CACHEABLE_URL_LENGTH:
                if len(self._urls) >= _URL_CACHE_SIZE:
                    self._urls.clear()
                self._urls[url] = parsed
        return parsed

    async def send(
        self, method: str, url: str, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> UpstreamReply:
        """Send without following redirects; the response body is left to stream.

        The aiohttp transport takes the raw request directly: building an httpx.Request
        and Response around it cost more than half of the proxy's own time per request
        (in-process profile, docs/performance.md)."""
        parsed = self._parsed(url)
        pool = self._get_pool()
        send_raw = getattr(pool, "send_raw", None)
        if send_raw is not None:
            reply: UpstreamReply = await send_raw(method, url, headers, body)
            return reply
        request = httpx.Request(
            method, parsed, headers=headers, content=body, extensions={"timeout": self._timeout}
        )
        return HttpxReply(await pool.handle_async_request(request))

    async def aclose(self) -> None:
        if self._pool is not None and self._loop is asyncio.get_running_loop():
            await self._pool.aclose()
        self._pool = None
        self._loop = None
