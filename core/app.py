"""create_app(settings) -> the ASGI app every platform adapter serves.

Layers, outermost first: request id + access log + last-resort error guard -> CORS (a
preflight is answered here, before auth; never for /admin) -> routes (/health, /admin when
ADMIN_TOKEN is set, then every provider route) -> the proxy endpoint (auth, body limit,
forward).

The stack is plain ASGI rather than a `Starlette` application: Starlette's router and its
two exception middlewares (each wrapping `send`) cost about a tenth of the proxy's CPU per
request, and the proxy has exactly two routes.
"""

from __future__ import annotations

import json
import logging
import re
from typing import TYPE_CHECKING, cast

from core import __version__, access, cache, realtime, usage
from core.access.credentials import token_check_from_settings
from core.config import ConfigError, Settings, hash_token, load_settings
from core.errors import Misconfigured, send_error
from core.providers import CATALOGUE_BY_PREFIX, error_shape_for_path
from core.proxy.access_log import AccessLogMiddleware, PathForLog, access_logger
from core.proxy.cors import EXPOSED_HEADERS, CORSMiddleware, is_admin_path
from core.proxy.endpoint import ProxyEndpoint
from core.proxy.pipeline import build_pipeline
from core.proxy.scrub import Scrubber
from core.stages import Deployment, Feature
from core.stores import StoreSet, StoreUnopenable
from core.telemetry import build_telemetry
from core.types import ASGIApp, Receive, Scope, Send, send_response
from core.upstream.client import UpstreamClient, choose_transport

if TYPE_CHECKING:
    from core.access.status import ServiceStatus
    from core.usage.ledger import UsageLedger

logger = logging.getLogger("llm_proxy")


# Each feature's part of the stages (core/stages.py `Contribution`), built in its own
# package, in stage order: within each list of checks (head, body), a feature's checks run
# after those of the features above it. Account routes are refused on the head, before any
# rule counts the request or reads its body. Ephemeral keys come before the limits and the
# budget, which keep the charge their ticket sets; the token limit reserves in the request
# limit's counter; the cache comes last, so a hit has passed every rule and still counts as
# a request. Settlers run in this order too, and telemetry after them all.
FEATURES: tuple[Feature, ...] = (
    access.kill_switch,
    access.account_routes,
    access.token_scopes,
    realtime.ephemeral_keys,
    usage.meterable_routes_only,
    access.request_policy,
    access.request_limits,
    usage.token_limits,
    usage.budgets,
    usage.announce_limits,
    cache.response_cache,
    usage.record_usage,
)

# The version tells an operator which release answers; nothing about the configuration.
HEALTH_BODY = b'{"status":"ok","version":"' + __version__.encode() + b'"}'
# Where a caller reads its own usage and remaining budget with its usual credential.
USAGE_PATH = "/proxy/usage"


async def health(send: Send) -> None:
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(HEALTH_BODY)).encode()),
        (b"cache-control", b"no-store"),
    ]
    await send_response(send, 200, headers, HEALTH_BODY)


