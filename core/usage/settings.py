"""Spend caps and prices (BUDGET_*, MODEL_PRICES), read once with the rest (core/config.py).

Off unless a budget is set. This module imports nothing heavy: it runs at every cold start.
"""

from __future__ import annotations

from collections.abc import Mapping

from core.env import read_settings, setting
from core.records import Record

# The price bounds, written once (bounds.py): the price table itself loads only when used.
from core.usage.bounds import MAX_INPUT_LIMIT, MAX_OUTPUT_LIMIT, MAX_RATE_USD

# A budget or a price past these is a typo or a test of the parser, not a plan: refused at
# start rather than multiplied into every request's reservation.
MAX_BUDGET_USD = 10_000_000.0
BUDGET_WINDOWS = ("day", "month")


class UsageSettings(Record):
    """Spend budgets (per caller, in total, their window) and model prices."""

    budget_per_caller_usd: float = setting(
        "BUDGET_PER_CALLER_USD",
        0.0,
        "Spend cap per caller (stored token, JWT user, else client IP) per window; 0 = none.",
        low=0,
        high=MAX_BUDGET_USD,
        zero_is_off=True,
        unit="USD",
    )
    budget_total_usd: float = setting(
        "BUDGET_TOTAL_USD",
        0.0,
        "Spend cap for the whole deployment per window; 0 = none.",
        low=0,
        high=MAX_BUDGET_USD,
        zero_is_off=True,
        unit="USD",
    )
    budget_window: str = setting(
        "BUDGET_WINDOW",
        "day",
        "The UTC calendar window budgets count over: day or month.",
        choices=BUDGET_WINDOWS,
    )
    # Kept as given (JSON) and parsed where the price table is built (core/usage/prices.py);
    # checked here at start, so a bad table never reaches a request.
    model_prices: str = setting(
        "MODEL_PRICES",
        "",
        "Prices in USD per 1M tokens (JSON, `*` wildcards), matched before the built-in "
        'table, e.g. `{"my-model-*": {"input": 3, "output": 12, "cached_input": 1.5}}`; '
        f"rates from 0 to {MAX_RATE_USD:,.0f}; max_output (tokens, at most "
        f"{MAX_OUTPUT_LIMIT:,}), max_input (the context window, reserved for a request "
        f"that names input it does not carry; at most {MAX_INPUT_LIMIT:,}), cache_write and "
        "cache_write_1h (cache-write rates), long_context (prompt tokens past which "
        "long_input and long_output rates apply), audio_input and audio_output (audio "
        "token rates) optional.",
        custom=True,
        shown_default="built-in table only",
    )

    @property
    def budgets_on(self) -> bool:
        return self.budget_per_caller_usd > 0 or self.budget_total_usd > 0


def parse_usage_settings(env: Mapping[str, str], problems: list[str]) -> UsageSettings:
    """Read BUDGET_* and MODEL_PRICES, appending one sentence per problem."""
    model_prices = env.get("MODEL_PRICES", "").strip()
    if model_prices:
        from core.usage.prices import PriceError, parse_prices

        try:
            parse_prices(model_prices)
        except PriceError as exc:
            problems.append(str(exc))
    return read_settings(UsageSettings, env, problems, model_prices=model_prices)
