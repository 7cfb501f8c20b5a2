"""The stages of one request, in the order the endpoint runs them:

identify (who is calling) -> authorize (the token's scopes) -> admit (kill switch, policy,
rate limits, budget reservation) -> forward -> relay -> settle (metered usage replaces
each reservation).

An admission rule is a `Check`. It says whether it needs the body (rules that do not run
before the body is read, so a caller over its limit costs no memory or parsing) and
whether it needs the reply's usage. Admitting returns a `Ticket` (or None) whose `settle`
runs when the exchange is over, also when the caller left early. A deployment with no
rules has empty lists: nothing runs, nothing is metered.

A `ReplyTicket` deals in the reply itself rather than its usage (the response cache): it
may carry the whole answer (`replay`), so the endpoint sends that and calls no upstream, or
it takes a copy of the reply as the caller gets it and decides at settlement what to keep.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from core.errors import Forbidden

if TYPE_CHECKING:
    from core.access.identify import Identify
    from core.access.status import ServiceStatus
    from core.protocols import Usage
    from core.proxy.request import ProxyRequest

RawHeaders = list[tuple[bytes, bytes]]


@dataclass
class Outcome:
    """How an exchange ended, as settlement needs it."""

    upstream_status: int | None = None
    # What the meter read; None if the reply reported no usage it could read.
    usage: Usage | None = None
    # The reply was read to its end (not cut by the caller leaving or the upstream failing).
    complete: bool = False
    caller_left: bool = False
    # Set by the budget's settlement: what this request cost in US dollars.
    cost_usd: float | None = None
    # Answered from the response cache: no upstream call, nothing to charge; `usage` is
    # what the stored reply reported (the tokens saved).
    cache_hit: bool = False

    @property
    def billable(self) -> bool:
        """Whether the provider may have charged: a success, or a reply that broke off."""
        if self.cache_hit:
            return False
        status = self.upstream_status
        return status is not None and 200 <= status < 300

    def tokens(self, reserved: Usage) -> Usage:
        """The tokens to charge: those metered, nothing for a refusal, and the whole
        reservation when a billable reply reported nothing readable (fail closed)."""
        if not self.billable:
            from core.protocols import Usage

            return Usage()
        if self.usage is not None and self.complete:
            return self.usage
        if self.usage is not None:
            # Cut short: the figures so far may be partial; charge whichever is more.
            return self.usage if self.usage.total >= reserved.total else reserved
        return reserved


class Ticket(Protocol):
    # Headers the reply carries for this rule (the caller's rate-limit figures).
    headers: RawHeaders
    # Settles on the reply's usage: the relay meters the reply.
    needs_usage: bool

    async def settle(self, outcome: Outcome) -> None: ...


class Check(Protocol):
    reads_body: bool

    async def admit(self, request: ProxyRequest) -> Ticket | None: ...


# A usage reader at settlement (the usage ledger): sees every reply's outcome.
Settler = Callable[["ProxyRequest", Outcome], Awaitable[None]]


@dataclass
class Pipeline:
    """The stages a deployment runs, decided once at start (core/proxy/pipeline.py)."""

    identify: Identify
    # Admission rules that decide on the head alone, then those that need the body.
    before_body: tuple[Check, ...] = ()
    after_body: tuple[Check, ...] = ()
    # Extra usage readers at settlement (the usage ledger): every reply is metered.
    settlers: tuple[Settler, ...] = ()
    # Some rule decides on the body (scopes, policy, limits, budgets): JSON is parsed with
    # the repeated-field checks. Otherwise it is only checked to be JSON, by the C decoder.
    strict_json: bool = True
    # The kill switch and schedule: checked by every proxy route (the usage report too),
    # and again while a realtime session is open.
    status: ServiceStatus | None = None


@dataclass
class StoredReply:
    """A whole reply as the caller got it, kept to be sent again byte for byte."""

    status: int
    headers: RawHeaders
    # The body as it arrived, one item per upstream chunk (one for a whole JSON reply).
    chunks: list[bytes]
    usage: Usage | None = None


class ReplyTicket:
    """A ticket that sees the reply itself (the response cache).

    With `replay` set at admission, the endpoint sends that reply, calls no upstream and
    settles every ticket with a cache-hit outcome. Otherwise the relay calls `start` once
    and `feed` with each chunk the caller gets, and `settle` decides what to keep.
    """

    headers: RawHeaders
    needs_usage: bool = False
    replay: StoredReply | None = None

    def start(self, status: int, headers: RawHeaders, upstream_headers: RawHeaders) -> None:
        return None

    def feed(self, chunk: bytes) -> None:
        return None

    async def settle(self, outcome: Outcome) -> None:
        return None


def reply_ticket(tickets: list[Ticket]) -> ReplyTicket | None:
    for ticket in tickets:
        if isinstance(ticket, ReplyTicket):
            return ticket
    return None


@dataclass
class HeaderTicket:
    """A ticket that only adds headers and has nothing to settle."""

    headers: RawHeaders = field(default_factory=list)
    needs_usage: bool = False

    async def settle(self, outcome: Outcome) -> None:
        return None


class Authorize:
    """A stored token's scopes: which providers and models it may use."""

    reads_body = True

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
            # A read (listing models, fetching a batch) names no model and spends nothing.
            if request.method in ("GET", "HEAD"):
                return None
            raise Forbidden(
                "This token is limited to some models, and this request names none the proxy "
                "can read (a JSON body's 'model' or the model in the path)."
            )
        if not record.allows_model(model):
            raise Forbidden(
                f"This token may not use the model {model[:200]!r} "
                f"(allowed: {', '.join(record.models)})."
            )
        return None


class UnmeteredRouteRefused(Forbidden):
    code = "route_not_metered"


class MeterableRoutesOnly:
    """While usage is capped, a call that may spend but whose usage the meter cannot read
    (an image or audio route, a batch, a credential-minting route) is refused: a cap that
    cannot count is no cap."""

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


def estimated_prompt_tokens(body: bytes) -> int:
    """An upper estimate of a prompt's tokens from its size: about 3 bytes a token holds for
    English text (4 characters a token) and for CJK (one 3-byte character a token)."""
    return math.ceil(len(body) / 3)


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
