"""Request id, one JSON access-log line per request (no secrets in it), and the last
guard against an unexpected exception turning into a stack trace for the caller.

The line carries the path without its query string (Gemini's `?key=` lives there), the
route, statuses, timings and byte counts; never a header value.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterable
from typing import Any

from core.digest import sha256
from core.errors import ErrorShape, ProxyError, UpstreamStreamBroken, render, send_error
from core.escapes import decoded, still_escaped
from core.headers import MIN_CREDENTIAL_LENGTH
from core.providers import error_shape_for_path
from core.types import ASGIApp, Message, Receive, RequestLog, Scope, Send

access_logger = logging.getLogger("llm_proxy.access")
REQUEST_ID_HEADER = b"x-proxy-request-id"
# The server's own `send`, for the proxy's stream relay: each body message of a long stream
# skips the wrappers (this log's, CORS's), which only ever touch the response start. The
# relay counts its bytes on the log itself (RequestLog.body_sent).
BODY_SEND = "llm_proxy.body_send"
# The error shape of the provider the request was routed to (core/proxy/endpoint.py): the
# last-resort answer below speaks the caller's protocol, as every other error does.
ERROR_SHAPE = "llm_proxy.error_shape"
# The headers the CORS layer (core/proxy/cors.py) adds to this request's reply: the
# last-resort answer below is sent outside that layer and adds them itself.
CORS_HEADERS = "llm_proxy.cors_headers"
# The scope entry holding this request's RequestLog (its id, for a reply an adapter makes).
REQUEST_LOG = "llm_proxy.log"


def shape_of(scope: Scope) -> ErrorShape:
    """The error shape routing chose for this request; before routing (a fault or a
    platform's time limit that early), the shape of the route its path names."""
    return scope.get(ERROR_SHAPE) or error_shape_for_path(scope.get("path", ""))


def outside_error(error: ProxyError, scope: Scope) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """`error` as an answer made outside the app (a platform entry's own, at its time limit):
    in the shape of the route the request took, with the CORS headers the app chose for it
    (a page on an allowed origin must be able to read it) and the id of its access-log line,
    which every reply names."""
    status, headers, body = render(error, shape_of(scope))
    headers.extend(scope.get(CORS_HEADERS, ()))
    log = scope.get(REQUEST_LOG)
    if log is not None:
        headers.append((REQUEST_ID_HEADER, log.request_id.encode()))
    return status, headers, body


def configure_logging(level: int = logging.INFO) -> None:
    """Plain lines on stderr: every platform's log collector reads them as they are."""
    root = logging.getLogger("llm_proxy")
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(handler)
        root.setLevel(level)
        root.propagate = False


# Request ids come from os.urandom, read 256 ids at a time: unpredictable as before,
# without a getrandom() system call on every request.
_ID_BYTES = 8
_ids: list[str] = []
# A forked worker must not hand out the ids its parent had left in the pool.
os.register_at_fork(after_in_child=_ids.clear)


def new_request_id() -> str:
    try:
        return _ids.pop()  # atomic: adapters that run requests in threads share the pool
    except IndexError:
        pool = os.urandom(_ID_BYTES * 256)
        _ids.extend(pool[i : i + _ID_BYTES].hex() for i in range(_ID_BYTES, len(pool), _ID_BYTES))
        return pool[:_ID_BYTES].hex()


# A credential's shape: the stored tokens' prefix (core/access/tokens.py), a JWT's header
# (`{"` in base64url) and its two further parts.
_ISSUED_SHAPE = re.compile(r"llmp_[\w-]{8,}|eyJ[\w-]{8,}(?:\.[\w-]*){0,2}")
# What a credential could be glued to in a path: a segment, a path parameter, a value.
_PIECES = re.compile(r"[/;=:,&?]")


class PathForLog:
    """The path as the access log writes it, for a request whose caller was not identified.
    An identified caller's credential is known, and a path holding it is refused and logged
    redacted (core/request.py); where no route matched or no credential was found in its
    slots, nothing identified one, yet a client that put its token in its base URL
    (`/<token>/v1/...`) sent it there. So a piece of such a
    path with a credential's shape, or whose digest is a PROXY_ACCESS_TOKEN entry's or the
    admin token's, is logged as [redacted]."""

    def __init__(self, secret_digests: Iterable[bytes] = ()) -> None:
        self.secret_digests = tuple(secret_digests)

    def __call__(self, path: str) -> str:
        path = self._pieces(path)
        if "%" in path:
            # The path is decoded once: a router that decodes again (as check_path assumes
            # one may, every escape: core/escapes.py) reads `%252D` as `-`, so an escaped
            # credential is one too. Escaped, none of the path is shown, as for an
            # identified caller (core/request.py); nor is one escaped past every reader.
            plain = decoded(path)
            if self._pieces(plain) != plain or still_escaped(plain):
                return "[redacted]"
        return path

    def _pieces(self, path: str) -> str:
        path = _ISSUED_SHAPE.sub("[redacted]", path)
        if not self.secret_digests or len(path) < MIN_CREDENTIAL_LENGTH:
            return path
        for piece in set(_PIECES.split(path)):
            if len(piece) >= MIN_CREDENTIAL_LENGTH and self._is_secret(piece):
                path = path.replace(piece, "[redacted]")
        return path

    def _is_secret(self, piece: str) -> bool:
        digest = sha256(piece)
        return any(hmac.compare_digest(digest, known) for known in self.secret_digests)


class AccessLogMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        enabled: bool = True,
        proxy: Any = None,
        unrouted_path: PathForLog | None = None,
    ) -> None:
        self.app = app
        self.enabled = enabled
        # The innermost app, for adapters and tests that need its settings or pool.
        self.proxy = proxy
        self.unrouted_path = unrouted_path or PathForLog()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        log = RequestLog(request_id=new_request_id(), method=scope["method"], path=scope["path"])
        log.started = started
        scope[REQUEST_LOG] = log
        scope[BODY_SEND] = send
        request_id = log.request_id.encode()

        async def logging_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                log.status = message["status"]
                # An upstream's own x-proxy-request-id would sit beside ours (and a caller
                # or log reader could take it for ours): only ours goes out.
                headers = [
                    h for h in message.get("headers", ()) if h[0].lower() != REQUEST_ID_HEADER
                ]
                headers.append((REQUEST_ID_HEADER, request_id))
                message["headers"] = headers
            elif message["type"] == "http.response.body":
                body = message.get("body", b"")
                if body:
                    log.body_sent(len(body))
            await send(message)

        try:
            await self.app(scope, receive, logging_send)
        except Exception as exc:
            # Only the type is logged: an exception's text may quote a header or URL.
            log.error = log.error or type(exc).__name__
            if not isinstance(exc, UpstreamStreamBroken):
                # A broken or stopped stream is control flow, logged where it happened
                # (a warning, with its byte count or its rule); this line is for bugs.
                access_logger.error("unexpected error: %s", type(exc).__name__)
            if log.status is not None:
                raise  # the response began; aborting the connection is the honest signal
            error = ProxyError("The proxy failed unexpectedly; see its logs for the request id.")
            await send_error(logging_send, error, shape_of(scope), scope.get(CORS_HEADERS, ()))
        finally:
            # The server's `send` is a method of the connection's request cycle, which holds
            # this scope: left here, the two make a reference cycle that only the collector's
            # full passes free, with the whole request's state hanging from it (at 500
            # streams, a few thousand objects a second for it to find).
            scope.pop(BODY_SEND, None)
            log.total_ms = (time.perf_counter() - started) * 1000
            if self.enabled:
                access_logger.info(request_line(log, self.unrouted_path))


