"""Which stages a deployment runs, decided once at start from its settings.

Nothing configured: the token check, the refusal of ephemeral-key routes (until
ALLOW_EPHEMERAL_KEYS), no other rule, no meter. Each setting adds its rule; heavy modules
(PyJWT, store clients) load only when a rule needs them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from core.access.client_ip import client_ip_rule, detect_platform
from core.access.identify import Identify
from core.errors import ProxyError
from core.proxy.stages import (
    Authorize,
    Check,
    EphemeralKeysOff,
    MeterableRoutesOnly,
    Pipeline,
    Settler,
)
from core.stores.calls import call_store_later

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from core.access.credentials import TokenCheck
    from core.access.status import ServiceStatus
    from core.config import Settings
    from core.proxy.request import ProxyRequest
    from core.proxy.stages import Outcome, Ticket
    from core.stores import Store, StoreSet
    from core.usage.budget import Budget
    from core.usage.estimate import WorstCase
    from core.usage.ledger import UsageLedger
    from core.usage.prices import PriceTable

logger = logging.getLogger("llm_proxy")


def build_identify(settings: Settings, token_check: TokenCheck) -> Identify:
    config = settings.guard
    jwt = None
    if config.jwt_jwks_url:
        from core.access.jwt_auth import verifier_from_settings  # PyJWT loads only here

        jwt = verifier_from_settings(
            config.jwt_jwks_url,
            config.jwt_issuer,
            config.jwt_audiences,
            config.jwt_algorithms,
            config.jwt_leeway,
            config.jwt_cache_seconds,
        )
    anonymous = None
    if config.allow_anonymous:
        anonymous = frozenset(o.encode() for o in settings.allowed_origins if o != "*")
    # Shared-token and anonymous callers are counted per client IP only where something
    # counts them, or keeps cache entries per caller.
    counts = config.limits_on or settings.usage.budgets_on or settings.cache.per_caller
    client_ip = client_ip_rule(config.client_ip_source) if counts else None
    return Identify(token_check, client_ip, jwt, anonymous)


class KillSwitch:
    """Offline now, or in a scheduled window: every proxy route answers 503."""

    reads_body = False

    def __init__(self, status: ServiceStatus) -> None:
        self.status = status

    async def admit(self, request: ProxyRequest) -> Ticket | None:
        await self.status.check(time.time())
        return None


class RecordUsage:
    """The settle stage's usage ledger entry: what each metered reply used and cost."""

    def __init__(self, ledger: UsageLedger, prices: PriceTable, timeout: float) -> None:
        self.ledger = ledger
        self.prices = prices
        self.timeout = timeout

    async def __call__(self, request: ProxyRequest, outcome: Outcome) -> None:
        if not outcome.billable or request.route.kind not in ("metered", "minting"):
            return
        from core.usage.ledger import UsageEntry

        usage = outcome.usage
        try:
            model = await request.model()
        except ProxyError:
            model = None
        if outcome.cost_usd is None and usage is not None:
            # No budget priced it: the ledger still shows what it cost, where a price is known.
            price = self.prices.find(model)
            if price is not None:
                outcome.cost_usd = price.cost_usd(usage)
        entry = UsageEntry(
            caller=request.counted_as,
            provider=request.provider.name,
            model=model or "",
            input_tokens=usage.input_tokens if usage else 0,
            output_tokens=usage.output_tokens if usage else 0,
            cached_input_tokens=usage.cached_input_tokens if usage else 0,
            cost_usd=outcome.cost_usd or 0.0,
        )
        # Bookkeeping: written in the background, so no reply waits on the ledger's store.
        done = call_store_later(self.ledger.store, self.ledger.record, entry)
        done.add_done_callback(_log_ledger_failure)


def prices_of(settings: Settings) -> PriceTable:
    from core.usage.prices import PriceTable, parse_prices

    prices = settings.usage.model_prices
    return PriceTable(parse_prices(prices) if prices else None)


def _log_ledger_failure(done: asyncio.Future[None]) -> None:
    if not done.cancelled() and done.exception() is not None:
        logger.warning("usage ledger write failed: %s", type(done.exception()).__name__)


@dataclass
class Contribution:
    """What one feature adds to the stages: its checks (on the head, then on the body),
    its settlers, whether its rules read the body's fields, and the budget (the usage
    report reads it)."""

    before_body: tuple[Check, ...] = ()
    after_body: tuple[Check, ...] = ()
    settlers: tuple[Settler, ...] = ()
    strict_json: bool = False
    budget: Budget | None = None


