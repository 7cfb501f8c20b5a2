"""While usage is capped (RATE_LIMIT_TOKENS, BUDGET_*), only routes the meter can read."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import unquote_to_bytes

from core.errors import BadRequest, Forbidden
from core.protocols import (
    AmbiguousModel,
    minted_settings,
    token_setup_keeps,
    usage_hiding_parameter,
)

if TYPE_CHECKING:
    from core.request import ProxyRequest
    from core.stages import Ticket


class UnmeteredRouteRefused(Forbidden):
    code = "route_not_metered"


class FieldMaskRefused(BadRequest):
    code = "field_mask_not_metered"


# Google's front end trims a reply to the fields a mask names (the `fields` / `$fields`
# system parameter, the X-Goog-FieldMask header): usage included.
_MASK_PARAMS = frozenset({b"fields", b"$fields"})
_MASK_HEADER = b"x-goog-fieldmask"


def _field_mask(request: ProxyRequest) -> bool:
    if any(name == _MASK_HEADER for name, _ in request.headers):
        return True
    query = request.query
    if not query:
        return False
    for part in query.split(b"&"):
        name = unquote_to_bytes(part.partition(b"=")[0].replace(b"+", b" ")).strip().lower()
        if name in _MASK_PARAMS:
            return True
    return False


class UnmeteredToolRefused(Forbidden):
    code = "tool_not_metered"


class UnmeteredRateRefused(Forbidden):
    code = "rate_not_metered"


class MeterableRoutesOnly:
    """While usage is capped, a call that may spend but whose usage the meter cannot read
    (an image or audio route, a batch, a credential-minting route, a metered route asked
    for a reply without its usage) is refused: a cap that cannot count is no cap."""

    reads_body = False

    def __init__(self, settings_named: str) -> None:
        self.settings_named = settings_named

    async def admit(self, request: ProxyRequest) -> Ticket | None:
        refuse_unmetered_route(request, self.settings_named)
        return None


class UnreadableBodyRefused(Forbidden):
    code = "body_not_metered"


class ReadableBodiesOnly:
    """While usage is capped, a call that may spend carries a body the proxy can read: the
    worst case reserved, the tools and rates a budget refuses, the model a minted key is
    for and the usage option spliced into an OpenAI stream are all read from it. A body
    compressed (Content-Encoding) or in another format was read as nothing: its reservation
    counted the compressed bytes, a priced tool went by, and a stream came back without
    the usage its charge needs."""

    reads_body = True

    def __init__(self, settings_named: str) -> None:
        self.settings_named = settings_named

    async def admit(self, request: ProxyRequest) -> Ticket | None:
        if request.route.kind not in ("metered", "minting") or not request.body:
            return None
        if not isinstance(await request.document(), dict):
            raise UnreadableBodyRefused(
                f"This proxy caps usage ({self.settings_named}) and reads each request's "
                "worst case from its body: send it as uncompressed JSON (no "
                "Content-Encoding), a JSON object."
            )
        return None


def refuse_unmetered_route(request: ProxyRequest, settings_named: str) -> None:
    if request.route.kind == "metered" and _field_mask(request):
        # A mask naming the answer but not all of its usage (`candidates,usageMetadata.
        # promptTokenCount`) left the meter a usage without its output: charged as none.
        raise FieldMaskRefused(
            f"This proxy caps usage ({settings_named}) and reads it from the whole reply: a "
            "field mask (fields, $fields, X-Goog-FieldMask) is refused on this route."
        )
    if request.route.kind == "unreadable":
        raise UnmeteredRouteRefused(
            f"This proxy caps usage ({settings_named}) and cannot meter "
            f"{request.method} {request.remainder[:200]!r}: the route is refused. "
            "Metered routes: chat/completions, completions, responses, embeddings "
            "(OpenAI), messages (Anthropic), generateContent and streamGenerateContent "
            "(Gemini)."
        )
    if request.route.kind == "metered":
        hiding = usage_hiding_parameter(request.query, request.headers)
        if hiding is not None:
            raise UnmeteredRouteRefused(
                f"This proxy caps usage ({settings_named}), and {hiding!r} would have the "
                "provider leave the usage out of its reply: send the request without it."
            )


async def refuse_priced_tools(request: ProxyRequest) -> None:
    """Under a dollar budget, a request may turn on only tools billed as tokens: a hosted
    web search, code container or grounding bills per call, apart from the usage a reply
    reports, so the budget would count a few tokens for each dollar spent. Nor may it ask
    for a rate above the list price the budget counts (a priority tier)."""
    document = await request.document()
    if not isinstance(document, dict):
        return
    # A minted key's session runs with the settings its mint names, nested in the body.
    parts = [document]
    if request.route.kind == "minting":
        try:
            parts = minted_settings(document)
            # A Gemini auth token's holder sets up its own sessions but for what the token
            # fixes: the model (priced here) and the tools (grounding bills per prompt) must
            # be fixed, or the key spends on what no rule here read.
            unfixed = request.provider.mints_auth_tokens and not all(
                token_setup_keeps(document, name) for name in ("model", "tools")
            )
        except AmbiguousModel as exc:
            raise BadRequest(f"The request names one field twice ({exc}): name it once.") from None
        if unfixed:
            raise UnmeteredToolRefused(
                "This proxy caps spending in dollars, and a Gemini auth token opens Live "
                "sessions whose model and tools its holder chooses unless the token fixes "
                "them: set bidiGenerateContentSetup with its model and tools (with no "
                "fieldMask, or one that lists 'model' and 'tools')."
            )
    for part in parts:
        dearer = request.wire.dearer_rate(part)
        if dearer is not None:
            raise UnmeteredRateRefused(
                f"This proxy caps spending in dollars at list prices, and {dearer!r} asks the "
                f"provider to bill above them ({str(part.get(dearer))[:40]!r}): refused."
            )
        priced = request.wire.priced_tools(request.route, part)
        if priced:
            raise UnmeteredToolRefused(
                f"This proxy caps spending in dollars and cannot count what the tool "
                f"{priced[0]!r} costs (the provider bills it apart from the tokens it "
                "reports): refused. Function tools, which the caller runs, are allowed."
            )
