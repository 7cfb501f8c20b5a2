"""Replies the server makes itself, before (or instead of) the app: a request head too
large or too slow, a body too slow, a request that is not HTTP, a connection past
MAX_CONNECTIONS. JSON, like every other error the proxy gives. Used by the bounded server
protocols (core/server/bounds.py)."""

from __future__ import annotations

from collections.abc import Iterable

from core.errors import ErrorShape, ProxyError, error_body, render
from core.types import Receive, Scope, Send, send_response


class ServerRefusal(ProxyError):
    """A refusal the server writes itself (core/server/bounds.py): its status set per reply."""

    openai_type = "invalid_request_error"
    code = "bad_request"


_REFUSAL_CODES = {408: "request_timeout", 431: "request_too_large", 503: "server_overloaded"}
# Worth a client's retry: a head or body too slow (the SDKs retry a 408 anyway), and a
# connection past MAX_CONNECTIONS (a passing fault, as the app's own 503 for it says).
_RETRYABLE = frozenset({408, 503})


def plain_error(
    status: int,
    reason: str,
    message: str,
    headers: Iterable[tuple[bytes, bytes]] = (),
    shape: ErrorShape = "openai",
) -> bytes:
    """A whole HTTP/1.1 reply written straight to the socket (no app); `headers` added to its
    head (the CORS layer's, for a request the app had begun). In `shape`, the route's when
    its head was in (a body too slow or not valid HTTP), else OpenAI's (no route known):
    the body is the one every other error of that shape has (core/errors.py)."""
    refusal = ServerRefusal(message, retryable=status in _RETRYABLE)
    refusal.status = status
    refusal.code = _REFUSAL_CODES.get(status, "bad_request")
    if status >= 500:
        refusal.openai_type = "server_error"
    body = error_body(refusal, shape)
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n"
    ).encode()
    if not refusal.should_retry:
        # As every refusal the app makes says (core/errors.py render): no client retries it.
        headers = [*headers, (b"x-should-retry", b"false")]
    extra = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
    return head + extra + b"\r\n" + body


HEAD_TOO_LARGE = 431, "Request Header Fields Too Large"
REQUEST_TIMEOUT = 408, "Request Timeout"  # a head or a body too slow
HEAD_TIMEOUT = REQUEST_TIMEOUT


def error_shape_for_path(path: str) -> ErrorShape:
    """The error shape of the route `path` would take (OpenAI's when none)."""
    from core.providers import error_shape_for_path

    return error_shape_for_path(path)


class ServerOverloaded(ProxyError):
    """This process has MAX_CONNECTIONS open connections already."""

    status = 503
    code = "server_overloaded"


async def overloaded(scope: Scope, receive: Receive, send: Send) -> None:
    """The reply on a connection past MAX_CONNECTIONS: 503 in the route's shape, then close."""
    error = ServerOverloaded("The proxy has too many open connections; try again shortly.")
    status, headers, body = render(error, error_shape_for_path(scope.get("path", "")))
    headers += [(b"retry-after", b"1"), (b"connection", b"close")]
    await send_response(send, status, headers, body)


OVERLOADED = 503, "Service Unavailable"
OVERLOADED_MESSAGE = "The proxy has too many open connections; try again shortly."
NOT_HTTP = 400, "Bad Request", "The request is not valid HTTP/1.1."
HEAD_TOO_LARGE_MESSAGE = "The request head is larger than the proxy allows."
HEAD_TIMEOUT_MESSAGE = "The request head did not arrive in time."
BODY_TIMEOUT_MESSAGE = "The request body did not arrive in time."