class Deployment:
    """What the features are built from: settings, stores and the services made at start.
    The store, prices and estimate the limits and the budget share are made once."""

    def __init__(
        self,
        settings: Settings,
        stores: StoreSet,
        status: ServiceStatus | None,
        ledger: UsageLedger | None,
    ) -> None:
        self.settings = settings
        self.config = settings.guard
        self.stores = stores
        self.status = status
        self.ledger = ledger

    @cached_property
    def limit_store(self) -> Store:
        return self.stores.open(self.config.limit_store)

    @cached_property
    def prices(self) -> PriceTable:
        return prices_of(self.settings)

    @cached_property
    def estimate(self) -> WorstCase:
        from core.usage.estimate import WorstCase

        settings = self.settings
        return WorstCase(
            self.prices,
            self.config.max_tokens_cap,
            session_tokens=settings.realtime_reserve_tokens,
            key_tokens=settings.ephemeral_key_tokens,
        )


# ---- each feature's contribution: None when its settings leave it off -----------------


def kill_switch(deployment: Deployment) -> Contribution | None:
    if deployment.status is None:
        return None
    return Contribution(before_body=(KillSwitch(deployment.status),))


def token_scopes(deployment: Deployment) -> Contribution | None:
    return Contribution(
        after_body=(Authorize(),), strict_json=bool(deployment.settings.token_store)
    )


def ephemeral_keys(deployment: Deployment) -> Contribution:
    # Ephemeral keys (core/realtime/minting.py): refused unless allowed; their ticket comes
    # before the limits' and the budget's, which keep the charge it sets.
    settings = deployment.settings
    if not settings.allow_ephemeral_keys:
        return Contribution(before_body=(EphemeralKeysOff(),))
    from core.realtime.minting import EphemeralKeys

    return Contribution(after_body=(EphemeralKeys(settings.ephemeral_key_tokens),))


def meterable_routes_only(deployment: Deployment) -> Contribution | None:
    config = deployment.config
    capped = []
    if config.rate_limit_tokens:
        capped.append("RATE_LIMIT_TOKENS")
    if deployment.settings.usage.budgets_on:
        capped.append("BUDGET_*")
    if not capped:
        return None
    return Contribution(before_body=(MeterableRoutesOnly(", ".join(capped)),))


def request_policy(deployment: Deployment) -> Contribution | None:
    config = deployment.config
    if not config.policy_on:
        return None
    from core.access.policy import RequestPolicy

    policy = RequestPolicy(
        allowed_models=config.allowed_models,
        max_tokens_cap=config.max_tokens_cap,
        max_messages=config.max_messages,
    )
    return Contribution(after_body=(policy,), strict_json=True)


def rate_limits(deployment: Deployment) -> Contribution | None:
    config = deployment.config
    if not config.limits_on:
        return None
    from core.access.limits import RateLimiter, RequestLimit, TokenLimit

    limiter = RateLimiter(
        deployment.limit_store,
        requests=config.rate_limit_requests,
        tokens=config.rate_limit_tokens,
        window=config.rate_limit_window,
        fail_open=config.limits_on_store_error == "open",
        timeout=deployment.settings.store_timeout,
    )
    after: tuple[Check, ...] = ()
    if config.rate_limit_tokens:
        after = (TokenLimit(limiter, deployment.estimate),)
    return Contribution(before_body=(RequestLimit(limiter),), after_body=after, strict_json=True)


def budgets(deployment: Deployment) -> Contribution | None:
    config = deployment.settings.usage
    # A stored token may carry its own budget (`tokens create --budget-usd`).
    if not (config.budgets_on or deployment.settings.token_store):
        return None
    from core.usage.budget import Budget

    budget = Budget(
        deployment.limit_store,
        deployment.prices,
        deployment.estimate,
        per_caller_usd=config.budget_per_caller_usd,
        total_usd=config.budget_total_usd,
        window=config.budget_window,
        timeout=deployment.settings.store_timeout,
    )
    return Contribution(
        after_body=(budget,),
        strict_json=deployment.config.enabled or config.budgets_on,
        budget=budget,
    )


def announce_limits(deployment: Deployment) -> Contribution | None:
    if deployment.config.limits_on or deployment.settings.usage.budgets_on:
        _log_limits(deployment.settings)
    return None


