"""The shapes every feature plugs into the stages with, below the features themselves.

The stages of one request, in the order core/proxy/endpoint.py runs them: identify (who
is calling) -> checks on the head -> read the body -> checks on the body (scopes, policy,
limits, budget reservation, cache lookup) -> forward -> relay -> settle (metered usage
replaces each reservation).

An admission rule is a `Check`. It says whether it needs the body (rules that do not run
before the body is read, so a caller over its limit costs no memory or parsing) and
whether it needs the reply's usage. Admitting returns a `Ticket` (or None) whose `settle`
runs when the exchange is over, also when the caller left early. A deployment with no
rules has empty lists: nothing runs, nothing is metered.

Each feature says what it adds as a `Contribution`, built from the `Deployment` (settings,
stores, and what features share) by a function in the feature's own package;
core/proxy/pipeline.py joins them in the order core/app.py lists them.

A `ReplyTicket` deals in the reply itself rather than its usage (the response cache): it
may carry the whole answer (`replay`), so the endpoint sends that and calls no upstream, or
it takes a copy of the reply as the caller gets it and decides at settlement what to keep.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import cached_property
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, TypeVar

from core.records import Record

if TYPE_CHECKING:
    from core.config import Settings
    from core.protocols import Usage
    from core.request import ProxyRequest
    from core.stores import Store, StoreSet
    from core.types import RequestLog

T = TypeVar("T")

RawHeaders = list[tuple[bytes, bytes]]


class Outcome:
    """How an exchange ended, as settlement needs it. State, not a value: compared by
    identity (a plain class: a dataclass's methods are compiled at every cold start)."""

    __slots__ = (
        "cache_hit",
        "caller_left",
        "complete",
        "cost_usd",
        "sent",
        "unread_calls",
        "upstream_status",
        "usage",
        "usage_partial",
    )

    def __init__(
        self,
        upstream_status: int | None = None,
        usage: Usage | None = None,
        *,
        complete: bool = False,
        caller_left: bool = False,
        cost_usd: float | None = None,
        cache_hit: bool = False,
        sent: bool = False,
        unread_calls: int = 0,
        usage_partial: bool = False,
    ) -> None:
        self.upstream_status = upstream_status
        # What the meter read; None if the reply reported no usage it could read.
        self.usage = usage
        # The reply was read to its end (not cut by the caller leaving or the upstream
        # failing).
        self.complete = complete
        self.caller_left = caller_left
        # Set by the budget's settlement: what this request cost in US dollars.
        self.cost_usd = cost_usd
        # Answered from the response cache: no upstream call, nothing to charge; `usage`
        # is what the stored reply reported (the tokens saved).
        self.cache_hit = cache_hit
        # The request went to the provider (a connection was made or may have been): it
        # may run and be billed even if no answer comes back (the caller left before the
        # headers, the first byte timed out).
        self.sent = sent
        # Further upstream calls of this request whose usage could not be read (a Gemini
        # stream's continuations, core/proxy/recovery.py): each is charged its
        # reservation on top of `usage` (what the others reported; None: the first was
        # unread too, charged its reservation), fail closed per call rather than one
        # reservation for them all.
        self.unread_calls = unread_calls
        # The usage read counts only what came before the answer (an Anthropic stream's
        # message_start with no message_delta after it): charged as a reply cut short,
        # even when its body ended cleanly.
        self.usage_partial = usage_partial

    @property
    def billable(self) -> bool:
        """Whether the provider may have charged: a success, a reply that broke off, or a
        request sent that never got its answer (charged its reservation: fail closed)."""
        if self.cache_hit:
            return False
        status = self.upstream_status
        if status is None:
            return self.sent
        return 200 <= status < 300

    def tokens(self, reserved: Usage) -> Usage:
        """The tokens to charge: those metered, nothing for a refusal, and the whole
        reservation when a billable reply reported nothing readable (fail closed)."""
        if not self.billable:
            from core.protocols import Usage

            return Usage()
        if self.unread_calls:
            from core.protocols import Usage

            n = self.unread_calls
            base = self.usage if self.usage is not None else reserved
            return Usage(*(got + n * held for got, held in zip(base, reserved, strict=True)))
        if self.usage is not None and self.complete and not self.usage_partial:
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


def reserved_tokens(tickets: list[Ticket]) -> int | None:
    """The tokens the request was admitted for (the largest worst case a token limit or a
    budget reserved), or None when no rule reserved any."""
    # TokenReservation and BudgetReservation keep the worst case they reserved.
    worst = [
        reservation.total
        for ticket in tickets
        if (reservation := getattr(ticket, "worst", None)) is not None
    ]
    return max(worst) if worst else None


class Check(Protocol):
    # Optional hooks, looked up by name where a request lasts (core/proxy/endpoint.py):
    # `check_open` (the rule again on a request still open: ProxyEndpoint.recheck, for a
    # relayed reply, a slow body, a realtime session, a continuation), `check_settings`,
    # `check_continuation` and `count_turn`.
    reads_body: bool

    async def admit(self, request: ProxyRequest) -> Ticket | None: ...


# A usage reader at settlement (the usage ledger): sees every reply's outcome.
Settler = Callable[["ProxyRequest", Outcome], Awaitable[None]]


class StoredReply(Record):
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

    def call_instead(self, log: RequestLog | None) -> None:
        """The upstream is called though a reply was found to replay (a fallback's next
        model, mid-exchange): the reply it gets is copied to refresh the entry, and the
        caller, the log and the metrics hear of a call, not of a hit."""
        self.replay = None
        self.needs_usage = True


def reply_ticket(tickets: list[Ticket]) -> ReplyTicket | None:
    for ticket in tickets:
        if isinstance(ticket, ReplyTicket):
            return ticket
    return None


class HeaderTicket:
    """A ticket that only adds headers and has nothing to settle."""

    __slots__ = ("headers", "needs_usage")

    def __init__(self, headers: RawHeaders | None = None, needs_usage: bool = False) -> None:
        self.headers: RawHeaders = [] if headers is None else headers
        self.needs_usage = needs_usage

    async def settle(self, outcome: Outcome) -> None:
        return None


class Contribution(NamedTuple):
    """What one feature adds to the stages: its checks (on the head, then on the body),
    its settlers, and whether its rules read the body's fields (then JSON is parsed with
    the repeated-field checks)."""

    before_body: tuple[Check, ...] = ()
    after_body: tuple[Check, ...] = ()
    settlers: tuple[Settler, ...] = ()
    strict_json: bool = False


class Deployment:
    """What the features are built from, once at start: the settings, the stores, and the
    services more than one feature (or the app) uses, each made once (`shared`)."""

    def __init__(self, settings: Settings, stores: StoreSet) -> None:
        self.settings = settings
        self.stores = stores
        self._shared: dict[Callable[[Deployment], Any], Any] = {}

    @cached_property
    def token_store(self) -> Store | None:
        url = self.settings.token_store
        return self.stores.open(url) if url else None

    @cached_property
    def limit_store(self) -> Store:
        return self.stores.open(self.settings.guard.limit_store)

    def shared(self, make: Callable[[Deployment], T]) -> T:
        """`make(self)`, called once per deployment: the limits and the budget count in one
        store with one price table, and the dashboard throws the kill switch the stages read."""
        if make not in self._shared:
            self._shared[make] = make(self)
        made: T = self._shared[make]
        return made


# One feature's part of the stages; None when its settings leave it off.
Feature = Callable[[Deployment], Contribution | None]
