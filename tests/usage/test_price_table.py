"""MODEL_PRICES and the built-in table as a budget reads them: what a request costs (cached
tokens at their own rate, never more of them than the prompt), which entry prices a model
(an override before the built-in table, an exact name before a pattern, the longer literal
start first), and which tables the configuration refuses, with the message the operator
sees. A wrong figure here is money miscounted on every request."""

from __future__ import annotations

import pytest

from core.protocols import Usage
from core.usage.prices import (
    DEFAULT_MAX_OUTPUT,
    MAX_OUTPUT_LIMIT,
    MAX_RATE_USD,
    Price,
    PriceError,
    PriceTable,
    parse_prices,
)

A = Price(1.0, 1.0)
B = Price(2.0, 2.0)


class TestCost:
    def test_input_and_output_at_their_rates_per_million(self) -> None:
        price = Price(input=2.0, output=8.0)
        assert price.cost_usd(Usage(1_000_000, 1_000_000)) == pytest.approx(10.0, rel=1e-12)
        assert price.cost_usd(Usage(1_000, 0)) == pytest.approx(0.002, rel=1e-12)
        assert price.cost_usd(Usage(0, 1_000)) == pytest.approx(0.008, rel=1e-12)

    def test_cached_prompt_tokens_at_the_cached_rate(self) -> None:
        price = Price(input=10.0, output=100.0, cached_input=1.0)
        usage = Usage(input_tokens=1_000, output_tokens=10, cached_input_tokens=400)
        # 600 fresh at $10, 400 cached at $1, 10 out at $100, per million.
        assert price.cost_usd(usage) == pytest.approx((6_000 + 400 + 1_000) / 1e6, rel=1e-12)

    def test_without_a_cached_rate_cached_tokens_cost_the_input_rate(self) -> None:
        price = Price(input=10.0, output=0.0)
        usage = Usage(input_tokens=1_000, cached_input_tokens=400)
        assert price.cost_usd(usage) == pytest.approx(0.01, rel=1e-12)

    def test_more_cached_tokens_than_prompt_tokens_count_as_the_prompt(self) -> None:
        """A provider's report with cached > input must not make a request cost less than
        nothing (the fresh part negative) nor more than the whole prompt at the cached rate."""
        price = Price(input=10.0, output=0.0, cached_input=1.0)
        usage = Usage(input_tokens=100, cached_input_tokens=300)
        assert price.cost_usd(usage) == pytest.approx(100 / 1e6, rel=1e-12)


class TestParsePrices:
    def test_every_field_is_read_under_its_own_name(self) -> None:
        table = parse_prices(
            '{"m-*": {"input": 1, "output": 2.5, "cached_input": 0.5, "max_output": 100}}'
        )
        assert table == {"m-*": Price(1.0, 2.5, 0.5, 100)}

    def test_the_context_window_is_read_and_bounded(self) -> None:
        table = parse_prices('{"m": {"input": 1, "output": 2, "max_input": 200000}}')
        assert table["m"].max_input == 200_000
        assert parse_prices('{"m": {"input": 1, "output": 2}}')["m"].max_input == 2_097_152

    def test_cache_writes_and_long_prompts_have_rates_of_their_own(self) -> None:
        entry = (
            '{"m": {"input": 2, "output": 10, "cache_write": 2.5, "cache_write_1h": 4, '
            '"long_context": 1000, "long_input": 4, "long_output": 15}}'
        )
        price = parse_prices(entry)["m"]
        short = Usage(1000, 100, 0, 200, 300)
        assert price.cost_usd(short) == pytest.approx((500 * 2 + 200 * 2.5 + 300 * 4 + 1000) / 1e6)
        long = Usage(2000, 100, 0, 0, 1000)
        assert price.cost_usd(long) == pytest.approx((1000 * 4 + 1000 * 8 + 100 * 15) / 1e6)
        # A reply cannot make tokens cheaper than they are: parts beyond the input count
        # no more than the input.
        assert Price(1.0, 1.0).cost_usd(Usage(10, 0, 50, 50, 50)) == pytest.approx(10 / 1e6)

    def test_optional_fields_default(self) -> None:
        assert parse_prices('{"m": {"input": 1, "output": 2}}') == {
            "m": Price(1.0, 2.0, None, DEFAULT_MAX_OUTPUT)
        }

    @pytest.mark.parametrize(
        "entry",
        [
            f'{{"input": 0, "output": {MAX_RATE_USD:g}, "cached_input": 0, "max_output": 0}}',
            f'{{"input": {MAX_RATE_USD:g}, "output": 0, "max_output": {MAX_OUTPUT_LIMIT}}}',
            '{"input": 1, "output": 1, "max_output": 100.0}',
        ],
    )
    def test_the_bounds_themselves_are_accepted(self, entry: str) -> None:
        price = parse_prices(f'{{"m": {entry}}}')["m"]
        assert isinstance(price.max_output, int)

    @pytest.mark.parametrize(
        "entry",
        [
            '{"input": true, "output": 1}',
            '{"input": 1, "output": "2"}',
            '{"input": 1, "output": 1, "cached_input": false}',
            f'{{"input": {MAX_RATE_USD * 1.01:g}, "output": 1}}',
            '{"input": -0.01, "output": 1}',
            '{"input": 1, "output": 1, "max_output": true}',
            '{"input": 1, "output": 1, "max_output": "100"}',
            f'{{"input": 1, "output": 1, "max_output": {MAX_OUTPUT_LIMIT + 1}}}',
            '{"input": 1, "output": 1, "max_output": -1}',
            '{"input": 1, "output": 1, "max_output": 100.5}',
            '{"input": 1, "output": 1, "max_input": 0}',
            '{"input": 1, "output": 1, "cache_write_1h": -1}',
            '{"input": 1, "output": 1, "long_context": 1.5}',
            '{"input": 1, "output": 1, "max_input": "1000"}',
            '{"input": 1, "output": 1, "max_input": 100000001}',
            '{"output": 1}',
        ],
    )
    def test_a_bad_entry_is_refused_naming_the_pattern(self, entry: str) -> None:
        with pytest.raises(PriceError, match=r"^MODEL_PRICES\['m'\] needs numbers"):
            parse_prices(f'{{"m": {entry}}}')

    def test_nan_is_refused_even_in_a_field_the_proxy_does_not_read(self) -> None:
        with pytest.raises(PriceError, match=r"^MODEL_PRICES must be JSON with finite numbers"):
            parse_prices('{"m": {"input": 1, "output": 1, "note": NaN}}')

    def test_the_shape_is_refused_with_what_it_must_be(self) -> None:
        with pytest.raises(
            PriceError, match=r"^MODEL_PRICES must be a JSON object of model pattern -> prices$"
        ):
            parse_prices('[{"input": 1, "output": 1}]')
        with pytest.raises(PriceError, match=r"^MODEL_PRICES\['m'\] must be an object$"):
            parse_prices('{"m": 5}')


