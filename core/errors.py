"""Errors the proxy itself produces, rendered in each client protocol's own JSON shape.

An SDK only turns a response into its usual exception with a readable message when the
body has the shape it expects, so every error the proxy makes goes through `render`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Literal

from core.types import Send, send_response

if TYPE_CHECKING:
    from core.config import Settings

ErrorShape = Literal["openai", "anthropic", "gemini"]

# Gemini (Google APIs) put a canonical status name beside the HTTP code.
_GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "INVALID_ARGUMENT",
    # A body too slow (the server's own 408): the deadline passed.
    408: "DEADLINE_EXCEEDED",
    413: "INVALID_ARGUMENT",
    431: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

# Anthropic's error `type` names for the statuses we produce.
_ANTHROPIC_TYPE = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "invalid_request_error",
    413: "request_too_large",
    431: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "api_error",
}


# The Stainless SDKs (openai, anthropic) retry 408, 409, 429 and 5xx, sleeping as long as
# Retry-After says, unless the reply carries `x-should-retry: false`. A refusal that a retry
# cannot cure within this many seconds says so, and the SDK raises at once instead of
# hanging (a budget's Retry-After runs to the window's end: hours). docs/refusals.md.
RETRY_SOON_SECONDS = 10.0


class ProxyError(Exception):
    """A failure the proxy answers itself: status, machine code and a message for people."""

    status = 500
    code = "proxy_error"
    openai_type = "server_error"
    # A transport failure that sent nothing upstream (map_transport_error): nothing ran
    # there, so nothing can have been billed.
    never_sent = False
    # Whether a client's automatic retry may cure this soon. None: by status, where only a
    # passing fault (502, 503, 504: an upstream or a store that did not answer) is retried.
    retryable: bool | None = None

    def __init__(
        self,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}
        if retryable is not None:
            self.retryable = retryable

    @property
    def should_retry(self) -> bool:
        if self.retryable is not None:
            return self.retryable
        return self.status in (502, 503, 504)


class BadRequest(ProxyError):
    """The request is malformed: bad JSON, a path that tries to climb, a bad header."""

    status = 400
    code = "bad_request"
    openai_type = "invalid_request_error"


class Unauthorized(ProxyError):
    """No credential, a blank one, or one that matches no caller."""

    status = 401
    code = "invalid_api_key"
    openai_type = "invalid_request_error"


class Forbidden(ProxyError):
    """The caller is known but not allowed to do this."""

    status = 403
    code = "forbidden"
    openai_type = "permission_error"


class CorsOriginNotAllowed(Forbidden):
    """A browser preflight from an origin not in ALLOWED_ORIGINS."""

    code = "cors_origin_not_allowed"


class NotFound(ProxyError):
    """No route on this proxy serves the path."""

    status = 404
    code = "not_found"
    openai_type = "invalid_request_error"


class MethodNotAllowed(ProxyError):
    status = 405
    code = "method_not_allowed"
    openai_type = "invalid_request_error"


class PayloadTooLarge(ProxyError):
    """The body is over MAX_BODY_BYTES."""

    status = 413
    code = "request_too_large"
    openai_type = "invalid_request_error"


class RateLimited(ProxyError):
    """A rate or token limit; retryable only when its window ends within RETRY_SOON_SECONDS
    (the raise site decides, from the wait it puts in Retry-After)."""

    status = 429
    code = "rate_limit_exceeded"
    openai_type = "rate_limit_error"
    retryable = False


class QuotaExceeded(RateLimited):
    """A spend cap (BUDGET_*) has no room for this request's worst case: it renews at the
    window's end, hours away, so no retry can cure it."""

    code = "insufficient_quota"
    openai_type = "insufficient_quota"
    retryable = False


class ServiceUnavailable(ProxyError):
    status = 503
    code = "service_unavailable"
    openai_type = "server_error"


class Misconfigured(ProxyError):
    """The deployment's settings are invalid; the message names the variable, never a value."""

    status = 500
    code = "proxy_misconfigured"
    openai_type = "server_error"


class ProxyOffline(ProxyError):
    """The operator switched the service off, or a scheduled offline window is on. Not
    retried: a page should say "switched off" now, not after two Retry-After sleeps."""

    status = 503
    code = "service_offline"
    openai_type = "server_error"
    retryable = False


class UpstreamUnreachable(ProxyError):
    """Connecting to the provider failed or the connection broke before a response."""

    status = 502
    code = "upstream_unreachable"
    openai_type = "server_error"


class UpstreamTimeout(ProxyError):
    """The provider accepted no connection, or sent no byte, within the configured time."""

    status = 504
    code = "upstream_timeout"
    openai_type = "server_error"


class NotCached(ProxyError):
    """A request that asked only for a stored reply (`Cache-Control: only-if-cached`) with
    none to give: RFC 9111's 504, nothing asked of the provider, nothing spent."""

    status = 504
    code = "not_cached"
    openai_type = "invalid_request_error"
    retryable = False  # asking again finds the same nothing