class ProxyApp:
    """Routes /health and every provider path; runs the lifespan of the upstream pool."""

    def __init__(self, settings: Settings, *, concurrent: bool = True) -> None:
        self.settings = settings
        self.upstream = UpstreamClient(settings, choose_transport(settings, concurrent=concurrent))
        # One client per store URL, shared by the token check, the limits and budgets, the
        # kill switch, the ledger and the dashboard (a memory:// store is only shared at
        # all this way).
        self.stores = StoreSet()
        deployment = Deployment(settings, self.stores)
        self.token_store = deployment.token_store
        token_check = token_check_from_settings(settings, self.token_store)
        self.providers = settings.providers()
        router = None
        if settings.routing.on:  # MODEL_ROUTES, MODEL_FALLBACKS
            from core.proxy.model_routes import build_model_router

            self.providers, router = build_model_router(settings, self.providers, self.upstream)
        # The kill switch exists where someone can throw it, the ledger where someone can
        # read it (the dashboard, a shared store); each loads only then (cold start).
        self.status: ServiceStatus | None = access.service_status(deployment)
        self.ledger: UsageLedger | None = usage.usage_ledger(deployment)
        scrubber = Scrubber(
            (key for provider in self.providers for key in provider.api_keys),
            upstreams=(
                origin for provider in self.providers for origin in provider.targets.origins
            ),
        )
        # Traces, metrics and the request log (core/telemetry): None when none is on.
        self.telemetry, otel = build_telemetry(self.ledger, scrubber.keys, concurrent=concurrent)
        pipeline = build_pipeline(
            deployment,
            FEATURES,
            token_check,
            status=self.status,
            telemetry=self.telemetry,
            telemetry_meters=self.telemetry is not None and self.telemetry.meters,
        )
        # What the usage report reads: the budget the stages charge.
        self.budget = usage.spending_budget(deployment)
        client = self.upstream
        if self.telemetry is not None and self.telemetry.spans:
            from core.telemetry.hub import AttemptRecorder

            # The client's face, each `send` an attempt (core/telemetry/hub.py): what
            # OpenTelemetry's spans read (an attempt's server, status and times, and the
            # traceparent it sends); no other sink reads attempts.
            client = cast("UpstreamClient", AttemptRecorder(client, self.telemetry, otel))
        # Gemini's resumable uploads, where a Gemini route is on (loaded only then).
        uploads = None
        if any(provider.resumable_uploads for provider in self.providers):
            from core.proxy.uploads import UploadSessions

            uploads = UploadSessions(self.token_store, token_check)
        self.endpoint = ProxyEndpoint(settings, self.providers, client, pipeline, scrubber, uploads)
        self.endpoint.model_router = router
        if otel is not None:
            from core.telemetry.reply import reply_facts_tap

            # gen_ai.response.model and finish reasons, read from the relayed reply.
            self.endpoint.reply_reader = reply_facts_tap
        # The access log's reading of a path no caller was identified by (HTTP and
        # WebSocket alike): PROXY_ACCESS_TOKEN's entries and the admin token, by digest.
        secrets = settings.access_token_hashes
        if settings.admin_token:
            secrets = (*secrets, hash_token(settings.admin_token))
        self.path_for_log = PathForLog(secrets)
        # WebSocket sessions (OpenAI Realtime, Gemini Live) through the same stages; only a
        # server (uvicorn) ever delivers one, so it is built on the first.
        self._realtime: ASGIApp | None = None
        # The dashboard, built on its first request (cold starts do not pay for it).
        self._admin: ASGIApp | None = None

    def realtime(self) -> ASGIApp:
        if self._realtime is None:
            from core.realtime.session import RealtimeEndpoint
            from core.realtime.stages import EndpointStages

            realtime = RealtimeEndpoint(self.settings, EndpointStages(self.endpoint))
            realtime.path_for_log = self.path_for_log
            if self.endpoint.reply_reader is not None:  # OpenTelemetry is on
                from core.telemetry.reply import session_facts

                realtime.frame_reader = session_facts
            self._realtime = realtime
        return self._realtime

    def admin(self) -> ASGIApp:
        if self._admin is None:
            from core.admin.app import AdminParts, build_admin_app

            # ADMIN_TOKEN is set, so the kill switch and the ledger exist (see __init__).
            assert self.status is not None and self.ledger is not None
            parts = AdminParts(
                admin_token=self.settings.admin_token,
                client_ip_source=self.settings.guard.client_ip_source,
                token_store=self.token_store,
                failure_store=self.token_store or self.stores.open("memory://"),
                ledger=self.ledger,
                status=self.status,
                providers=self.providers,
            )
            self._admin = build_admin_app(parts)
        return self._admin

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            path = scope["path"]
            if path == "/health" and scope["method"] in ("GET", "HEAD"):
                await health(send)
            elif path == USAGE_PATH:
                await self.endpoint.usage_report(scope, receive, send, self.budget)
            elif self.settings.admin_token and is_admin_path(path):
                await self.admin()(scope, receive, send)
            else:
                await self.endpoint(scope, receive, send)
        elif kind == "websocket":
            await self.realtime()(scope, receive, send)
        elif kind == "lifespan":
            await self.lifespan(receive, send)

    async def lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                # Build the pool (and import its transport) before the first request.
                self.upstream.warm()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.upstream.aclose()
                if self.telemetry is not None:
                    await self.telemetry.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


