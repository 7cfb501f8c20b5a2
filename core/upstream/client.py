"""The shared, pooled upstream HTTP client: one per event loop, reused across requests.

Two transports under one raw API (`send`: method, URL, raw headers, body). Long-running
servers get aiohttp's: httpx's own connection pool is the throughput bottleneck under
concurrency (see docs/performance.md, Performance), and a server then never imports httpx
at all. A function instance that serves one request at a time (Lambda, Vercel) keeps
httpx's own transport and skips importing aiohttp, which costs ~200 ms of cold start.
Either way a failure is a TransportFailure (core/errors.py), never a transport's class.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import AsyncIterable
from typing import TYPE_CHECKING, Any, Protocol

from core.config import Settings
from core.errors import InvalidUpstreamURL, TransportFailure
from core.upstream.timeouts import Timeouts

if TYPE_CHECKING:
    import httpx

# Parsed upstream URLs by string: a proxy sees the same few URLs over and over, and
# parsing one costs more than half of building an httpx.Request.
_URL_CACHE_SIZE = 512
# Longer URLs are one-offs and are not kept: a caller sending distinct ~80 KB URLs (the
# HTTP server's limit) would otherwise hold 512 of them, tens of MB, in every instance.
_CACHEABLE_URL_LENGTH = 2048

# Generous pool: a proxy's concurrency is its callers', not ours to cap.
MAX_CONNECTIONS = 1000
MAX_KEEPALIVE_CONNECTIONS = 200
KEEPALIVE_EXPIRY_SECONDS = 30.0
# httpx's own bound on a URL, kept on the aiohttp path too (InvalidUpstreamURL past it).
MAX_URL_LENGTH = 65_536


def check_url(url: str) -> None:
    """What httpx refuses in a URL whose origin comes from configuration (checked at start)
    and whose path and query come from the caller: too long, or an ASCII control character.
    The aiohttp path sends the URL as given, so it is checked the same way, not parsed."""
    if len(url) > MAX_URL_LENGTH:
        raise InvalidUpstreamURL("InvalidURL")
    # str.isprintable also refuses non-ASCII spaces, which httpx quotes instead.
    if not url.isprintable() and any(c.isascii() and not c.isprintable() for c in url):
        raise InvalidUpstreamURL("InvalidURL")


def aiohttp_available() -> bool:
    return importlib.util.find_spec("aiohttp") is not None


def choose_transport(settings: Settings, *, concurrent: bool) -> str:
    if settings.transport != "auto":
        return settings.transport
    return "aiohttp" if concurrent and aiohttp_available() else "httpx"


def build_transport(settings: Settings, transport: str, timeout: Timeouts) -> Any:
    """An AiohttpTransport (it has `send_raw`) or an httpx.AsyncBaseTransport."""
    if transport == "aiohttp":
        # Heavy (~200 ms): imported only when chosen.
        from core.upstream.aiohttp_transport import AiohttpTransport

        return AiohttpTransport(
            max_connections=MAX_CONNECTIONS,
            keepalive_expiry=KEEPALIVE_EXPIRY_SECONDS,
            timeout=timeout,
        )
    import httpx

    limits = httpx.Limits(
        max_connections=MAX_CONNECTIONS,
        max_keepalive_connections=MAX_KEEPALIVE_CONNECTIONS,
        keepalive_expiry=KEEPALIVE_EXPIRY_SECONDS,
    )
    return httpx.AsyncHTTPTransport(limits=limits, trust_env=False)


def httpx_failure(exc: httpx.HTTPError | httpx.InvalidURL) -> TransportFailure:
    """httpx's error before a response, in the proxy's terms (httpx is loaded: it raised)."""
    import httpx

    kind = type(exc).__name__
    if isinstance(exc, httpx.InvalidURL):
        return InvalidUpstreamURL(kind)
    never_sent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
    return TransportFailure(
        kind, timed_out=isinstance(exc, httpx.TimeoutException), never_sent=never_sent
    )


class UpstreamReply(Protocol):
    """An upstream response as the relay needs it: status, raw headers, the body as it
    arrives (failures raise one of `stream_errors`), and a way to close it."""

    status_code: int
    raw_headers: list[tuple[bytes, bytes]]
    stream: AsyncIterable[bytes]
    # What reading `stream` raises when the body breaks: the transport's own errors, so
    # the relay reads the transport's stream with no adapter in between (one async
    # generator less per relayed event).
    stream_errors: tuple[type[BaseException], ...]

    async def aclose(self) -> None: ...


class HttpxReply:
    """An httpx.Response seen as an UpstreamReply (functions use httpx's own transport)."""

    def __init__(self, response: httpx.Response) -> None:
        import httpx

        self.status_code = response.status_code
        self.raw_headers = response.headers.raw
        self.stream: AsyncIterable[bytes] = response.stream  # type: ignore[assignment]
        self.stream_errors: tuple[type[BaseException], ...] = (httpx.HTTPError,)
        self.aclose = response.aclose


class UpstreamClient:
    """Sends requests through one pooled transport per event loop.

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
        # The transport's package is loaded when the app is built, not with the pool: a
        # package without it then fails its start (Lambda's Runtime.InitError; a server
        # stops before it listens), not its first caller's request. (uvicorn's lifespan
        # in `auto` mode takes a start-up error for an app without lifespan, and serves on.)
        if transport == "httpx":
            import httpx  # noqa: F401
        else:
            import core.upstream.aiohttp_transport  # noqa: F401
        self._timeouts = Timeouts(
            connect=settings.connect_timeout,
            # Bounds the first byte and each gap between bytes; no total timeout.
            read=settings.read_timeout,
            pool=settings.connect_timeout,
        )
        # As httpx's request extension reads them.
        self._timeout = {
            "connect": settings.connect_timeout,
            "read": settings.read_timeout,
            "write": settings.read_timeout,
            "pool": settings.connect_timeout,
        }
        self._pool: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._urls: dict[str, httpx.URL] = {}

    def warm(self) -> None:
        """Build the pool (and import its transport) now rather than on the first request."""
        self._get_pool()

    def _get_pool(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._pool is None or self._loop is not loop:
            self._pool = build_transport(self._settings, self.transport, self._timeouts)
            self._loop = loop
        return self._pool

    def _parsed(self, url: str) -> httpx.URL:
        """The URL checked and parsed (httpx.InvalidURL if it is not one), cached."""
        parsed = self._urls.get(url)
        if parsed is None:
            import httpx

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
        pool = self._get_pool()
        send_raw = getattr(pool, "send_raw", None)
        if send_raw is not None:
            check_url(url)
            reply: UpstreamReply = await send_raw(method, url, headers, body)
            return reply
        import httpx

        try:
            request = httpx.Request(
                method,
                self._parsed(url),
                headers=headers,
                content=body,
                extensions={"timeout": self._timeout},
            )
            return HttpxReply(await pool.handle_async_request(request))
        except (httpx.HTTPError, httpx.InvalidURL) as exc:  # InvalidURL is no HTTPError
            raise httpx_failure(exc) from exc

    async def aclose(self) -> None:
        if self._pool is not None and self._loop is asyncio.get_running_loop():
            await self._pool.aclose()
        self._pool = None
        self._loop = None
