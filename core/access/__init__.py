"""Who may call: credentials, tokens, JWT, scopes, policy, request limits, the kill switch.

Each rule's part of the stages is built here from the deployment's settings, and is None
when they leave it off; a rule's module (and PyJWT, a store client) loads only when its
setting turns it on. core/app.py lists these in stage order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.stages import Contribution

if TYPE_CHECKING:
    from core.access.limits import RateLimiter
    from core.access.status import ServiceStatus
    from core.stages import Deployment


def service_status(deployment: Deployment) -> ServiceStatus | None:
    """The kill switch and schedule, where someone can throw it: the dashboard, or a shared
    token store. One per deployment: the dashboard sets what the stages read."""
    return deployment.shared(_service_status)


def _service_status(deployment: Deployment) -> ServiceStatus | None:
    settings = deployment.settings
    if not (settings.admin_token or settings.token_store):
        return None
    from core.access.status import ServiceStatus

    store = deployment.token_store or deployment.stores.open("memory://")
    return ServiceStatus(store, settings.token_cache_seconds)


def kill_switch(deployment: Deployment) -> Contribution | None:
    status = service_status(deployment)
    if status is None:
        return None
    from core.access.status import KillSwitch

    return Contribution(before_body=(KillSwitch(status),))


def account_routes(deployment: Deployment) -> Contribution | None:
    """Routes to objects stored in the shared provider account: refused to every caller
    under ACCOUNT_ROUTES=refuse, to signed-in users and anonymous callers unless
    ACCOUNT_ROUTES=allow (they exist only with JWT_JWKS_URL or ALLOW_ANONYMOUS), and to
    scoped tokens (which exist only with a store)."""
    settings = deployment.settings
    guard = settings.guard
    refuse = guard.account_routes == "refuse"
    end_users = guard.account_routes != "allow" and (
        bool(guard.jwt_jwks_url) or guard.allow_anonymous
    )
    if not (refuse or end_users or settings.token_store):
        return None
    from core.access.account_routes import AccountRoutes

    return Contribution(before_body=(AccountRoutes(refuse, refuse_end_users=end_users),))


def token_scopes(deployment: Deployment) -> Contribution:
    from core.access.model_lists import ModelLists
    from core.access.scopes import Authorize

    # Model lists and lookups first: a lookup of a model the token (or ALLOWED_MODELS)
    # refuses is a 404, as a model that does not exist, not Authorize's 403 (Gemini's
    # `/models/{name}` names its model in the path).
    lists = ModelLists(deployment.settings.guard.allowed_models)
    return Contribution(
        after_body=(lists, Authorize()), strict_json=bool(deployment.settings.token_store)
    )


def request_policy(deployment: Deployment) -> Contribution | None:
    config = deployment.settings.guard
    if not config.policy_on:
        return None
    from core.access.policy import RequestPolicy

    policy = RequestPolicy(
        allowed_models=config.allowed_models,
        max_tokens_cap=config.max_tokens_cap,
        max_messages=config.max_messages,
    )
    return Contribution(after_body=(policy,), strict_json=True)


def rate_limiter(deployment: Deployment) -> RateLimiter:
    """One counter for the request limit and the token limit (core/usage `token_limits`)."""
    return deployment.shared(_rate_limiter)


def _rate_limiter(deployment: Deployment) -> RateLimiter:
    from core.access.limits import RateLimiter

    config = deployment.settings.guard
    return RateLimiter(
        deployment.limit_store,
        requests=config.rate_limit_requests,
        tokens=config.rate_limit_tokens,
        window=config.rate_limit_window,
        fail_open=config.limits_on_store_error == "open",
        timeout=deployment.settings.store_timeout,
    )


def request_limits(deployment: Deployment) -> Contribution | None:
    if not deployment.settings.guard.limits_on:
        return None
    from core.access.limits import RequestLimit

    return Contribution(before_body=(RequestLimit(rate_limiter(deployment)),), strict_json=True)
