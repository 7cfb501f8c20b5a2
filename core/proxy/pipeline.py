"""Which stages a deployment runs, decided once at start from its settings.

Nothing configured: the token check alone, no admission rules, no meter. Each setting
adds its rule; heavy modules (PyJWT, store clients) load only when a rule needs them.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from core.access.client_ip import client_ip_rule, detect_platform
from core.access.identify import Identify
from core.proxy.endpoint import Pipeline
from core.proxy.stages import Authorize, Check, MeterableRoutesOnly

if TYPE_CHECKING:
    from core.access.credentials import TokenCheck
    from core.config import Settings
    from core.usage.budget import Budget

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


def build_pipeline(settings: Settings, token_check: TokenCheck) -> tuple[Pipeline, Budget | None]:
    config = settings.guard
    before: list[Check] = []
    after: list[Check] = [Authorize()]
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
    if config.limits_on or config.budgets_on:
        from core.stores import open_store
        from core.usage.estimate import WorstCase
        from core.usage.prices import PriceTable, parse_prices

        store = open_store(config.limit_store)
        prices = PriceTable(parse_prices(config.model_prices) if config.model_prices else None)
        estimate = WorstCase(prices, config.max_tokens_cap)
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
        if config.budgets_on:
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
        _log_limits(settings)
    if settings.cache.on:
        from core.cache.check import ResponseCache

        # Last: a hit must have passed every rule, and still counts as a request.
        after.append(ResponseCache.from_settings(settings.cache))
        _log_cache(settings)
    pipeline = Pipeline(
        identify=build_identify(settings, token_check),
        before_body=tuple(before),
        after_body=tuple(after),
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
