"""Model prices in US dollars per million tokens, for dollar budgets.

The built-in table covers the common models of the catalogue's providers (list prices,
standard tier, short-context rates). A built-in entry prices its model and that model's
snapshots (`-2024-07-18`, `-20250929`, `-001`, `-latest`, `-preview-05-20`) only, never
another variant of the name: `o1-pro` costs ten times `o1`, `gpt-4o-audio-preview` bills
audio at many times `gpt-4o`'s text, `gemini-2.5-flash-image-preview` writes images at
twelve times `gemini-2.5-flash`'s output; priced as their base they spent many dollars for
each one a budget counted. `MODEL_PRICES` (JSON, `*` wildcards, as the operator means
them) adds entries or replaces built-in ones, e.g. `{"fake-*": {"input": 10, "output":
100}}`; its entries are matched first. A model matching no entry has no price: under a
dollar budget it is refused, never counted as free or as a cheaper model.
"""

from __future__ import annotations

import fnmatch
import json
import re
from typing import NamedTuple

from core.protocols import Usage

# Written in bounds.py (the settings read them without loading this table).
from core.usage.bounds import (
    DEFAULT_MAX_INPUT,
    DEFAULT_MAX_OUTPUT,
    MAX_INPUT_LIMIT,
    MAX_OUTPUT_LIMIT,
    MAX_RATE_USD,
)


class Price(NamedTuple):
    """US dollars per million tokens of one model, and its longest answer."""

    input: float
    output: float
    cached_input: float | None = None
    # The most output tokens one answer can have: the worst case a reservation assumes.
    max_output: int = DEFAULT_MAX_OUTPUT
    # The model's context window: the prompt a reservation assumes when the request names
    # input it does not carry (a previous response, a file, a URL).
    max_input: int = DEFAULT_MAX_INPUT
    # Cache writes (Anthropic): five-minute and one-hour rates; None: the input rate.
    cache_write: float | None = None
    cache_write_1h: float | None = None
    # Past `long_context` prompt tokens the whole request bills at the long rates (Gemini
    # 2.5 Pro, Claude Sonnet 4's 1M window); cached reads and writes scale alike. 0: none.
    long_context: int = 0
    long_input: float | None = None
    long_output: float | None = None
    # Audio input and output (Gemini's audio prompts, OpenAI's audio and realtime models);
    # None: the text rate.
    audio_input: float | None = None
    audio_output: float | None = None

    def worst_cost_usd(self, usage: Usage) -> float:
        """What `usage` may cost when its parts are not known yet (a reservation, a reply
        whose usage could not be read): every input token at the dearest input rate the
        price bills (a one-hour cache write, audio) and every output token at the dearest
        output rate, at the long rates when the input passes `long_context`."""
        long = bool(self.long_context) and usage.input_tokens > self.long_context
        base_in = self.long_input if long and self.long_input is not None else self.input
        scale = base_in / self.input if self.input else 1.0
        extra = (self.cache_write, self.cache_write_1h, self.audio_input)
        input_rate = max([base_in, *(rate * scale for rate in extra if rate is not None)])
        output_rate = self.long_output if long and self.long_output is not None else self.output
        if self.audio_output is not None:
            output_rate = max(output_rate, self.audio_output)
        return (usage.input_tokens * input_rate + usage.output_tokens * output_rate) / 1_000_000

    def cost_usd(self, usage: Usage) -> float:
        input_rate, output_rate, scale = self.input, self.output, 1.0
        if self.long_context and usage.input_tokens > self.long_context:
            if self.long_input is not None:
                input_rate = self.long_input
                scale = self.long_input / self.input if self.input else 1.0
            if self.long_output is not None:
                output_rate = self.long_output
        cached_rate = (self.input if self.cached_input is None else self.cached_input) * scale
        write_rate = (self.input if self.cache_write is None else self.cache_write) * scale
        write_1h_rate = write_rate if self.cache_write_1h is None else self.cache_write_1h * scale
        # Each dearer or cheaper part is bounded by what the input holds (a reply cannot
        # make tokens cheaper by reporting more cached tokens than it read).
        left = usage.input_tokens
        cached = min(usage.cached_input_tokens, left)
        left -= cached
        writes = min(usage.cache_write_tokens, left)
        left -= writes
        writes_1h = min(usage.cache_write_1h_tokens, left)
        left -= writes_1h
        audio_in = min(usage.audio_input_tokens, left)
        left -= audio_in
        audio_in_rate = (self.input if self.audio_input is None else self.audio_input) * scale
        audio_out = min(usage.audio_output_tokens, usage.output_tokens)
        audio_out_rate = output_rate if self.audio_output is None else self.audio_output
        return (
            left * input_rate
            + cached * cached_rate
            + writes * write_rate
            + writes_1h * write_1h_rate
            + audio_in * audio_in_rate
            + (usage.output_tokens - audio_out) * output_rate
            + audio_out * audio_out_rate
        ) / 1_000_000


