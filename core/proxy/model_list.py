"""`GET /v1/models` under MODEL_ROUTES: the union of what the routes serve, in OpenAI's list
shape, so model pickers and SDKs that list models show every model one base URL reaches.

Each provider's own list is asked for at once (its OpenAI-compatible surface's /models, with
its key), and kept to the models a request would reach it for (the first route whose pattern
matches, as requests are routed): a route `claude-*=anthropic` lists the Anthropic models
named claude-* that no earlier route claims, the default route those no route claims. A
caller whose token is limited to some providers or models sees only those. A provider that
does not answer in time is left out of the list (and logged), not the whole reply.
ALLOWED_MODELS holds the list to what it lets through, as a token's scope does.

`GET /v1/models/{id}` of a model a route claims is answered with its entry of that list (the
default route's upstream, where it would go otherwise, knows no other provider's model).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

from core.access.model_lists import ModelNotFound
from core.access.policy import model_allowed
from core.errors import UpstreamUnreachable, forget_frames

if TYPE_CHECKING:
    from core.providers import Provider
    from core.proxy.scrub import Scrubber

    # The router (core/proxy/model_routes.py) calls this module: named by type only.
    ModelRouter = Any
    from core.request import ProxyRequest
    from core.types import Send

logger = logging.getLogger("llm_proxy")

# A model list is small; more than this from one provider is not read.
_MAX_LIST_BYTES = 4 * 1024 * 1024


async def send_model(
    router: ModelRouter,
    request: ProxyRequest,
    send: Send,
    scrubber: Scrubber,
    model: str,
    record: Provider,
) -> None:
    """`GET /v1/models/{model}` for a model a route claims: its entry as the list gives it
    (the default route's upstream knows no other provider's model)."""
    found = await _listed(router, record, needed=True)
    entry = next((m for m in found if m["id"] == model), None)
    if entry is None or not _visible(router, request, entry):
        raise ModelNotFound(f"The model {model[:200]!r} does not exist or is not served here.")
    await _send_json(request, send, scrubber, entry)


def _visible(router: ModelRouter, request: ProxyRequest, model: dict[str, Any]) -> bool:
    """Whether a request could use it: ALLOWED_MODELS lets it through (a model it refuses
    is a 403 to every caller; the list named them all, fine-tuned ids with them), and the
    caller's token, if limited to some providers or models, allows it."""
    if not model_allowed(router.allowed_models, model["id"]):
        return False
    caller = request.caller
    token = caller.record if caller is not None and caller.scoped else None
    return token is None or (
        token.allows_provider(model["owned_by"]) and token.allows_model(model["id"])
    )


async def _send_json(request: ProxyRequest, send: Send, scrubber: Scrubber, value: Any) -> None:
    body = json.dumps(value, separators=(",", ":")).encode()
    # Written here from the upstreams' lists, not relayed: an id echoing a key would pass
    # every tap, the scrubber included.
    body = scrubber(body)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body if request.method == "GET" else b""})


async def send_model_list(
    router: ModelRouter, request: ProxyRequest, send: Send, scrubber: Scrubber
) -> None:
    sources: dict[str, Provider] = {}
    for _, record in router.routes:
        sources.setdefault(record.name, record)
    default = router.default
    lists = [_listed(router, record) for record in sources.values()]
    if default is not None and default.upstream and default.name not in sources:
        lists.append(_listed(router, default))
    found = await asyncio.gather(*lists)
    seen: set[str] = set()
    data = []
    for models in found:
        for model in models:
            if model["id"] in seen or not _visible(router, request, model):
                continue
            seen.add(model["id"])
            data.append(model)
    await _send_json(request, send, scrubber, {"object": "list", "data": data})


async def _listed(
    router: ModelRouter, record: Provider, *, needed: bool = False
) -> list[dict[str, Any]]:
    """The models `record` lists that a request would reach it for: listed under another
    provider's name, a model would be shown to a token limited to that provider, and a
    request for it refused (and hidden from one that may use it). A provider that
    does not answer lists none, unless its list is `needed` (one model asked for): then
    the caller hears it (a 502, which SDKs retry), not that the model does not exist."""
    try:
        document = await asyncio.wait_for(_fetch(router, record), router.timeout)
    except Exception as exc:
        logger.warning("model list: %s did not answer (%s)", record.name, type(exc).__name__)
        forget_frames(exc)  # the transport keeps it: core/errors.py
        if needed:
            raise UpstreamUnreachable(
                f"The provider's model list ({record.name}) could not be read; try again."
            ) from None
        return []
    items = document.get("data") if isinstance(document, dict) else None
    listed = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            continue
        # Gemini's surface names its models `models/gemini-...`; requests take either.
        model = item["id"].removeprefix("models/")
        if router.serving(model) is not record:
            continue
        created = item.get("created")
        listed.append(
            {
                "id": model,
                "object": "model",
                "created": created if isinstance(created, int) else 0,
                "owned_by": record.name,
            }
        )
    return listed


async def _fetch(router: ModelRouter, record: Provider) -> Any:
    key = next(record.keys.attempts())
    headers = [(b"accept", b"application/json")]
    if key is not None:
        headers.append(key)
    surface = record.openai_surface
    query = ""
    if surface is not None and record.name != "default":
        headers.extend((n.encode(), v.encode()) for n, v in surface.models_headers)
        query = surface.models_query
    url = record.targets.urls[0] + "/models" + query
    reply = await router.client.send("GET", url, headers, b"")
    try:
        if reply.status_code != 200:
            raise ValueError(f"status {reply.status_code}")
        chunks = []
        size = 0
        async for chunk in reply.stream:
            size += len(chunk)
            if size > _MAX_LIST_BYTES:
                raise ValueError("list too large")
            chunks.append(chunk)
    finally:
        await reply.aclose()
    return json.loads(b"".join(chunks))
