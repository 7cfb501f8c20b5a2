"""Each feature builds its part of the stages from its own package, and a deployment that
does not turn a rule on never imports the rule's module (cold start)."""

from __future__ import annotations

import pytest

from tests.support.imports import modules_imported

ENV = {
    "UPSTREAM_BASE_URL": "https://api.openai.com/v1",
    "UPSTREAM_API_KEY": "fake-upstream-key-000000",
    "PROXY_ACCESS_TOKEN": "fake-caller-token-000000",
}

# Each rule's module, and a setting that turns the rule on.
RULES = {
    "core.access.jwt_auth": {
        "JWT_JWKS_URL": "https://issuer.example/jwks.json",
        "JWT_ISSUER": "https://issuer.example",
    },
    "core.access.policy": {"ALLOWED_MODELS": "gpt-4o-mini"},
    "core.access.limits": {"RATE_LIMIT_REQUESTS": "10"},
    "core.access.status": {"ADMIN_TOKEN": "fake-admin-token-0123456789abcdef"},
    "core.usage.budget": {"BUDGET_TOTAL_USD": "5"},
    "core.cache.check": {"CACHE_URL": "memory"},
    "core.realtime.minting": {"ALLOW_EPHEMERAL_KEYS": "true"},
    # Stored tokens' records and lookups: only with a token store.
    "core.access.tokens": {"TOKEN_STORE": "memory://"},
    "core.token_record": {"TOKEN_STORE": "memory://"},
    # The price table: only where something prices a request.
    "core.usage.prices": {"BUDGET_TOTAL_USD": "5"},
}


def modules_loaded_building_the_app(settings: dict[str, str]) -> set[str]:
    return modules_imported("handlers.http", {**ENV, **settings})


def test_nothing_configured_loads_no_rule_module() -> None:
    loaded = modules_loaded_building_the_app({})
    assert not loaded & set(RULES)


@pytest.mark.parametrize("module", sorted(RULES))
def test_a_rule_turned_on_is_loaded(module: str) -> None:
    # The other half: the first test passes because the rules are off, not because the
    # module names above went stale.
    assert module in modules_loaded_building_the_app(RULES[module])
