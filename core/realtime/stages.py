"""What a realtime session needs of the proxy's stages, as one small interface.

A session is a request that lasts. It goes through the same stages as an HTTP request
(identify, the checks on the head, the checks on the body, settle) at its handshake, and
while it is open it is checked again (`recheck`): every REALTIME_RECHECK_SECONDS and on
each frame that starts a turn, the caller is identified again (a revoked, disabled or
expired token ends the session) and the rules that hold while a session is open run again
(the kill switch and the schedule). Each response the provider begins counts as a request
(`count_turn`): RATE_LIMIT_REQUESTS holds for the turns, not only the handshake.

`SessionStages` is what core/realtime/session.py depends on; `EndpointStages` is the one
place that knows how the HTTP endpoint provides it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, TypeVar

if TYPE_CHECKING:
    from core.providers import Provider
    from core.proxy.endpoint import ProxyEndpoint
    from core.request import ProxyRequest
    from core.stages import Outcome, Ticket
    from core.types import Scope


Frame = TypeVar("Frame", str, bytes)


class SessionStages(Protocol):
    def route(self, scope: Scope) -> tuple[Provider, str]: ...

    async def identify(self, request: ProxyRequest) -> None: ...

    async def admit_head(self, request: ProxyRequest, tickets: list[Ticket]) -> None: ...

    async def admit_body(self, request: ProxyRequest, tickets: list[Ticket]) -> None: ...

    async def recheck(self, request: ProxyRequest) -> None: ...

    async def count_turn(self, request: ProxyRequest) -> None: ...

    def scrub_frame(self, frame: Frame) -> Frame: ...

    async def check_settings(self, request: ProxyRequest) -> None: ...

    async def settle(
        self, tickets: list[Ticket], outcome: Outcome, request: ProxyRequest | None
    ) -> None: ...


class EndpointStages:
    """The HTTP endpoint's stages, offered to sessions."""

    def __init__(self, endpoint: ProxyEndpoint) -> None:
        self.endpoint = endpoint
        self.pipeline = endpoint.pipeline

    def route(self, scope: Scope) -> tuple[Provider, str]:
        return self.endpoint.route(scope)

    async def identify(self, request: ProxyRequest) -> None:
        await self.endpoint.identify(request)

    async def admit_head(self, request: ProxyRequest, tickets: list[Ticket]) -> None:
        await self.endpoint.admit(request, self.pipeline.before_body, tickets)

    async def admit_body(self, request: ProxyRequest, tickets: list[Ticket]) -> None:
        await self.endpoint.admit(request, self.pipeline.after_body, tickets)

    async def check_settings(self, request: ProxyRequest) -> None:
        """Raises the ProxyError a rule gives the session's settings as they are now (a
        transcription model set mid-session: scopes and ALLOWED_MODELS; a tool billed
        apart from tokens: a dollar budget)."""
        await self.endpoint.check_settings(request)

    def scrub_frame(self, frame: Frame) -> Frame:
        """A provider's frame (or close reason) with the proxy's keys taken out, whole or
        masked, as every HTTP reply body is (core/proxy/scrub.py)."""
        return self.endpoint.scrubber.frame(frame)

    async def recheck(self, request: ProxyRequest) -> None:
        """Raises the ProxyError that ends the session: the token no longer valid, or the
        proxy switched off (ProxyEndpoint.recheck: the same check a stream's
        continuation gets)."""
        await self.endpoint.recheck(request)

    async def count_turn(self, request: ProxyRequest) -> None:
        """Raises the ProxyError that ends the session: a response the provider began,
        counted as a request, is past RATE_LIMIT_REQUESTS."""
        await self.endpoint.count_turn(request)

    async def settle(
        self, tickets: list[Ticket], outcome: Outcome, request: ProxyRequest | None
    ) -> None:
        await self.endpoint.settle(tickets, outcome, request)