# Models priced alike (Anthropic's 4 and 4.x of one size).
_OPUS_4 = Price(15.0, 75.0, 1.50, 32_000, max_input=200_000, cache_write=18.75, cache_write_1h=30)
_SONNET_4 = Price(
    3.0,
    15.0,
    0.30,
    64_000,
    max_input=1_000_000,
    cache_write=3.75,
    cache_write_1h=6,
    long_context=200_000,
    long_input=6.0,
    long_output=22.5,
)

# Each key is a model name, not a pattern: it prices that model and its snapshots
# (_SNAPSHOT), nothing else.
BUILT_IN: dict[str, Price] = {
    # OpenAI
    "gpt-5": Price(1.25, 10.0, 0.125, 128_000, max_input=272_000),
    "gpt-5-chat": Price(1.25, 10.0, 0.125, 16_384, max_input=128_000),
    "gpt-5-codex": Price(1.25, 10.0, 0.125, 128_000, max_input=272_000),
    "gpt-5-mini": Price(0.25, 2.0, 0.025, 128_000, max_input=272_000),
    "gpt-5-nano": Price(0.05, 0.40, 0.005, 128_000, max_input=272_000),
    "gpt-4.1": Price(2.0, 8.0, 0.50, 32_768, max_input=1_047_576),
    "gpt-4.1-mini": Price(0.40, 1.60, 0.10, 32_768, max_input=1_047_576),
    "gpt-4.1-nano": Price(0.10, 0.40, 0.025, 32_768, max_input=1_047_576),
    "gpt-4o": Price(2.50, 10.0, 1.25, 16_384, max_input=128_000),
    "gpt-4o-mini": Price(0.15, 0.60, 0.075, 16_384, max_input=128_000),
    # The first gpt-4o snapshot bills its launch rates (and no cached rate), not gpt-4o's.
    "gpt-4o-2024-05-13": Price(5.0, 15.0, None, 4_096, max_input=128_000),
    "o1": Price(15.0, 60.0, 7.50, 100_000, max_input=200_000),
    "o1-mini": Price(1.10, 4.40, 0.55, 65_536, max_input=128_000),
    "o3": Price(2.0, 8.0, 0.50, 100_000, max_input=200_000),
    "o3-mini": Price(1.10, 4.40, 0.55, 100_000, max_input=200_000),
    "o4-mini": Price(1.10, 4.40, 0.275, 100_000, max_input=200_000),
    "text-embedding-3-small": Price(0.02, 0.0, None, 0, max_input=8_192),
    "text-embedding-3-large": Price(0.13, 0.0, None, 0, max_input=8_192),
    "text-embedding-ada-002": Price(0.10, 0.0, None, 0, max_input=8_192),
    # Anthropic (cache reads at a tenth of the input price, writes at 1.25 and 2 times)
    "claude-opus-4-5": Price(
        5.0, 25.0, 0.50, 64_000, max_input=200_000, cache_write=6.25, cache_write_1h=10
    ),
    "claude-opus-4": _OPUS_4,
    "claude-opus-4-1": _OPUS_4,
    "claude-sonnet-4": _SONNET_4,
    "claude-sonnet-4-5": _SONNET_4,
    "claude-3-7-sonnet": Price(
        3.0, 15.0, 0.30, 64_000, max_input=200_000, cache_write=3.75, cache_write_1h=6
    ),
    "claude-3-5-sonnet": Price(
        3.0, 15.0, 0.30, 8_192, max_input=200_000, cache_write=3.75, cache_write_1h=6
    ),
    "claude-haiku-4-5": Price(
        1.0, 5.0, 0.10, 64_000, max_input=200_000, cache_write=1.25, cache_write_1h=2
    ),
    "claude-3-5-haiku": Price(
        0.80, 4.0, 0.08, 8_192, max_input=200_000, cache_write=1, cache_write_1h=1.6
    ),
    "claude-3-haiku": Price(
        0.25, 1.25, 0.03, 4_096, max_input=200_000, cache_write=0.3125, cache_write_1h=0.5
    ),
    # Gemini (2.5 Pro's prompts past 200k tokens at its long rates; Flash's audio dearer)
    "gemini-2.5-pro": Price(
        1.25,
        10.0,
        0.31,
        65_536,
        max_input=1_048_576,
        long_context=200_000,
        long_input=2.50,
        long_output=15.0,
    ),
    "gemini-2.5-flash": Price(0.30, 2.50, 0.075, 65_536, max_input=1_048_576, audio_input=1.0),
    "gemini-2.5-flash-lite": Price(
        0.10, 0.40, 0.025, 65_536, max_input=1_048_576, audio_input=0.30
    ),
    "gemini-2.0-flash": Price(0.10, 0.40, 0.025, 8_192, max_input=1_048_576, audio_input=0.70),
    "gemini-2.0-flash-lite": Price(0.075, 0.30, None, 8_192, max_input=1_048_576),
    # DeepSeek
    "deepseek-chat": Price(0.27, 1.10, 0.07, 8_192, max_input=128_000),
    "deepseek-reasoner": Price(0.55, 2.19, 0.14, 65_536, max_input=128_000),
}


class PriceError(ValueError):
    """MODEL_PRICES is not a JSON object of {pattern: {input, output[, cached_input]}}."""


