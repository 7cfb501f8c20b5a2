"""A stored token's scopes as a check on the body: which providers and models it may use.

A request still open (a relayed stream, a realtime session) runs the same check again
(`check_open`, core/proxy/endpoint.py `recheck`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.errors import Forbidden

if TYPE_CHECKING:
    from core.request import ProxyRequest
    from core.stages import Ticket


class Authorize:
    """A stored token's scopes: which providers and models it may use."""

    reads_body = True

    async def check_settings(self, request: ProxyRequest) -> None:
        """A realtime session's new settings: the models they name, checked again."""
        await self.admit(request)

    async def check_open(self, request: ProxyRequest) -> None:
        """A request still open (a stream relayed, a realtime session, an upload leg's
        relay), checked against the token's scopes as they are now."""
        await self.admit(request)

    async def admit(self, request: ProxyRequest) -> Ticket | None:
        caller = request.caller
        record = caller.record if caller is not None else None
        if record is None or not caller or not caller.scoped:
            return None
        provider = request.provider
        if not record.allows_provider(provider.name):
            raise Forbidden(
                f"This token may not use the provider {provider.name!r} "
                f"(allowed: {', '.join(record.providers)})."
            )
        if not record.models:
            return None
        model = await request.model()
        if model is None:
            # A read (listing models) names no model and spends nothing. Reads of objects
            # stored in the account (a file, a batch) were refused before the body
            # (core/access/account_routes.py): a scoped token never reaches them.
            if request.method in ("GET", "HEAD"):
                return None
            raise Forbidden(
                "This token is limited to some models, and this request names none the proxy "
                "can read (a JSON body's 'model' or the model in the path)."
            )
        # A realtime session's transcription model runs beside it, on the same bill.
        for named in (model, *await request.other_models()):
            if not record.allows_model(named):
                raise Forbidden(
                    f"This token may not use the model {named[:200]!r} "
                    f"(allowed: {', '.join(record.models)})."
                )
        return None
