"""Hard spend caps in US dollars, per caller and overall, over a UTC calendar window.

Admission reserves the request's worst case (core/usage/estimate.py, priced by
core/usage/prices.py), or the room left if that is less, in one atomic store operation per
counter item: the caller's, then the deployment's total. A window with no room left is
refused with 429 `insufficient_quota` (OpenAI's own code) and Retry-After until it rolls
over. So concurrent requests cannot pass a cap together: the most a window can overshoot
is one request's cost beyond what it reserved. Settlement replaces the reservation with
the metered cost (or the whole worst case when the reply's usage could not be read).

Counters (integers: cost in micro-dollars) under `budget:<window>:<caller hash>` and
`budget:<window>:total`; the caller's item also sums the tokens, which `GET /proxy/usage`
shows to the caller.
"""

from __future__ import annotations

import datetime
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from core.access.limits import caller_key
from core.errors import Forbidden, QuotaExceeded, ServiceUnavailable
from core.protocols import Usage
from core.stores.calls import DEFAULT_STORE_TIMEOUT, call_store
from core.usage.caps import refuse_priced_tools, refuse_unmetered_route

if TYPE_CHECKING:
    from core.request import ProxyRequest
    from core.stages import Outcome, RawHeaders
    from core.stores import Store
    from core.usage.estimate import WorstCase
    from core.usage.prices import PriceTable

logger = logging.getLogger("llm_proxy")

MICROS = 1_000_000
# Counter items outlive their window a while, so owners can read last month's figures.
_KEEP_AFTER_WINDOW = 35 * 86400


class ModelNotPriced(Forbidden):
    code = "model_not_priced"


@dataclass(frozen=True)
class Window:
    name: str  # "2026-11-30" or "2026-11"
    ends_at: float

    @classmethod
    def containing(cls, now: float, kind: str) -> Window:
        day = datetime.datetime.fromtimestamp(now, datetime.UTC)
        if kind == "month":
            start = day.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
            following = (start + datetime.timedelta(days=32)).replace(day=1)
            return cls(start.strftime("%Y-%m"), following.timestamp())
        start = day.replace(hour=0, minute=0, second=0, microsecond=0)
        return cls(start.strftime("%Y-%m-%d"), (start + datetime.timedelta(days=1)).timestamp())


def usd(micros: int) -> float:
    return round(micros / MICROS, 6)


