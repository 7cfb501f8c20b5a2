"""While usage is capped (RATE_LIMIT_TOKENS, BUDGET_*), only routes the meter can read."""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.errors import Forbidden
from core.protocols import usage_hiding_parameter

if TYPE_CHECKING:
    from core.request import ProxyRequest
    from core.stages import Ticket


class UnmeteredRouteRefused(Forbidden):
    code = "route_not_metered"


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


def refuse_unmetered_route(request: ProxyRequest, settings_named: str) -> None:
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
