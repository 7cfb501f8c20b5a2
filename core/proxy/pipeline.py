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
from typing import TYPE_CHECKING

from core.access.client_ip import client_ip_rule, detect_platform
from core.access.identify import Identify
from core.errors import ProxyError
from core.proxy.endpoint import Pipeline
from core.proxy.stages import Authorize, Check, EphemeralKeysOff, MeterableRoutesOnly
from core.stores.calls import call_store_later

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from core.access.credentials import TokenCheck
    from core.access.status import ServiceStatus
    from core.config import Settings
    from core.proxy.request import ProxyRequest
    from core.proxy.stages import Outcome, Ticket
    from core.stores import StoreSet
    from core.usage.budget import Budget
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
    counts = config.limits_on or config.budgets_on or settings.cache.per_caller
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

    prices = settings.guard.model_prices
    return PriceTable(parse_prices(prices) if prices else None)


def _log_ledger_failure(done: asyncio.Future[None]) -> None:
    if not done.cancelled() and done.exception() is not None:
        logger.warning("usage ledger write failed: %s", type(done.exception()).__name__)


def build_pipeline(
    settings: Settings,
    token_check: TokenCheck,
    stores: StoreSet,
    *,
    status: ServiceStatus | None = None,
    ledger: UsageLedger | None = None,
    telemetry: Callable[[ProxyRequest, Outcome], Awaitable[None]] | None = None,
) -> tuple[Pipeline, Budget | None]:
    config = settings.guard
    before: list[Check] = []
    if status is not None:
        before.append(KillSwitch(status))
    after: list[Check] = [Authorize()]
    # Ephemeral keys (core/realtime/minting.py): refused unless allowed; their ticket comes
    # before the limits' and the budget's, which keep the charge it sets.
    if settings.allow_ephemeral_keys:
        from core.realtime.minting import EphemeralKeys

        after.append(EphemeralKeys(settings.ephemeral_key_tokens))
    else:
        before.append(EphemeralKeysOff())
    budget = None
    capped = []
    if config.rate_limit_tokens:
        capped.append("RATE_LIMIT_TOKENS")
    if config.budgets_on:
        capped.append("BUDGET_*")
    if capped:
        before.append(MeterableRoutesOnly(", ".join(capped)))
    if config.policy_on:
        from core.access.policy import RequestPolicy

        after.append(
            RequestPolicy(
                allowed_models=config.allowed_models,
                max_tokens_cap=config.max_tokens_cap,
                max_messages=config.max_messages,
            )
        )
    # A stored token may carry its own budget (`tokens create --budget-usd`).
    budgets = config.budgets_on or bool(settings.token_store)
    if config.limits_on or budgets:
        from core.usage.estimate import WorstCase

        store = stores.open(config.limit_store)
        prices = prices_of(settings)
        estimate = WorstCase(
            prices,
            config.max_tokens_cap,
            session_tokens=settings.realtime_reserve_tokens,
            key_tokens=settings.ephemeral_key_tokens,
        )
        if config.limits_on:
            from core.access.limits import RateLimiter, RequestLimit, TokenLimit

            limiter = RateLimiter(
                store,
                requests=config.rate_limit_requests,
                tokens=config.rate_limit_tokens,
                window=config.rate_limit_window,
                fail_open=config.limits_on_store_error == "open",
                timeout=settings.store_timeout,
            )
            before.append(RequestLimit(limiter))
            if config.rate_limit_tokens:
                after.append(TokenLimit(limiter, estimate))
        if budgets:
            from core.usage.budget import Budget

            budget = Budget(
                store,
                prices,
                estimate,
                per_caller_usd=config.budget_per_caller_usd,
                total_usd=config.budget_total_usd,
                window=config.budget_window,
                timeout=settings.store_timeout,
            )
            after.append(budget)
        if config.limits_on or config.budgets_on:
            _log_limits(settings)
    if settings.cache.on:
        from core.cache.check import ResponseCache

        # Last: a hit must have passed every rule, and still counts as a request.
        after.append(ResponseCache.from_settings(settings.cache, stores))
        _log_cache(settings)
    pipeline = Pipeline(
        identify=build_identify(settings, token_check),
        before_body=tuple(before),
        after_body=tuple(after),
        settlers=tuple(
            settler
            for settler in (
                RecordUsage(ledger, prices_of(settings), settings.store_timeout)
                if ledger is not None
                else None,
                # Last: it reads the cost the ledger's settler priced.
                telemetry,
            )
            if settler is not None
        ),
        # The cache keys on the parsed body: a field named twice must not let two bodies
        # an upstream reads differently share one entry.
        strict_json=bool(settings.token_store) or config.enabled or settings.cache.on,
    )
    return pipeline, budget


def _log_limits(settings: Settings) -> None:
    config = settings.guard
    scheme = config.limit_store.partition("://")[0]
    logger.info(
        "limits: %s requests, %s tokens per %gs per caller; budgets: %s per caller, %s in all "
        "per %s; counted in %s; if that store is unreachable: fail-%s",
        config.rate_limit_requests or "no limit on",
        config.rate_limit_tokens or "no limit on",
        config.rate_limit_window,
        f"${config.budget_per_caller_usd:g}" if config.budget_per_caller_usd else "no limit",
        f"${config.budget_total_usd:g}" if config.budget_total_usd else "no limit",
        config.budget_window,
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