class TestWhichEntryPricesAModel:
    def test_an_exact_name_beats_a_pattern(self) -> None:
        table = PriceTable({"m-exact": B, "m-*": A})
        assert table.find("m-exact") is B
        assert table.find("m-other") is A

    def test_the_longer_literal_start_wins_wherever_the_pattern_goes_on(self) -> None:
        table = PriceTable({"abc*": B, "a*bcdef": A, "ab*c*": A})
        assert table.find("abcdef") is B

    def test_a_bare_wildcard_is_the_last_resort(self) -> None:
        table = PriceTable({"g*": B, "*": A, "*x": A})
        assert table.find("gx") is B
        assert table.find("hx") is A

    def test_an_override_beats_a_more_specific_built_in_entry(self) -> None:
        table = PriceTable({"gpt-4o*": A})
        assert table.find("gpt-4o-mini-2024-07-18") is A
        assert PriceTable().find("gpt-4o-mini-2024-07-18") == Price(
            0.15, 0.60, 0.075, 16_384, max_input=128_000
        )
        assert PriceTable({"other-*": A}).find("gpt-4o-2024-08-06") == Price(
            2.50, 10.0, 1.25, 16_384, max_input=128_000
        )

    def test_a_snapshot_billed_at_its_own_rates_is_not_its_bases(self) -> None:
        # gpt-4o-2024-05-13, the first gpt-4o, still bills $5 / $15 (no cached rate);
        # priced as gpt-4o ($2.50 / $10) a budget counted half its input and two thirds
        # of its output.
        assert PriceTable().find("gpt-4o-2024-05-13") == Price(
            5.0, 15.0, None, 4_096, max_input=128_000
        )
        assert PriceTable().find("gpt-4o-2024-11-20") == Price(
            2.50, 10.0, 1.25, 16_384, max_input=128_000
        )

    def test_a_model_asked_for_again_has_the_same_price(self) -> None:
        table = PriceTable({"m-*": A})
        assert table.find("m-1") is A
        assert table.find("m-1") is A  # from the table's memo
        assert table.find("unpriced") is None
        assert table.find("unpriced") is None

    @pytest.mark.parametrize("model", [None, ""])
    def test_no_model_has_no_price(self, model: str | None) -> None:
        assert PriceTable({"*": A}).find(model) is None


def test_the_worst_case_is_priced_at_the_dearest_rates() -> None:
    price = Price(
        3.0,
        15.0,
        0.3,
        cache_write=3.75,
        cache_write_1h=6.0,
        audio_output=40.0,
        long_context=1000,
        long_input=6.0,
        long_output=22.5,
    )
    assert price.worst_cost_usd(Usage(100, 10)) == pytest.approx((100 * 6 + 10 * 40) / 1e6)
    # Past long_context the long input rate scales the cache writes too.
    assert price.worst_cost_usd(Usage(2000, 10)) == pytest.approx((2000 * 12 + 10 * 40) / 1e6)
    assert Price(1.0, 2.0).worst_cost_usd(Usage(10, 10)) == Price(1.0, 2.0).cost_usd(Usage(10, 10))
