"""MODEL_ROUTES: one base URL for every model. An OpenAI-format request on the default route
(`/v1/chat/completions`, `/v1/embeddings`) whose JSON `model` matches a route's pattern goes
to that provider's OpenAI-compatible surface (core/providers.py, `OpenAISurface`) with that
provider's key, in the header that surface expects.

The switch happens once the body is read and before the checks on the body, by replacing
the request's provider record: from there on every stage sees the provider that serves
(scopes, policy, limits, budgets and prices, the meter, the cache key, the ledger, the
access log), with no stage knowing routing exists. A request whose model no route claims
stays on the default route, as without MODEL_ROUTES.

`GET /v1/models` answers with the union of what the routes serve (core/proxy/model_list.py).
"""

from __future__ import annotations

import fnmatch
from typing import TYPE_CHECKING

from core.errors import BadRequest, NotFound
from core.protocols import OpenAIWire, decoded_path
from core.providers import Provider
from core.proxy.fallbacks import MODEL_HEADER, ModelTicket  # noqa: F401 (re-exported)
from core.records import replace
from core.routing import RoutingSettings, parse_routing_settings  # noqa: F401 (re-exported)
from core.usage.caps import UnmeteredRouteRefused

if TYPE_CHECKING:
    from core.config import Settings
    from core.proxy.scrub import Scrubber
    from core.request import ProxyRequest
    from core.stages import Ticket
    from core.types import Send
    from core.upstream.client import UpstreamClient

# The requests a route may take: OpenAI's own, on the default route.
ROUTED_PATHS = frozenset({"/chat/completions", "/embeddings"})


class _NoStreamUsageWire(OpenAIWire):
    """OpenAI's protocol on a surface that cannot report a stream's usage: the proxy does
    not ask it to (the option would be refused or ignored)."""

    def stream_needs_usage_request(self, route: object, document: object) -> bool:
        return False


_NO_STREAM_USAGE = _NoStreamUsageWire()


def surface_record(record: Provider) -> Provider:
    """`record` as its OpenAI-compatible surface: the default route's prefix, OpenAI's
    protocol and error shape, each upstream target with the surface's path, the key in the
    surface's header. The name stays: scopes, prices, budgets and the ledger see it."""
    surface = record.openai_surface
    assert surface is not None
    urls = [url + surface.path for url in record.targets.urls]
    routed = replace(
        record,
        prefix="/v1",
        upstream=urls[0],
        more_upstreams=tuple(urls[1:]),
        key_header=surface.key_header,
        key_template=surface.key_template,
        error_shape="openai",
        model_in_path="",
    )
    if not surface.stream_usage:
        routed.__dict__["wire"] = _NO_STREAM_USAGE  # the cached_property's slot
    return routed