def request_line(log: RequestLog, unidentified: PathForLog) -> str:
    """A request's access-log line: the one place every surface that writes one (HTTP, a
    realtime WebSocket handshake) has its path read for credentials when no caller was
    identified (nothing took the caller's credential out of it: PathForLog)."""
    if log.route is None or not log.caller:
        log.path = unidentified(log.path)
    return format_line(log)


def format_line(log: RequestLog) -> str:
    fields = {
        "event": "request",
        "request_id": log.request_id,
        "method": log.method,
        "path": log.path[:512],
        "route": log.route,
        "status": log.status,
        "upstream_status": log.upstream_status,
        "upstream_ms": _ms(log.upstream_ms),
        "first_byte_ms": _ms(log.first_byte_ms),
        "total_ms": _ms(log.total_ms),
        "bytes_out": log.bytes_out,
    }
    if log.caller:
        fields["caller"] = log.caller
    if log.model:
        fields["model"] = log.model[:200]
    if log.input_tokens is not None:
        fields["input_tokens"] = log.input_tokens
        fields["output_tokens"] = log.output_tokens
    if log.cost_usd is not None:
        fields["cost_usd"] = round(log.cost_usd, 6)
    if log.cache:
        fields["cache"] = log.cache
    if log.saved_input_tokens is not None:
        fields["saved_input_tokens"] = log.saved_input_tokens
        fields["saved_output_tokens"] = log.saved_output_tokens
    if log.error:
        fields["error"] = log.error
    return json.dumps(fields, separators=(",", ":"))


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 2)
