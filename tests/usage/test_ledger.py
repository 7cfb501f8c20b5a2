"""The usage ledger on every store backend: what is recorded is what the reports add up."""

from __future__ import annotations

import datetime
import threading

import pytest

from core.config import usage_store_url
from core.stores import open_store
from core.usage.ledger import UsageEntry, UsageLedger, usage_key

NOV_29 = datetime.datetime(2026, 11, 29, 12, tzinfo=datetime.UTC).timestamp()
NOV_30 = datetime.datetime(2026, 11, 30, 23, 59, tzinfo=datetime.UTC).timestamp()


def entry(caller: str, model: str, at: float, **amounts: float) -> UsageEntry:
    return UsageEntry(
        caller=caller,
        provider=str(amounts.pop("provider", "openai")),
        model=model,
        input_tokens=int(amounts.get("input_tokens", 10)),
        output_tokens=int(amounts.get("output_tokens", 5)),
        cached_input_tokens=int(amounts.get("cached_input_tokens", 0)),
        cost_usd=float(amounts.get("cost_usd", 0.0)),
        saved_tokens=int(amounts.get("saved_tokens", 0)),
        at=at,
    )


def test_rows_by_caller_model_and_day(store_url: str) -> None:
    ledger = UsageLedger(open_store(store_url))
    ledger.record(entry("token:tok_a", "gpt-4o", NOV_29, cost_usd=0.0125, cached_input_tokens=4))
    ledger.record(entry("token:tok_a", "gpt-4o", NOV_30, cost_usd=0.0125))
    ledger.record(entry("token:tok_a", "claude-3", NOV_30, provider="anthropic", saved_tokens=7))
    ledger.record(entry("ip:10.0.0.1", "gpt-4o", NOV_30, input_tokens=100, output_tokens=1))

    by_caller = {row.key: row for row in ledger.rows(by="caller")}
    assert set(by_caller) == {"token:tok_a", "ip:10.0.0.1"}
    tok = by_caller["token:tok_a"]
    assert (tok.requests, tok.input_tokens, tok.output_tokens) == (3, 30, 15)
    assert (tok.cached_input_tokens, tok.saved_tokens) == (4, 7)
    assert tok.cost_usd == pytest.approx(0.025)
    # Largest cost first.
    assert ledger.rows(by="caller")[0].key == "token:tok_a"

    by_model = {row.key: row.requests for row in ledger.rows(by="model")}
    assert by_model == {"gpt-4o": 3, "claude-3": 1}
    assert [(r.key, r.requests) for r in ledger.rows(by="day")] == [
        ("2026-11-29", 1),
        ("2026-11-30", 3),
    ]
    assert {r.key for r in ledger.rows(by="provider")} == {"openai", "anthropic"}


def test_since_and_one_callers_window(store_url: str) -> None:
    ledger = UsageLedger(open_store(store_url))
    ledger.record(entry("token:tok_a", "m", NOV_29))
    ledger.record(entry("token:tok_a", "m", NOV_30))
    ledger.record(entry("token:tok_b", "m", NOV_30))
    since = datetime.date(2026, 11, 30)
    assert [r.key for r in ledger.rows(by="day", since=since)] == ["2026-11-30"]
    window = ledger.caller_window("token:tok_a", since)
    assert (window.key, window.requests, window.input_tokens) == ("token:tok_a", 1, 10)
    whole = ledger.caller_window("token:tok_a", datetime.date(2026, 1, 1))
    assert whole.requests == 2
    nobody = ledger.caller_window("token:nobody", since)
    assert (nobody.requests, nobody.cost_usd) == (0, 0.0)
    assert set(ledger.callers_window(since)) == {"token:tok_a", "token:tok_b"}


def test_any_character_in_a_part_is_safe(store_url: str) -> None:
    ledger = UsageLedger(open_store(store_url))
    odd_model = "models/x:y%z *?[] é"
    ledger.record(entry("user:a:b", odd_model, NOV_30))
    ledger.record(entry("user:a:b", "", NOV_30))
    assert {r.key for r in ledger.rows(by="model")} == {odd_model, ""}
    assert [r.key for r in ledger.rows(by="caller")] == ["user:a:b"]


def test_record_is_one_atomic_increment_with_a_retention_expiry(store_url: str) -> None:
    store = open_store(store_url)
    calls = []
    real = store.increment

    def spy(key, amounts, *, expires_at):  # type: ignore[no-untyped-def]
        calls.append((key, dict(amounts), expires_at))
        return real(key, amounts, expires_at=expires_at)

    store.increment = spy  # type: ignore[method-assign]
    UsageLedger(store).record(entry("token:t", "gpt-4o", NOV_30, cost_usd=1.5))
    [(key, amounts, expires_at)] = calls
    assert key == usage_key("2026-11-30", "token:t", "openai", "gpt-4o")
    assert key == "usage:2026-11-30:token%3At:openai:gpt-4o"
    assert amounts["cost_micro_usd"] == 1_500_000 and amounts["requests"] == 1
    assert expires_at - NOV_30 > 399 * 86400


def test_concurrent_records_lose_nothing(tmp_path) -> None:
    ledger = UsageLedger(open_store(f"sqlite:///{tmp_path}/ledger.db"))

    def hammer() -> None:
        for _ in range(20):
            ledger.record(entry("shared", "m", NOV_30))

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    [row] = ledger.rows(by="caller")
    assert (row.requests, row.input_tokens) == (80, 800)


def test_which_store_the_ledger_uses() -> None:
    assert usage_store_url({}) == "memory://"
    assert usage_store_url({"TOKEN_STORE": "sqlite:///t.db"}) == "sqlite:///t.db"
    both = {"TOKEN_STORE": "sqlite:///t.db", "LIMIT_STORE": "redis://r"}
    assert usage_store_url(both) == "redis://r"
    assert usage_store_url({**both, "USAGE_STORE": "dynamodb://u"}) == "dynamodb://u"
