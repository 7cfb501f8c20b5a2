"""CORS for browsers: preflights answered before auth, origins from ALLOWED_ORIGINS.

The dashboard (/admin) is never reachable cross-origin: this middleware leaves it alone.

Our own small middleware rather than Starlette's: a refused preflight gets a JSON error
like every other failure, and a request without an Origin header (every server-side SDK
call) passes straight through without a wrapped `send`.
"""

from __future__ import annotations

from core.errors import CorsOriginNotAllowed, send_error
from core.providers import error_shape_for_path
from core.proxy.access_log import CORS_HEADERS
from core.types import ASGIApp, Message, Receive, Scope, Send, send_response

ALLOWED_METHODS = b"GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS"

# Headers a browser may read from our responses: ids for support tickets and the
# rate-limit figures SDKs use to back off.
EXPOSED_HEADERS = [
    "x-proxy-request-id",
    "x-request-id",
    "request-id",
    "retry-after",
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
    "openai-processing-ms",
    # hit, miss or bypass: whether the response cache answered (core/cache).
    "x-proxy-cache",
    "retry-after-ms",
    "x-should-retry",
    # Anthropic's rate-limit figures: browsers take exact names only, no prefixes.
    *(
        f"anthropic-ratelimit-{kind}-{figure}"
        for kind in ("requests", "tokens", "input-tokens", "output-tokens")
        for figure in ("limit", "remaining", "reset")
    ),
    # Gemini's resumable uploads: the browser reads where to send the bytes, and the status.
    "x-goog-upload-url",
    "x-goog-upload-control-url",
    "x-goog-upload-status",
    "x-goog-upload-chunk-granularity",
    "x-goog-upload-size-received",
    # The model that answered, when MODEL_ROUTES / MODEL_FALLBACKS chose it.
    "x-proxy-model",
]
PREFLIGHT_MAX_AGE = b"600"


def is_admin_path(path: str) -> bool:
    """/admin and everything under it: the dashboard (core/admin)."""
    return path == "/admin" or path.startswith("/admin/")


class CORSMiddleware:
    def __init__(
        self, app: ASGIApp, allowed_origins: tuple[str, ...], exposed_headers: list[str]
    ) -> None:
        self.app = app
        self.allow_any = "*" in allowed_origins
        self.allowed = frozenset(o.encode() for o in allowed_origins if o != "*")
        self.exposed = ", ".join(exposed_headers).encode()

    def _allowed(self, origin: bytes) -> bool:
        return self.allow_any or origin in self.allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_admin_path(scope["path"]):
            # The dashboard is same-origin only, whatever ALLOWED_ORIGINS says: no
            # Access-Control-* header on its replies, no preflight answered for it.
            await self.app(scope, receive, send)
            return
        origin: bytes | None = None
        wants_preflight = False
        requested_headers = b""
        for name, value in scope["headers"]:
            if name == b"origin":
                origin = value
            elif name == b"access-control-request-method":
                wants_preflight = True
            elif name == b"access-control-request-headers":
                requested_headers = value
        if origin is None:
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS" and wants_preflight:
            await self._preflight(scope, origin, requested_headers, send)
            return

        added = [(b"vary", b"Origin")]
        if self._allowed(origin):
            added.append((b"access-control-allow-origin", b"*" if self.allow_any else origin))
            added.append((b"access-control-expose-headers", self.exposed))
        # For the access log's last-resort 500 (core/proxy/access_log.py), sent outside
        # this layer: a page must be able to read that error as any other.
        scope[CORS_HEADERS] = added

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *added]
            await send(message)

        await self.app(scope, receive, send_with_cors)

    async def _preflight(
        self, scope: Scope, origin: bytes, requested_headers: bytes, send: Send
    ) -> None:
        if not self._allowed(origin):
            refused = CorsOriginNotAllowed(
                "This origin is not allowed to call the proxy (see ALLOWED_ORIGINS)."
            )
            # Answered before routing: the shape of the protocol the path names.
            shape = error_shape_for_path(scope["path"])
            await send_error(send, refused, shape, [(b"vary", b"Origin")])
            return
        headers = [
            (b"access-control-allow-origin", b"*" if self.allow_any else origin),
            (b"access-control-allow-methods", ALLOWED_METHODS),
            (b"access-control-max-age", PREFLIGHT_MAX_AGE),
            (b"vary", b"Origin"),
            (b"content-length", b"0"),
        ]
        # The origin is the gate; once it passes, any header an SDK sends (x-stainless-*,
        # anthropic-*, x-goog-*) may come along.
        if requested_headers:
            headers.append((b"access-control-allow-headers", requested_headers))
        await send_response(send, 204, headers, b"")