class Budget:
    """The admission check and the counters behind BUDGET_* and per-token budgets."""

    reads_body = True

    def __init__(
        self,
        store: Store,
        prices: PriceTable,
        estimate: WorstCase,
        *,
        per_caller_usd: float,
        total_usd: float,
        window: str,
        timeout: float = DEFAULT_STORE_TIMEOUT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.timeout = timeout
        self.store = store
        self.prices = prices
        self.estimate = estimate
        self.per_caller_usd = per_caller_usd
        self.total_usd = total_usd
        self.window = window
        self.clock = clock

    async def _call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return await call_store(self.store, self.timeout, method, *args, **kwargs)
        except Exception as exc:
            # The type only: a driver's message may quote the store URL and its password.
            logger.error("budget store failed: %s", type(exc).__name__)
            raise ServiceUnavailable(
                "The proxy's budget store is unavailable; try again shortly."
            ) from None

    def caller_limit_usd(self, request: ProxyRequest) -> float | None:
        """The caller's budget, or None for none: a token's own (0 included: a token held
        at nothing spends nothing), else BUDGET_PER_CALLER_USD if set."""
        record = request.caller.record if request.caller is not None else None
        own = record.budget_usd if record is not None else None
        if own is not None:
            return float(own)
        return self.per_caller_usd or None

    def keys(self, identity: str, window: Window) -> tuple[str, str]:
        prefix = f"budget:{window.name}:"
        return prefix + caller_key(identity), prefix + "total"

    async def check_settings(self, request: ProxyRequest) -> None:
        """A realtime session's new settings (core/realtime/session.py): the tools they turn
        on, held to the rule admit holds a body's to."""
        if self.caller_limit_usd(request) is not None or self.total_usd:
            await refuse_priced_tools(request)

    async def admit(self, request: ProxyRequest) -> BudgetReservation | None:
        caller_limit = self.caller_limit_usd(request)
        if request.route.kind == "free" or (caller_limit is None and not self.total_usd):
            return None  # no budget applies to this caller (a token may carry its own)
        refuse_unmetered_route(request, "a dollar budget")
        await refuse_priced_tools(request)
        model = await request.model()
        price = self.prices.find(model)
        if price is None:
            raise ModelNotPriced(
                f"This proxy caps spending in dollars and has no price for the model "
                f"{(model or '(none named)')[:200]!r}; the operator can add one in "
                "MODEL_PRICES."
            )
        worst = await self.estimate(request)
        # At the dearest rates the model bills: the reply may be audio, or a cache write.
        reserved = max(1, math.ceil(price.worst_cost_usd(worst) * MICROS))
        now = self.clock()
        window = Window.containing(now, self.window)
        expires_at = window.ends_at + _KEEP_AFTER_WINDOW
        caller_item, total_item = self.keys(request.counted_as, window)
        store = self.store
        if caller_limit is not None:
            held = await self._call(
                store.reserve,
                caller_item,
                "micros",
                reserved,
                math.floor(caller_limit * MICROS),
                expires_at=expires_at,
            )
            if held is None:
                raise self._refusal("this caller's", caller_limit, window, now)
        else:
            held = reserved
            await self._call(store.increment, caller_item, {"micros": held}, expires_at=expires_at)
        total_held = 0
        if self.total_usd > 0:
            total_held = await self._call(
                store.reserve,
                total_item,
                "micros",
                reserved,
                math.floor(self.total_usd * MICROS),
                expires_at=expires_at,
            )
            if total_held is None:
                await self._call(
                    store.increment, caller_item, {"micros": -held}, expires_at=expires_at
                )
                raise self._refusal("the proxy's total", self.total_usd, window, now)
        if request.log is not None:
            request.log.model = model
        return BudgetReservation(
            self, price, worst, held, total_held, caller_item, total_item, expires_at
        )

    def _refusal(self, whose: str, limit: float, window: Window, now: float) -> QuotaExceeded:
        wait = max(1, math.ceil(window.ends_at - now))
        return QuotaExceeded(
            f"Budget reached: {whose} budget of ${limit:g} per {self.window} (UTC) has no room "
            f"for this request's worst case. It renews in {wait} s.",
            headers={"retry-after": str(wait)},
        )

    async def caller_figures(self, request: ProxyRequest) -> dict[str, Any]:
        """What `GET /proxy/usage` tells a caller about its own window."""
        window = Window.containing(self.clock(), self.window)
        caller_item, _ = self.keys(request.counted_as, window)
        counts = await self._call(
            self.store.increment, caller_item, {}, expires_at=window.ends_at + _KEEP_AFTER_WINDOW
        )
        spent = max(0, counts.get("micros", 0))
        limit = self.caller_limit_usd(request)
        return {
            "window": window.name,
            "spent_usd": usd(spent),
            "limit_usd": limit,
            "remaining_usd": (
                usd(max(0, math.floor(limit * MICROS) - spent)) if limit is not None else None
            ),
            "input_tokens": counts.get("input", 0),
            "output_tokens": counts.get("output", 0),
            "resets_at": datetime.datetime.fromtimestamp(window.ends_at, datetime.UTC).isoformat(),
        }


@dataclass
class BudgetReservation:
    budget: Budget
    price: Any
    worst: Usage
    # What the caller's and the total counters hold for this request: the worst case, or
    # the room that was left when that was less.
    caller_held: int
    total_held: int
    caller_item: str
    total_item: str
    expires_at: float
    headers: RawHeaders = field(default_factory=list)
    needs_usage: bool = True

    async def settle(self, outcome: Outcome) -> None:
        charged = outcome.tokens(self.worst)
        # Figures that are the reservation's, in whole or in part (a reply unread or cut
        # short, a continuation unread), are priced as it was: at the dearest rates.
        guessed = charged is self.worst or outcome.unread_calls > 0
        price = self.price.worst_cost_usd if guessed else self.price.cost_usd
        cost = math.ceil(price(charged) * MICROS) if charged.total else 0
        outcome.cost_usd = cost / MICROS
        budget = self.budget
        store = budget.store
        try:
            await budget._call(
                store.increment,
                self.caller_item,
                {
                    "micros": cost - self.caller_held,
                    "input": charged.input_tokens,
                    "output": charged.output_tokens,
                    "requests": 1,
                },
                expires_at=self.expires_at,
            )
            if budget.total_usd > 0 and cost != self.total_held:
                await budget._call(
                    store.increment,
                    self.total_item,
                    {"micros": cost - self.total_held},
                    expires_at=self.expires_at,
                )
        except ServiceUnavailable:
            pass  # logged; the reservation stays charged, which errs on the owner's side
