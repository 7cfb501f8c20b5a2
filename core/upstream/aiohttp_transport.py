"""The upstream client's transport over aiohttp's connection pool, for long-running servers.

Why not httpx-aiohttp: it hands aiohttp the URL as a string, which aiohttp re-quotes
(`?path=a%2Fb` reaches the provider as `?path=a/b`), it lets aiohttp add its own
User-Agent/Accept headers, and it maps refused connections to ConnectTimeout. This module
keeps the URL byte for byte, adds no header, keeps no cookies, and maps failures to the
proxy's own TransportFailure (core/errors.py). aiohttp does all the HTTP; this is only the
adapter to the upstream client's raw API (core/upstream/client.py). It imports no httpx:
a server that relays through aiohttp never loads it.
"""

from __future__ import annotations

import functools
import ssl
from time import monotonic as _monotonic
from typing import Any, cast

import aiohttp
import certifi
from aiohttp.client_proto import ResponseHandler
from yarl import URL

from core.errors import TransportFailure
from core.upstream.timeouts import Timeouts


def _map_error(exc: Exception) -> TransportFailure:
    # Named as httpx names the same failures: telemetry's error.type reads the same
    # whichever transport ran.
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        # No connection in time (the pool's wait or the connect): nothing was sent.
        return TransportFailure("ConnectTimeout", timed_out=True, never_sent=True)
    if isinstance(exc, TimeoutError):  # aiohttp's other timeouts (sock_read) subclass it
        return TransportFailure("ReadTimeout", timed_out=True)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return TransportFailure("ConnectError", never_sent=True)  # refused, unresolvable
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return TransportFailure("RemoteProtocolError")
    return TransportFailure("ReadError")


class _ResetAwareHandler(ResponseHandler):
    """aiohttp's connection protocol, except that a body still open when the connection
    fails ends in an error, and the read timeout costs less per chunk (below).

    aiohttp ends a close-delimited body (no Content-Length, not chunked) at connection
    loss whatever the cause, so a reset reads as a complete body. Only an orderly close
    (FIN) ends such a body; a reset means it was cut, and the kernel may even have dropped
    bytes that had arrived. httpx's own transport already reads it as an error.
    """

    # sock_read, re-armed lazily. aiohttp cancels and re-creates its read timer on every
    # chunk that arrives (a TimerHandle and two event-loop calls, about 9 us on uvloop, per
    # SSE event). Here a chunk only notes when it came; the one timer, when it fires,
    # re-arms itself for the rest of the gap if bytes came meanwhile. Same bound, same
    # error, fired at the same moment (last byte + sock_read). `time.monotonic`, not
    # `loop.time()`: uvloop's costs several times more, and only delays are handed over.
    _last_read = 0.0

    def _reschedule_timeout(self) -> None:
        timeout = self._read_timeout
        if not timeout:
            self._drop_timeout()
            return
        self._last_read = _monotonic()
        if self._read_timeout_handle is None:
            self._read_timeout_handle = self._loop.call_later(timeout, self._read_timer_fired)

    def _read_timer_fired(self) -> None:
        self._read_timeout_handle = None
        timeout = self._read_timeout
        if not timeout:
            return
        left = self._last_read + timeout - _monotonic()
        # A millisecond of slack: the loop's timers may fire that much early.
        if left > 0.001:
            self._read_timeout_handle = self._loop.call_later(left, self._read_timer_fired)
            return
        self._on_read_timeout()

    def connection_lost(self, exc: BaseException | None) -> None:
        payload = self._payload
        if exc is not None and payload is not None and not payload.is_eof():
            payload.set_exception(
                aiohttp.ClientPayloadError(f"connection lost mid-body: {type(exc).__name__}")
            )
        super().connection_lost(exc)


class _Connector(aiohttp.TCPConnector):
    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        # aiohttp builds each connection's protocol with this factory (TLS ones included).
        factory = functools.partial(_ResetAwareHandler, loop=self._loop)
        self._factory = cast("functools.partial[ResponseHandler]", factory)


# A body that breaks while the relay reads it (a reset: _ResetAwareHandler; a read timeout).
_STREAM_ERRORS: tuple[type[BaseException], ...] = (aiohttp.ClientError, TimeoutError)


class AiohttpReply:
    """An aiohttp response as core/upstream/client.py's UpstreamReply."""

    # One per stream in flight: no instance dict.
    __slots__ = ("_response", "raw_headers", "status_code", "stream", "stream_errors")

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.status_code = response.status
        self.raw_headers = list(response.raw_headers)
        # iter_any: whatever has arrived, as soon as it arrives (no fixed chunk size).
        self.stream = response.content.iter_any()
        self.stream_errors = _STREAM_ERRORS
        self._response = response

    async def aclose(self) -> None:
        # A fully read body returns the connection to the pool; a half-read one closes it.
        response = self._response
        if response.content.at_eof():
            response.release()
        else:
            response.close()


class AiohttpTransport:
    def __init__(self, *, max_connections: int, keepalive_expiry: float, timeout: Timeouts) -> None:
        self._max_connections = max_connections
        self._keepalive_expiry = keepalive_expiry
        self._timeout = aiohttp.ClientTimeout(
            total=None,  # a stream that keeps producing is never cut
            connect=timeout.pool,
            sock_connect=timeout.connect,
            sock_read=timeout.read,
        )
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = _Connector(
                limit=self._max_connections,
                keepalive_timeout=self._keepalive_expiry,
                ssl=ssl.create_default_context(cafile=certifi.where()),
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),  # one caller's cookies are not another's
                auto_decompress=False,  # bytes pass through as the provider sent them
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
                trust_env=False,
            )
        return self._session

    async def send_raw(
        self, method: str, url: str, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> AiohttpReply:
        """The proxy's own path: raw headers in, raw headers out, no httpx objects."""
        try:
            response = await self._get_session().request(
                method,
                URL(url, encoded=True),
                headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers],
                data=body or None,
                allow_redirects=False,
                timeout=self._timeout,
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _map_error(exc) from exc
        return AiohttpReply(response)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
