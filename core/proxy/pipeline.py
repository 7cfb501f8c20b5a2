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
from core.proxy.stages import Authorize, Check, MeterableRoutesOnly

if TYPE_CHECKING:
    from core.access.credentials import TokenCheck
    from core.access.status import ServiceStatus
    from core.config import Settings
    from core.proxy.request import ProxyRequest
    from core.proxy.stages import Outcome, Ticket
    from core.stores import StoreSet
    from core.usage.budget import Budget
    from core.usage.ledger import UsageLedger

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
    # counts them.
    counts = config.limits_on or config.budgets_on
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

    def __init__(self, ledger: UsageLedger) -> None:
        self.ledger = ledger

    async def __call__(self, request: ProxyRequest, outcome: Outcome) -> None:
        if not outcome.billable or request.route.kind not in ("metered", "minting"):
            return
        from core.usage.ledger import UsageEntry

        usage = outcome.usage
        try:
            model = await request.model()
        except ProxyError:
            model = None
        entry = UsageEntry(
            caller=request.counted_as,
            provider=request.provider.name,
            model=model or "",
            input_tokens=usage.input_tokens if usage else 0,
            output_tokens=usage.output_tokens if usage else 0,
            cached_input_tokens=usage.cached_input_tokens if usage else 0,
            cost_usd=outcome.cost_usd or 0.0,
        )
        store = self.ledger.store
        try:
            if store.blocking:
                await asyncio.to_thread(self.ledger.record, entry)
            else:
                self.ledger.record(entry)
        except Exception as exc:  # bookkeeping: the reply has been served
            logger.warning("usage ledger write failed: %s", type(exc).__name__)


def build_pipeline(
    settings: Settings,
    token_check: TokenCheck,
    stores: StoreSet,
    *,
    status: ServiceStatus | None = None,
    ledger: UsageLedger | None = None,
) -> tuple[Pipeline, Budget | None]:
    config = settings.guard
    before: list[Check] = []
    if status is not None and (settings.admin_token or settings.token_store):
        # Only an admin or a shared store can switch the proxy off; otherwise no check.
        before.append(KillSwitch(status))
    after: list[Check] = [Authorize()]
    # Ephemeral keys (core/realtime/minting.py): refused unless allowed; their ticket comes
    # before the limits' and the budget's, which keep the charge it sets.
    if settings.allow_ephemeral_keys:
        from core.realtime.minting import EphemeralKeys

        after.append(EphemeralKeys(settings.ephemeral_key_tokens))
    else:
        from core.realtime.minting import EphemeralKeysOff

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
        from core.usage.prices import PriceTable, parse_prices

        store = stores.open(config.limit_store)
        prices = PriceTable(parse_prices(config.model_prices) if config.model_prices else None)
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
            )
            after.append(budget)
        if config.limits_on or config.budgets_on:
            _log_limits(settings)
    pipeline = Pipeline(
        identify=build_identify(settings, token_check),
        before_body=tuple(before),
        after_body=tuple(after),
        settlers=(RecordUsage(ledger),) if ledger is not None else (),
        strict_json=bool(settings.token_store) or config.enabled,
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
