"""Realtime: WebSocket sessions relayed by the proxy on servers, and ephemeral keys.

Sessions (session.py, stages.py) are a surface over the endpoint's stages; ephemeral keys
(minting.py) are a check on the body, whose part of the stages is built here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.errors import Forbidden
from core.stages import Contribution

if TYPE_CHECKING:
    from core.request import ProxyRequest
    from core.stages import Deployment, Ticket


def ephemeral_keys(deployment: Deployment) -> Contribution:
    """Minting routes refused unless ALLOW_EPHEMERAL_KEYS; when allowed, their ticket comes
    before the limits' and the budget's, which keep the charge it sets."""
    settings = deployment.settings
    if not settings.allow_ephemeral_keys:
        return Contribution(before_body=(EphemeralKeysOff(),))
    from core.access import service_status
    from core.realtime.minting import EphemeralKeys

    keys = EphemeralKeys(
        settings.ephemeral_key_tokens,
        models_listed=bool(settings.guard.allowed_models),
        status=service_status(deployment),
    )
    return Contribution(after_body=(keys,))


class EphemeralKeysRefused(Forbidden):
    code = "ephemeral_keys_disabled"


class EphemeralKeysOff:
    """Minting routes are refused, before the body is read, unless ALLOW_EPHEMERAL_KEYS
    (core/realtime/minting.py serves them when it is set)."""

    reads_body = False

    async def admit(self, request: ProxyRequest) -> Ticket | None:
        if request.route.kind == "minting":
            raise EphemeralKeysRefused(
                "This proxy does not mint ephemeral keys or create provider-side realtime "
                f"sessions ({request.remainder[:100]!r}): "
                "the operator can allow it with ALLOW_EPHEMERAL_KEYS=true. Realtime "
                "sessions can also run through the proxy itself over a WebSocket when it "
                "runs as a server."
            )
        return None