def _refuse_constant(name: str) -> float:
    # json.loads reads NaN, Infinity and -Infinity by default; no price is any of them.
    raise ValueError(name)


def parse_prices(text: str) -> dict[str, Price]:
    try:
        raw = json.loads(text, parse_constant=_refuse_constant)
    except ValueError:
        raise PriceError(
            "MODEL_PRICES must be JSON with finite numbers (no NaN or Infinity)"
        ) from None
    if not isinstance(raw, dict):
        raise PriceError("MODEL_PRICES must be a JSON object of model pattern -> prices")
    prices = {}
    for pattern, entry in raw.items():
        if not isinstance(entry, dict):
            raise PriceError(f"MODEL_PRICES[{pattern!r}] must be an object")
        try:
            prices[pattern] = Price(
                input=_rate(entry, "input"),
                output=_rate(entry, "output"),
                cached_input=_optional_rate(entry, "cached_input"),
                max_output=_whole(entry, "max_output", DEFAULT_MAX_OUTPUT, 0, MAX_OUTPUT_LIMIT),
                max_input=_whole(entry, "max_input", DEFAULT_MAX_INPUT, 1, MAX_INPUT_LIMIT),
                cache_write=_optional_rate(entry, "cache_write"),
                cache_write_1h=_optional_rate(entry, "cache_write_1h"),
                long_context=_whole(entry, "long_context", 0, 0, MAX_INPUT_LIMIT),
                long_input=_optional_rate(entry, "long_input"),
                long_output=_optional_rate(entry, "long_output"),
                audio_input=_optional_rate(entry, "audio_input"),
                audio_output=_optional_rate(entry, "audio_output"),
            )
        except (KeyError, TypeError, ValueError):
            raise PriceError(
                f"MODEL_PRICES[{pattern!r}] needs numbers: input and output (USD per 1M "
                f"tokens, 0 to {MAX_RATE_USD:g}), optionally cached_input, max_output "
                f"(a whole number of tokens, 0 to {MAX_OUTPUT_LIMIT}), max_input (the "
                f"context window, 1 to {MAX_INPUT_LIMIT}), cache_write and cache_write_1h "
                f"(rates), long_context (tokens) with long_input and long_output (rates), "
                f"audio_input and audio_output (rates)"
            ) from None
    return prices


def _rate(entry: dict[str, object], name: str) -> float:
    value = entry[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(name)
    if not 0 <= value <= MAX_RATE_USD:  # NaN fails this too
        raise ValueError(name)
    return float(value)


def _optional_rate(entry: dict[str, object], name: str) -> float | None:
    """A rate an entry may leave out (None: the rate it falls back to)."""
    return _rate(entry, name) if name in entry else None


def _whole(entry: dict[str, object], name: str, default: int, lowest: int, highest: int) -> int:
    """A token count: a whole number from `lowest` to `highest` (NaN and 1e400 are not)."""
    value = entry.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(name)
    if not lowest <= value <= highest or value != int(value):
        raise ValueError(name)
    return int(value)


def _specificity(pattern: str) -> tuple[bool, int]:
    # An exact name beats a pattern; a longer literal start beats a shorter one.
    star = pattern.find("*")
    return (star < 0, len(pattern) if star < 0 else star)


# What may follow a built-in model's name and still be that model: a date (OpenAI's
# 2024-07-18, Anthropic's 20250929), a Gemini version (001), latest, and preview or exp
# builds, dated or not (preview-05-20, preview-09-2025, exp-03-25).
_SNAPSHOT = re.compile(
    r"\d{4}-\d{2}-\d{2}|\d{8}|\d{3}|latest|(?:preview|exp)(?:-\d{2}-\d{2}|-\d{2}-\d{4})?"
)


def _built_in_match(model: str) -> Price | None:
    price = BUILT_IN.get(model)
    if price is not None:
        return price
    # The longest name the model extends by a snapshot suffix: gpt-4o-mini-2024-07-18 is
    # gpt-4o-mini's, and gpt-4o's only in name.
    name, sep, suffix = model, "-", ""
    while sep:
        name, sep, tail = name.rpartition("-")
        suffix = f"{tail}-{suffix}" if suffix else tail
        if sep and name in BUILT_IN and _SNAPSHOT.fullmatch(suffix):
            return BUILT_IN[name]
    return None


class PriceTable:
    def __init__(self, overrides: dict[str, Price] | None = None) -> None:
        self._overrides = sorted((overrides or {}).items(), key=lambda e: _specificity(e[0]))
        self._found: dict[str, Price | None] = {}

    def find(self, model: str | None) -> Price | None:
        if not model:
            return None
        if model in self._found:
            return self._found[model]
        price = self._match(self._overrides, model) or _built_in_match(model)
        if len(self._found) < 4096:
            self._found[model] = price
        return price

    @staticmethod
    def _match(entries: list[tuple[str, Price]], model: str) -> Price | None:
        for pattern, price in reversed(entries):
            if fnmatch.fnmatchcase(model, pattern):
                return price
        return None
