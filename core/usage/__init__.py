"""Usage: the meter, the usage-chunk splice, prices, budgets, token limits and the ledger.

Each part of the stages is built here from the deployment's settings, and is None when they
leave it off; its module loads only when its setting turns it on. core/app.py lists these
in stage order. The price table, the worst-case estimate and the budget are made once per
deployment (`Deployment.shared`): the token limit and the budget reserve with one estimate,
and the usage report reads the budget the stages charge.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from core.env import detect_platform
from core.stages import Contribution

if TYPE_CHECKING:
    from core.config import Settings
    from core.stages import Deployment
    from core.usage.budget import Budget
    from core.usage.estimate import WorstCase
    from core.usage.ledger import UsageLedger
    from core.usage.prices import PriceTable

logger = logging.getLogger("llm_proxy")


def usage_ledger(deployment: Deployment) -> UsageLedger | None:
    """The ledger, kept where someone can read it: the dashboard, or a shared store."""
    return deployment.shared(_usage_ledger)


def _usage_ledger(deployment: Deployment) -> UsageLedger | None:
    settings = deployment.settings
    if not (settings.admin_token or settings.usage_store != "memory://"):
        return None
    from core.usage.ledger import UsageLedger

    return UsageLedger(deployment.stores.open(settings.usage_store))


def price_table(deployment: Deployment) -> PriceTable:
    return deployment.shared(_prices)


def _prices(deployment: Deployment) -> PriceTable:
    from core.usage.prices import PriceTable, parse_prices

    table = deployment.settings.usage.model_prices
    return PriceTable(parse_prices(table) if table else None)


def worst_case(deployment: Deployment) -> WorstCase:
    return deployment.shared(_worst_case)


def _worst_case(deployment: Deployment) -> WorstCase:
    from core.usage.estimate import WorstCase

    settings = deployment.settings
    return WorstCase(
        price_table(deployment),
        settings.guard.max_tokens_cap,
        session_tokens=settings.realtime_reserve_tokens,
        key_tokens=settings.ephemeral_key_tokens,
    )


def spending_budget(deployment: Deployment) -> Budget | None:
    """The dollar budget, where one can apply: BUDGET_*, or a stored token's own
    (`tokens create --budget-usd`)."""
    return deployment.shared(_budget)


def _budget(deployment: Deployment) -> Budget | None:
    settings = deployment.settings
    config = settings.usage
    if not (config.budgets_on or settings.token_store):
        return None
    from core.usage.budget import Budget

    return Budget(
        deployment.limit_store,
        price_table(deployment),
        worst_case(deployment),
        per_caller_usd=config.budget_per_caller_usd,
        total_usd=config.budget_total_usd,
        window=config.budget_window,
        timeout=settings.store_timeout,
    )


def meterable_routes_only(deployment: Deployment) -> Contribution | None:
    capped = []
    if deployment.settings.guard.rate_limit_tokens:
        capped.append("RATE_LIMIT_TOKENS")
    if deployment.settings.usage.budgets_on:
        capped.append("BUDGET_*")
    if not capped:
        return None
    from core.usage.caps import MeterableRoutesOnly, ReadableBodiesOnly

    named = ", ".join(capped)
    return Contribution(
        before_body=(MeterableRoutesOnly(named),), after_body=(ReadableBodiesOnly(named),)
    )


def token_limits(deployment: Deployment) -> Contribution | None:
    """RATE_LIMIT_TOKENS: the worst case reserved in the request limit's counter."""
    if not deployment.settings.guard.rate_limit_tokens:
        return None
    from core.access import rate_limiter
    from core.access.limits import TokenLimit

    limit = TokenLimit(rate_limiter(deployment), worst_case(deployment))
    return Contribution(after_body=(limit,), strict_json=True)


def budgets(deployment: Deployment) -> Contribution | None:
    found = spending_budget(deployment)
    if found is None:
        return None
    settings = deployment.settings
    return Contribution(
        after_body=(found,), strict_json=settings.guard.enabled or settings.usage.budgets_on
    )


def announce_limits(deployment: Deployment) -> Contribution | None:
    settings = deployment.settings
    if settings.guard.limits_on or settings.usage.budgets_on:
        _log_limits(settings)
    return None


def record_usage(deployment: Deployment) -> Contribution | None:
    ledger = usage_ledger(deployment)
    if ledger is None:
        return None
    from core.usage.ledger import RecordUsage

    record = RecordUsage(ledger, price_table(deployment), deployment.settings.store_timeout)
    return Contribution(settlers=(record,))


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
