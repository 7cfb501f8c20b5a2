"""One upstream exchange: check the request, send it upstream, stream the answer back.

The request body is read whole (bounded by MAX_BODY_BYTES: LLM requests are small, and
a known length is what every provider expects); the response is never read whole, its
raw bytes go to the caller as they arrive.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

import httpx

from core.access.credentials import TokenCheck, authorize, find_credential, split_key_param
from core.config import Settings
from core.errors import (
    BadRequest,
    ErrorShape,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    ProxyError,
    UpstreamTimeout,
    UpstreamUnreachable,
    send_error,
)
from core.providers import RETRY_ON_NEXT_KEY, Provider, match_provider
from core.proxy.headers import (
    client_response_headers,
    has_header_injection,
    upstream_request_headers,
)
from core.types import Receive, RequestLog, Scope, Send
from core.upstream.client import UpstreamClient
from core.usage.interim import record_usage_on  # TEMPORARY (wt-admin)

if TYPE_CHECKING:
    from core.access.guard import Guard
    from core.access.status import ServiceStatus
    from core.usage.ledger import UsageLedger

logger = logging.getLogger("llm_proxy")

ALLOWED_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"})
ALLOW_HEADER = ", ".join(sorted(ALLOWED_METHODS)).encode()
# RFC 3986 pchar minus unreserved (always safe for `quote`): what a path keeps literally.
_PATH_SAFE = "/:@!$&'()*+,;="
# A response this small with a known length goes out in one piece.
_SMALL_BODY = 64 * 1024


class UpstreamStreamBroken(Exception):
    """The upstream failed after the response began; the only honest signal left is to
    abort the connection, so the client sees a truncated body instead of a clean end."""


@dataclass
class _Disconnect:
    happened: bool = False
    # Set before the last body message: some servers answer receive() with a disconnect
    # as soon as the response is complete, which is not the caller leaving.
    response_done: bool = False


def check_path(remainder: str) -> None:
    """Refuse paths that try to climb out of the route or smuggle separators."""
    decoded = unquote(unquote(remainder))
    if "\\" in decoded or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in decoded):
        raise BadRequest("The request path contains a forbidden character.")
    for segment in decoded.split("/"):
        # `..;x` is `..` to servlet containers (path parameters), which many gateways are.
        if segment.partition(";")[0] in (".", ".."):
            raise BadRequest("The request path may not contain '.' or '..' segments.")


def _request_log(scope: Scope) -> RequestLog | None:
    return scope.get("llm_proxy.log")  # type: ignore[return-value]


async def read_body(receive: Receive, limit: int, declared_length: int | None) -> bytes:
    if declared_length is not None and declared_length > limit:
        raise PayloadTooLarge(
            f"The request body is larger than the proxy's limit of {limit} bytes."
        )
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise BadRequest("The client disconnected while sending the body.")
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(
                    f"The request body is larger than the proxy's limit of {limit} bytes."
                )
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def check_json(body: bytes) -> None:
    try:
        json.loads(body)
    except ValueError as exc:
        # The decoder's message gives line and column, never the body itself.
        reason = str(exc).split(":", 1)[0]
        raise BadRequest(f"The request body is not valid JSON ({reason}).") from None


def map_transport_error(exc: httpx.HTTPError, settings: Settings) -> ProxyError:
    """httpx failures before any response byte, as the 502/504 a caller can act on."""
    timed_out = isinstance(exc, httpx.TimeoutException)
    if timed_out:
        return UpstreamTimeout(
            "The upstream provider did not answer in time "
            f"(connect {settings.connect_timeout:g}s, first byte {settings.read_timeout:g}s)."
        )
    return UpstreamUnreachable("The upstream provider could not be reached.")


class ProxyEndpoint:
    """The ASGI endpoint behind every provider route."""

    # TEMPORARY (wt-admin): set by ProxyApp (core/app.py); the lead's stages take them over.
    status: ServiceStatus | None = None
    ledger: UsageLedger | None = None

    def __init__(
        self,
        settings: Settings,
        providers: tuple[Provider, ...],
        client: UpstreamClient,
        token_check: TokenCheck,
        guard: Guard | None = None,
    ) -> None:
        self.settings = settings
        self.providers = providers
        self.client = client
        self.token_check = token_check
        # JWT / anonymous callers, policy and rate limits (core/access/guard.py); None when
        # none is configured, so a plain deployment pays nothing for them.
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # A ProxyError is only raised before the response starts; after it, failures
        # are UpstreamStreamBroken and abort the connection.
        shape: ErrorShape = "openai"
        try:
            raw_path = scope.get("raw_path")
            # Without raw_path (Mangum) `path` is percent-decoded: encode it again, or a
            # caller's `%3F` / `%23` would start a query or fragment on the upstream URL.
            path = raw_path.decode("latin-1") if raw_path else quote(scope["path"], _PATH_SAFE)
            matched = match_provider(self.providers, path)
            if matched is None:
                raise NotFound(
                    f"No route for {scope['path'][:200]!r} on this proxy: use /v1/... "
                    "with the base URL set to <proxy>/v1."
                )
            provider, remainder = matched
            shape = provider.error_shape
            await self._handle(scope, receive, send, provider, remainder)
        except ProxyError as error:
            log = _request_log(scope)
            if log is not None:
                log.error = error.code
            extra = [(b"allow", ALLOW_HEADER)] if isinstance(error, MethodNotAllowed) else []
            await send_error(send, error, shape, extra)

    async def _handle(
        self, scope: Scope, receive: Receive, send: Send, provider: Provider, remainder: str
    ) -> None:
        settings = self.settings
        log = _request_log(scope)
        if log is not None:
            log.route = provider.name
        method = scope["method"]
        if method not in ALLOWED_METHODS:
            raise MethodNotAllowed(f"Method {method} is not allowed on this proxy.")
        check_path(remainder)
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        if has_header_injection(headers):
            raise BadRequest("A request header contains a line break or NUL byte.")

        key_param, query = split_key_param(scope.get("query_string", b""))
        credential = find_credential(headers, key_param)
        guard = self.guard
        if guard is None:
            caller = await self.token_check.identify(credential)
        else:
            caller = await guard.identify(scope, credential)
        if log is not None:
            log.caller = caller.label
        if self.status is not None:  # TEMPORARY (wt-admin): kill switch, for the admit stage
            await self.status.check(time.time())

        declared_length: int | None = None
        is_json = False
        for name, value in headers:
            if name == b"content-length":
                try:
                    declared_length = int(value)
                except ValueError:
                    raise BadRequest("The Content-Length header is not a number.") from None
            elif name == b"content-type":
                is_json = b"json" in value.lower()
        body = await read_body(receive, settings.max_body_bytes, declared_length)
        if is_json and body:
            check_json(body)
        if caller.scoped:
            authorize(caller, provider, method, remainder, body)
        if guard is not None:
            body, send = await guard.admit(scope, caller, provider, method, remainder, body, send)

        if self.ledger is not None:  # TEMPORARY (wt-admin): until the settle stage records usage
            send = record_usage_on(send, self.ledger, caller, provider.name, body, remainder, provider.model_in_path)  # fmt: skip

        url = provider.origin + provider.base_path + remainder
        if query:
            url += "?" + query.decode("latin-1")
        key_pairs = provider.key_pairs
        key_index = provider.next_key_index() if provider.rotates else 0
        upstream_headers = upstream_request_headers(
            headers, key_pairs[key_index] if key_pairs else None
        )
        rotation = (provider, key_index) if provider.rotates else None
        await self._exchange(
            scope, receive, send, method, url, upstream_headers, body, log, rotation
        )

    async def _exchange(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        method: str,
        url: str,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        log: RequestLog | None,
        rotation: tuple[Provider, int] | None = None,
    ) -> None:
        try:
            request = self.client.build_request(method, url, headers, body)
        except httpx.InvalidURL:
            raise BadRequest("The request path is not a valid URL path.") from None

        disconnect = _Disconnect()
        main_task = asyncio.current_task()
        watcher = asyncio.ensure_future(
            self._watch_disconnect(receive, disconnect, main_task, self.settings.on_disconnect)
        )
        sent_at = time.perf_counter()
        try:
            try:
                response = await self.client.send(request)
                if rotation is not None and response.status_code in RETRY_ON_NEXT_KEY:
                    response = await self._retry_on_next_keys(
                        response, rotation, method, url, headers, body
                    )
            except httpx.HTTPError as exc:
                logger.warning("upstream request failed: %s", type(exc).__name__)
                raise map_transport_error(exc, self.settings) from None
            if log is not None:
                log.upstream_status = response.status_code
                log.upstream_ms = (time.perf_counter() - sent_at) * 1000
            try:
                await self._relay(response, send, disconnect)
            finally:
                await response.aclose()
        except asyncio.CancelledError:
            if not disconnect.happened or main_task is None:
                raise
            # The caller left: the upstream request is already cancelled, nothing to send.
            main_task.uncancel()
            if log is not None:
                log.error = "client_disconnected"
        finally:
            watcher.cancel()

    async def _retry_on_next_keys(
        self,
        response: httpx.Response,
        rotation: tuple[Provider, int],
        method: str,
        url: str,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
    ) -> httpx.Response:
        """A 429 or 5xx on one key, before any byte reached the caller, is tried once on
        each of the provider's other keys; the caller sees the last answer."""
        provider, first = rotation
        pairs = provider.key_pairs
        for step in range(1, len(pairs)):
            await response.aclose()
            # upstream_request_headers put the key header last.
            headers[-1] = pairs[(first + step) % len(pairs)]
            response = await self.client.send(self.client.build_request(method, url, headers, body))
            if response.status_code not in RETRY_ON_NEXT_KEY:
                break
        return response

    async def _relay(self, response: httpx.Response, send: Send, disconnect: _Disconnect) -> None:
        headers, length = client_response_headers(response.headers.raw)
        if length is not None and length <= _SMALL_BODY:
            try:
                body = b"".join([chunk async for chunk in response.stream])  # type: ignore[union-attr]
            except httpx.HTTPError as exc:
                raise map_transport_error(exc, self.settings) from None
            disconnect.response_done = True
            await send(
                {"type": "http.response.start", "status": response.status_code, "headers": headers}
            )
            await send({"type": "http.response.body", "body": body})
            return

        await send(
            {"type": "http.response.start", "status": response.status_code, "headers": headers}
        )
        sent = 0
        try:
            # The transport's own stream: raw bytes as they arrive, no re-chunking.
            async for chunk in response.stream:  # type: ignore[union-attr]
                if chunk and not disconnect.happened:
                    sent += len(chunk)
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except httpx.HTTPError as exc:
            logger.warning("upstream stream broke after %d bytes: %s", sent, type(exc).__name__)
            raise UpstreamStreamBroken(f"upstream stream broke after {sent} bytes") from None
        disconnect.response_done = True
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    @staticmethod
    async def _watch_disconnect(
        receive: Receive,
        disconnect: _Disconnect,
        main_task: asyncio.Task[Any] | None,
        mode: str,
    ) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                if disconnect.response_done:
                    return
                disconnect.happened = True
                # "drain" keeps reading the upstream to its end (usage figures arrive
                # last); "cancel" stops the upstream request now.
                if mode == "cancel" and main_task is not None:
                    main_task.cancel()
                return