def response_cache(deployment: Deployment) -> Contribution | None:
    settings = deployment.settings
    if not settings.cache.on:
        return None
    from core.cache.check import ResponseCache

    _log_cache(settings)
    # The cache keys on the parsed body: a field named twice must not let two bodies
    # an upstream reads differently share one entry.
    cache = ResponseCache.from_settings(settings.cache, deployment.stores)
    return Contribution(after_body=(cache,), strict_json=True)


def usage_ledger(deployment: Deployment) -> Contribution | None:
    if deployment.ledger is None:
        return None
    settings = deployment.settings
    record = RecordUsage(deployment.ledger, prices_of(settings), settings.store_timeout)
    return Contribution(settlers=(record,))


# The features in stage order: within each list of checks (head, body), a feature's
# checks run after those of the features above it. Ephemeral keys come before the
# limits and the budget, which keep the charge their ticket sets; the cache comes last,
# so a hit has passed every rule and still counts as a request.
FEATURES: tuple[Callable[[Deployment], Contribution | None], ...] = (
    kill_switch,
    token_scopes,
    ephemeral_keys,
    meterable_routes_only,
    request_policy,
    rate_limits,
    budgets,
    announce_limits,
    response_cache,
    usage_ledger,
)


def build_pipeline(
    settings: Settings,
    token_check: TokenCheck,
    stores: StoreSet,
    *,
    status: ServiceStatus | None = None,
    ledger: UsageLedger | None = None,
    telemetry: Callable[[ProxyRequest, Outcome], Awaitable[None]] | None = None,
    telemetry_meters: bool = False,
) -> tuple[Pipeline, Budget | None]:
    """The stages of this deployment: each feature's contribution, joined in order."""
    deployment = Deployment(settings, stores, status, ledger)
    before: list[Check] = []
    after: list[Check] = []
    settlers: list[Settler] = []
    # The token's scopes or a guard rule decide on the body's fields: parsed strictly.
    strict_json = settings.guard.enabled
    budget = None
    for feature in FEATURES:
        contribution = feature(deployment)
        if contribution is None:
            continue
        before.extend(contribution.before_body)
        after.extend(contribution.after_body)
        settlers.extend(contribution.settlers)
        strict_json = strict_json or contribution.strict_json
        budget = contribution.budget or budget
    meter_every_reply = bool(settlers) or telemetry_meters
    if telemetry is not None:
        settlers.append(telemetry)  # last: it reads the cost the ledger's settler priced
    pipeline = Pipeline(
        identify=build_identify(settings, token_check),
        before_body=tuple(before),
        after_body=tuple(after),
        settlers=tuple(settlers),
        meter_every_reply=meter_every_reply,
        strict_json=strict_json,
        status=status,
    )
    return pipeline, budget


def _log_limits(settings: Settings) -> None:
    config = settings.guard
    usage = settings.usage
    scheme = config.limit_store.partition("://")[0]
    logger.info(
        "limits: %s requests, %s tokens per %gs per caller; budgets: %s per caller, %s in all "
        "per %s; counted in %s; if that store is unreachable: fail-%s",
        config.rate_limit_requests or "no limit on",
        config.rate_limit_tokens or "no limit on",
        config.rate_limit_window,
        f"${usage.budget_per_caller_usd:g}" if usage.budget_per_caller_usd else "no limit",
        f"${usage.budget_total_usd:g}" if usage.budget_total_usd else "no limit",
        usage.budget_window,
        scheme,
        config.limits_on_store_error,
    )
    if scheme == "memory" and detect_platform(os.environ) in ("aws", "vercel", "cloud-run"):
        logger.warning(
            "limits are counted in memory: each function instance keeps its own "
            "count; set LIMIT_STORE (or TOKEN_STORE) to DynamoDB or Redis"
        )


def _log_cache(settings: Settings) -> None:
    cache = settings.cache
    scheme = cache.url.partition("://")[0]
    logger.info(
        "response cache: %s, entries kept %gs, scope %s, %s requests cached",
        scheme,
        cache.ttl_seconds,
        cache.scope,
        "all" if cache.nondeterministic else "deterministic (temperature 0)",
    )
    if scheme == "memory" and detect_platform(os.environ) in ("aws", "vercel", "cloud-run"):
        logger.warning(
            "the response cache is in memory: each function instance keeps its own; set "
            "CACHE_URL to DynamoDB or Redis to share it"
        )