def create_app(settings: Settings | None = None, *, concurrent: bool = True) -> ASGIApp:
    """The proxy as an ASGI app.

    `settings` default to the environment. If the environment is invalid the result is
    still an app: it answers every request with a 500 that names the bad variables, so
    a platform shows a clear error instead of a crash loop. `concurrent` says whether
    this process serves many requests at once (a server) or one at a time (a function).
    """
    if settings is None:
        try:
            settings = load_settings()
        except ConfigError as exc:
            for problem in exc.problems:
                logger.error("config: %s", problem)
            return MisconfiguredApp(exc.problems)

    try:
        proxy = ProxyApp(settings, concurrent=concurrent)
    except StoreUnopenable as exc:
        problem = f"{_store_variable(settings, exc.url)} could not be opened ({exc.reason})"
        logger.error("config: %s", problem)
        return MisconfiguredApp([problem])
    if settings.access_log:
        # One line per process start (a cold start, on functions): which release, which routes.
        # Names, and the prefixes a base URL takes (two routes may share a provider's name:
        # Gemini's own and its OpenAI-compatible surface).
        routes = [provider.name for provider in proxy.providers]
        prefixes = [provider.prefix for provider in proxy.providers]
        access_logger.info(
            json.dumps(
                {"event": "start", "version": __version__, "routes": routes, "prefixes": prefixes}
            )
        )
    app: ASGIApp = CORSMiddleware(proxy, settings.allowed_origins, EXPOSED_HEADERS)
    if proxy.telemetry is not None:
        from core.telemetry.hub import TelemetryMiddleware

        app = TelemetryMiddleware(app, proxy.telemetry)
    return AccessLogMiddleware(
        app, enabled=settings.access_log, proxy=proxy, unrouted_path=proxy.path_for_log
    )


def _store_variable(settings: Settings, url: str) -> str:
    """The variable that names the store at `url`. The token store opens first, and
    LIMIT_STORE defaults to it, so a shared URL is TOKEN_STORE's."""
    return "TOKEN_STORE" if url == settings.token_store else "LIMIT_STORE"


# A word shaped like an environment variable's name, in a problem's text.
_VARIABLE_NAME = re.compile(r"\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b")


def public_variables(problems: list[str]) -> list[str]:
    """The variables `problems` are about, each once, in order: the proxy's own names only.

    A problem's text is for the operator (the log, `llm-proxy check`) and may quote what it
    refuses: a value (a key pasted into the wrong variable), a secret's ARN or an SSM
    parameter's path (the AWS account and region), a store's URL. Only names from the
    configuration reference reach a caller, so no such text can, however it is worded."""
    from core.settings_reference import documented_variables

    known = documented_variables()
    named: list[str] = []
    for problem in problems:
        for name in _VARIABLE_NAME.findall(problem):
            if name in known and name not in named:
                named.append(name)
    return named


class MisconfiguredApp:
    """Stands in for the proxy when the settings are invalid."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        # Every caller, signed in or not, gets this reply: it names the variables to fix
        # and no more (public_variables); the log has each problem in full.
        names = public_variables(problems)
        checks = f"check {', '.join(names)}; " if names else ""
        self.public_message = f"The proxy is misconfigured: {checks}its log says why."

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] == "websocket":
            from core.proxy.websocket import refuse_websocket

            await refuse_websocket(scope, receive, send, CATALOGUE_BY_PREFIX)
            return
        if scope["type"] != "http":
            return
        error = Misconfigured(self.public_message)
        # No route is switched on, yet the path names the caller's protocol all the same.
        await send_error(send, error, error_shape_for_path(scope.get("path", "")))
