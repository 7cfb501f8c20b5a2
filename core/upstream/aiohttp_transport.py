"""httpx's transport API over aiohttp's connection pool, for long-running servers.

Why not httpx-aiohttp: it hands aiohttp the URL as a string, which aiohttp re-quotes
(`?path=a%2Fb` reaches the provider as `?path=a/b`), it lets aiohttp add its own
User-Agent/Accept headers, and it maps refused connections to ConnectTimeout. This module
keeps the URL byte for byte, adds no header, keeps no cookies, and maps failures to the
httpx exceptions that mean the same thing. aiohttp does all the HTTP; this is only the
adapter between the two APIs.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator

import aiohttp
import certifi
import httpx
from yarl import URL


def _map_error(exc: Exception) -> httpx.TransportError:
    message = type(exc).__name__
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(message)
    if isinstance(exc, TimeoutError):  # aiohttp's other timeouts (sock_read) subclass it
        return httpx.ReadTimeout(message)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError(message)
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return httpx.RemoteProtocolError(message)
    return httpx.ReadError(message)


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            # iter_any: whatever has arrived, as soon as it arrives (no fixed chunk size).
            async for chunk in self._response.content.iter_any():
                yield chunk
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _map_error(exc) from exc

    async def aclose(self) -> None:
        # A fully read body returns the connection to the pool; a half-read one closes it.
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()


class AiohttpReply:
    """An aiohttp response as core/upstream/client.py's UpstreamReply."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.status_code = response.status
        self.raw_headers = list(response.raw_headers)
        self.stream = _ResponseStream(response)
        self.aclose = self.stream.aclose


class AiohttpTransport(httpx.AsyncBaseTransport):
    def __init__(
        self, *, max_connections: int, keepalive_expiry: float, timeout: httpx.Timeout
    ) -> None:
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
            connector = aiohttp.TCPConnector(
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

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw]
        try:
            response = await self._get_session().request(
                request.method,
                URL(str(request.url), encoded=True),
                headers=headers,
                data=request.content or None,
                allow_redirects=False,
                timeout=self._timeout,
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _map_error(exc) from exc
        extensions: dict[str, object] = {"http_version": b"HTTP/1.1"}
        if response.reason:
            extensions["reason_phrase"] = response.reason.encode()
        return httpx.Response(
            status_code=response.status,
            headers=list(response.raw_headers),
            stream=_ResponseStream(response),
            request=request,
            extensions=extensions,
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