class ModelRouter:
    """Chooses, by model name, which provider serves an OpenAI request on the default route."""

    def __init__(
        self,
        settings: RoutingSettings,
        providers: tuple[Provider, ...],
        client: UpstreamClient,
        *,
        caps_on: bool = False,
        list_timeout: float = 30.0,
        allowed_models: tuple[str, ...] = (),
    ) -> None:
        # One surface record per provider: its key and target rotation is shared by its routes.
        surfaces = {
            record.name: surface_record(record)
            for record in reversed(providers)
            if record.openai_surface is not None
        }
        self.routes = [
            (pattern, surfaces[name]) for pattern, name in settings.routes if name in surfaces
        ]
        self.default = next((p for p in providers if p.name == "default"), None)
        self.client = client
        self.caps_on = caps_on
        self.timeout = list_timeout
        # ALLOWED_MODELS: the model list names only what it lets through.
        self.allowed_models = allowed_models
        self.fallbacks = None
        if settings.fallbacks:
            from core.proxy.fallbacks import ModelFallbacks

            self.fallbacks = ModelFallbacks(settings.fallbacks, self)

    def serving(self, model: str) -> Provider | None:
        """The record that serves `model`: the first route whose pattern matches, else the
        default route (None when it has no upstream)."""
        for pattern, record in self.routes:
            if fnmatch.fnmatchcase(model, pattern):
                return record
        default = self.default
        return default if default is not None and default.upstream else None

    async def route(
        self, request: ProxyRequest, tickets: list[Ticket], send: Send, scrubber: Scrubber
    ) -> bool:
        """Point a default-route request at the provider its model names. True when the
        request was answered here (the model list, scrubbed as a relayed reply would be)."""
        if request.provider is not self.default:
            return False
        path = request.path
        if path == "/models" and request.method in ("GET", "HEAD") and self.routes:
            from core.proxy.model_list import send_model_list

            await send_model_list(self, request, send, scrubber)
            return True
        if path.startswith("/models/") and request.method in ("GET", "HEAD"):
            # One model of the list: a routed one is its provider's, not the default's. Its
            # id as sent, decoded (`path` is in lower case, for matching routes): ids and
            # route patterns keep their case (`meta-llama/Llama-3.3-70B`, `Qwen/*`).
            named = decoded_path(request.remainder).split("/", 2)[2].removeprefix("models/")
            record = self.serving(named) if named else None
            if record is not None and record is not self.default:
                from core.proxy.model_list import send_model

                await send_model(self, request, send, scrubber, named, record)
                return True
        if request.method != "POST" or path not in ROUTED_PATHS:
            if self.default is not None and not self.default.upstream:
                raise NotFound(
                    f"This proxy routes by model only POST /v1/chat/completions and "
                    f"/v1/embeddings (and lists GET /v1/models), not {request.remainder[:100]!r}."
                )
            return False
        model = await request.model()
        if model is None:
            if self.default is not None and not self.default.upstream:
                # No upstream to answer in its own words: the stand-in default route
                # would fail as an unreachable upstream (a 502 the SDKs retry).
                raise BadRequest(
                    "This proxy routes by model, and the request names no model (the body's "
                    '"model" must be a string).'
                )
            return False  # the upstream answers a request with no model in its own words
        await self.reroute(request, model)
        tickets.append(ModelTicket(model))
        return False

    async def reroute(self, request: ProxyRequest, model: str) -> None:
        """Point `request` at the record serving `model`: BadRequest/NotFound when none can."""
        record = self.serving(model)
        if record is None:
            raise NotFound(
                f"No route on this proxy serves the model {model[:200]!r} "
                "(MODEL_ROUTES names the patterns it routes)."
            )
        surface = record.openai_surface
        if surface is not None and request.path == "/embeddings" and not surface.embeddings:
            raise BadRequest(
                f"The model {model[:200]!r} is served by {record.name}, whose "
                "OpenAI-compatible surface has no embeddings."
            )
        if (
            self.caps_on
            and surface is not None
            and not surface.stream_usage
            and await request.is_stream()
        ):
            raise UnmeteredRouteRefused(
                f"This proxy caps usage and {record.name}'s OpenAI-compatible surface does not "
                "report a stream's usage: the streamed request is refused."
            )
        request.provider = record
        if request.log is not None:
            request.log.route = record.name


def build_model_router(
    settings: Settings, providers: tuple[Provider, ...], client: UpstreamClient
) -> tuple[tuple[Provider, ...], ModelRouter]:
    """The router, and the provider table with a /v1 route for it to serve on: the default
    route, or (without UPSTREAM_BASE_URL) a stand-in that only routes by model."""
    if not any(record.name == "default" for record in providers):
        providers = (*providers, Provider(name="default", prefix="/v1", upstream=""))
    router = ModelRouter(
        settings.routing,
        providers,
        client,
        caps_on=settings.guard.rate_limit_tokens > 0 or settings.usage.budgets_on,
        list_timeout=min(settings.connect_timeout + settings.read_timeout, 30.0),
        allowed_models=settings.guard.allowed_models,
    )
    return providers, router
