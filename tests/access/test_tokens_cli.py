"""`llm-proxy tokens ...` as an operator uses it, on a SQLite file."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.access.tokens import hash_hex, list_tokens
from core.cli import main
from core.stores import open_store


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_create_list_disable_enable_revoke(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOKEN_STORE", f"sqlite:///{tmp_path}/tokens.db")
    code, out, err = run(
        capsys,
        "tokens",
        "create",
        "--label",
        "mobile-app",
        "--providers",
        "openai,anthropic",
        "--models",
        "gpt-4o*,claude-*",
        "--expires",
        "30d",
    )
    assert code == 0
    token = out.strip()  # stdout is the token alone, so `TOKEN=$(llm-proxy tokens create ...)`
    assert token.startswith("llmp_") and "\n" not in token
    assert "shown only now" in err

    code, out, _ = run(capsys, "tokens", "list")
    assert code == 0
    assert "mobile-app" in out and "openai,anthropic" in out and "gpt-4o*,claude-*" in out
    assert token not in out and hash_hex(token) not in out

    assert run(capsys, "tokens", "disable", "mobile-app")[0] == 0
    assert "disabled" in run(capsys, "tokens", "list")[1]
    assert run(capsys, "tokens", "enable", "mobile-app")[0] == 0
    assert "active" in run(capsys, "tokens", "list")[1]
    code, out, _ = run(capsys, "tokens", "revoke", "mobile-app")
    assert code == 0 and out.startswith("revoked tok_")
    assert list_tokens(open_store(f"sqlite:///{tmp_path}/tokens.db")) == []


def test_mistakes_are_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TOKEN_STORE", raising=False)
    code, _, err = run(capsys, "tokens", "list")
    assert code == 2 and "set TOKEN_STORE" in err
    store = f"sqlite:///{tmp_path}/t.db"
    code, _, err = run(
        capsys, "tokens", "--store", store, "create", "--label", "x", "--providers", "opneai"
    )
    assert code == 1 and "unknown provider opneai" in err
    code, _, err = run(
        capsys, "tokens", "--store", store, "create", "--label", "x", "--expires", "soon"
    )
    assert code == 1 and "--expires must be like" in err
    code, _, err = run(capsys, "tokens", "--store", store, "revoke", "nobody")
    assert code == 1 and "no token has the label or id 'nobody'" in err


def test_a_budget_is_kept_on_the_record(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = f"sqlite:///{tmp_path}/t.db"
    code, _, err = run(
        capsys, "tokens", "--store", store, "create", "--label", "capped", "--budget-usd", "12.5"
    )
    assert code == 0 and "budget: $12.5" in err
    [record] = list_tokens(open_store(store))
    assert record.budget_usd == 12.5
    assert "$12.5" in run(capsys, "tokens", "--store", store, "list")[1]
    code, _, err = run(
        capsys, "tokens", "--store", store, "create", "--label", "neg", "--budget-usd", "-1"
    )
    assert code == 1 and "--budget-usd" in err
