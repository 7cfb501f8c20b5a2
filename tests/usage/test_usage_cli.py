"""`llm-proxy usage` as an operator uses it, on a SQLite file."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest

from core.cli import main
from core.stores import open_store
from core.usage.ledger import UsageEntry, UsageLedger

DAY1 = datetime.datetime(2026, 11, 28, 9, tzinfo=datetime.UTC).timestamp()
DAY2 = datetime.datetime(2026, 11, 30, 9, tzinfo=datetime.UTC).timestamp()


@pytest.fixture
def store_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path}/usage.db"
    for name in ("USAGE_STORE", "LIMIT_STORE", "TOKEN_STORE"):
        monkeypatch.delenv(name, raising=False)
    ledger = UsageLedger(open_store(url))
    ledger.record(
        UsageEntry("token:tok_web", "openai", "gpt-4o", 1200, 300, cost_usd=0.0045, at=DAY1)
    )
    ledger.record(
        UsageEntry("token:tok_web", "openai", "gpt-4o", 800, 200, cost_usd=0.003, at=DAY2)
    )
    ledger.record(UsageEntry("ip:10.1.2.3", "anthropic", "claude-3-5", 50, 10, at=DAY2))
    return url


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_table_by_caller(
    store_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("USAGE_STORE", store_url)
    code, out, _ = run(capsys, "usage")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == [
        "CALLER",
        "REQUESTS",
        "INPUT",
        "OUTPUT",
        "CACHED",
        "SAVED",
        "COST",
        "USD",
    ]
    assert lines[1].split() == ["token:tok_web", "2", "2000", "500", "0", "0", "0.0075"]
    assert lines[2].split() == ["ip:10.1.2.3", "1", "50", "10", "0", "0", "0.0000"]
    assert lines[3].split() == ["total", "3", "2050", "510", "0", "0", "0.0075"]


def test_by_day_since_as_json_from_the_token_store(
    store_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # No USAGE_STORE: the ledger lives beside the tokens.
    monkeypatch.setenv("TOKEN_STORE", store_url)
    code, out, _ = run(capsys, "usage", "--by", "day", "--since", "2026-11-29", "--json")
    assert code == 0
    report = json.loads(out)
    assert report["by"] == "day" and report["since"] == "2026-11-29"
    assert [(r["key"], r["requests"], r["total_tokens"]) for r in report["rows"]] == [
        ("2026-11-30", 2, 1060)
    ]
    assert report["total"]["cost_usd"] == pytest.approx(0.003)


def test_by_model_with_an_explicit_store(
    store_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "usage", "--store", store_url, "--by", "model")
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()] == [
        "MODEL",
        "gpt-4o",
        "claude-3-5",
        "total",
    ]


def test_no_store_and_a_bad_day_are_explained(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("USAGE_STORE", "LIMIT_STORE", "TOKEN_STORE"):
        monkeypatch.delenv(name, raising=False)
    code, _, err = run(capsys, "usage")
    assert code == 2 and "USAGE_STORE" in err
    with pytest.raises(SystemExit):
        main(["usage", "--store", "memory://", "--since", "yesterday"])
    assert "expected a day like" in capsys.readouterr().err
