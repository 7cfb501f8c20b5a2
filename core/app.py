"""create_app(settings) -> the Starlette app every platform adapter serves.

Order of layers, outermost first: request id + access log -> CORS (a preflight is
answered here, before auth) -> routes (/health, then every provider route) -> the proxy
endpoint (auth, body limit, forward).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from core.access_log import AccessLogMiddleware, configure_logging
from core.auth import TokenCheck
from core.config import ConfigError, Settings, load_settings
from core.errors import Misconfigured, ProxyError, error_body, render
from core.forward import ProxyEndpoint
from core.providers import build_provider_table
from core.types import ASGIApp, Receive, Scope, Send
from core.upstream import UpstreamClient, choose_transport

logger = logging.getLogger("llm_proxy")

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
]


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def unexpected_error(request: Request, exc: Exception) -> Response:
    # Only the exception's type is logged: its text may quote a header or a URL.
    logger.error("unexpected error: %s", type(exc).__name__)
    error = ProxyError("The proxy failed unexpectedly; see its logs for the request id.")
    return Response(error_body(error, "openai"), status_code=500, media_type="application/json")


def create_app(settings: Settings | None = None, *, concurrent: bool = True) -> ASGIApp:
    """The proxy as an ASGI app.

    `settings` default to the environment. If the environment is invalid the result is
    still an app: it answers every request with a 500 that names the bad variables, so
    a platform shows a clear error instead of a crash loop. `concurrent` says whether
    this process serves many requests at once (a server) or one at a time (a function).
    """
    configure_logging()
    if settings is None:
        try:
            settings = load_settings()
        except ConfigError as exc:
            for problem in exc.problems:
                logger.error("config: %s", problem)
            return MisconfiguredApp(exc.problems)

    providers = build_provider_table(settings)
    client = UpstreamClient(settings, choose_transport(settings, concurrent=concurrent))
    endpoint = ProxyEndpoint(settings, providers, client, TokenCheck(settings.access_token_hashes))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        client.get()  # build the pool (and import its transport) before the first request
        yield
        await client.aclose()

    origins = list(settings.allowed_origins)
    app = Starlette(
        routes=[
            Route("/health", health, methods=["GET", "HEAD"]),
            Route("/{path:path}", endpoint),
        ],
        middleware=[
            Middleware(AccessLogMiddleware, enabled=settings.access_log),
            Middleware(
                CORSMiddleware,
                allow_origins=origins,
                # The origin is the gate; any header an SDK sends (x-stainless-*,
                # anthropic-*, x-goog-*) may come along once it passes.
                allow_headers=["*"],
                allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"],
                expose_headers=EXPOSED_HEADERS,
                max_age=600,
            ),
        ],
        exception_handlers={Exception: unexpected_error},
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.upstream = client
    return app


class MisconfiguredApp:
    """Stands in for the proxy when the settings are invalid."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        error = Misconfigured("The proxy is misconfigured: " + "; ".join(self.problems))
        status, headers, body = render(error, "openai")
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