# ---- transport failures: the transports' errors in the proxy's own terms --------------


class TransportFailure(Exception):
    """An upstream request that failed in the transport: raised by the aiohttp transport,
    and by the upstream client for httpx's own errors (core/upstream/client.py). The proxy's
    code reads these two flags, not a transport's exception classes: a server then never
    imports httpx (its import and its command line's, when rich and click are installed,
    are a tenth of a server's memory at rest)."""

    def __init__(self, kind: str, *, timed_out: bool = False, never_sent: bool = False):
        # What failed, as httpx names it (ConnectError, ReadTimeout...): a low-cardinality
        # name for logs and telemetry's error.type, never a message that could hold a URL.
        super().__init__(kind)
        self.kind = kind
        # No answer in time (connect, pool or first byte): a 504, not a 502.
        self.timed_out = timed_out
        # Nothing reached the upstream (refused, unresolvable, no connection in time): the
        # request can go to another target, and nothing can have been billed.
        self.never_sent = never_sent


class InvalidUpstreamURL(TransportFailure):
    """The URL built from the configured target and the caller's path is not one."""


# ---- control flow: not answered as an error body --------------------------------------


class UpstreamStreamBroken(Exception):
    """The upstream failed after the response began; the only honest signal left is to
    abort the connection, so the client sees a truncated body instead of a clean end."""


class StreamStopped(UpstreamStreamBroken):
    """A rule that admitted the reply no longer holds while it is relayed (the kill switch,
    the caller's token revoked or expired: core/proxy/open_checks.py). The head is out, so,
    as for a broken upstream, the connection is aborted. `refusal` is the rule's own: an
    entry that holds the reply until its end (buffered Lambda) answers with it instead."""

    def __init__(self, message: str, refusal: ProxyError) -> None:
        super().__init__(message)
        self.refusal = refusal


def forget_frames(exc: BaseException) -> None:
    """Drops the tracebacks of a transport error the proxy handled, and of the errors it
    was raised from or during. A traceback holds every frame it passed through, and the
    relay's frames hold the request; the transport keeps the error too (aiohttp's body
    reader does), so the two make a reference cycle. Only the collector's full passes free
    one, and with it the request's body and state. The proxy logs such an error's type,
    never its traceback."""
    pending = [exc]
    seen: set[int] = set()
    while pending:
        error = pending.pop()
        if id(error) in seen:
            continue
        seen.add(id(error))
        error.__traceback__ = None
        pending.extend(e for e in (error.__cause__, error.__context__) if e is not None)


def map_transport_error(exc: BaseException, settings: Settings) -> ProxyError:
    """Transport failures before any response byte, as the 502/504 a caller can act on.
    `exc` is a TransportFailure, a TimeoutError, or what an httpx reply's body raised."""
    forget_frames(exc)
    if isinstance(exc, TransportFailure):
        timed_out = exc.timed_out
    else:
        # Only an httpx reply's body raises httpx's errors, so httpx is loaded already: a
        # look in sys.modules, never an import.
        httpx = sys.modules.get("httpx")
        timed_out = isinstance(exc, TimeoutError) or (
            httpx is not None and isinstance(exc, httpx.TimeoutException)
        )
    error: ProxyError
    if timed_out:
        error = UpstreamTimeout(
            "The upstream provider did not answer in time "
            f"(connect {settings.connect_timeout:g}s, first byte {settings.read_timeout:g}s)."
        )
    else:
        error = UpstreamUnreachable("The upstream provider could not be reached.")
    error.never_sent = isinstance(exc, TransportFailure) and exc.never_sent
    return error


# ---- rendering ------------------------------------------------------------------------


def error_body(error: ProxyError, shape: ErrorShape) -> bytes:
    status = error.status
    payload: dict[str, object]
    if shape == "anthropic":
        payload = {
            "type": "error",
            "error": {"type": _ANTHROPIC_TYPE.get(status, "api_error"), "message": error.message},
        }
    elif shape == "gemini":
        payload = {
            "error": {
                "code": status,
                "message": error.message,
                "status": _GOOGLE_STATUS.get(status, "UNKNOWN"),
            }
        }
    else:
        payload = {
            "error": {
                "message": error.message,
                "type": error.openai_type,
                "param": None,
                "code": error.code,
            }
        }
    return json.dumps(payload).encode()


async def send_error(
    send: Send,
    error: ProxyError,
    shape: ErrorShape,
    extra_headers: Iterable[tuple[bytes, bytes]] = (),
) -> None:
    """Answer with `error` in the caller's protocol shape."""
    status, headers, body = render(error, shape)
    headers.extend(extra_headers)
    await send_response(send, status, headers, body)


def render(error: ProxyError, shape: ErrorShape) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Status, raw ASGI headers and body for `error` in the caller's protocol shape."""
    body = error_body(error, shape)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    headers.extend((k.lower().encode(), v.encode()) for k, v in error.headers.items())
    if not error.should_retry:
        headers.append((b"x-should-retry", b"false"))
    return error.status, headers, body
