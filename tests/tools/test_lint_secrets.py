"""tools/lint_secrets.py: `==` on a digest or secret is refused, the real tree passes."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_lint():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("lint_secrets", ROOT / "tools/lint_secrets.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["lint_secrets"] = module
    spec.loader.exec_module(module)
    return module


lint = _load_lint()


@pytest.mark.parametrize(
    "line",
    [
        "ok = digest == allowed",
        "ok = sha256(credential) != self._digest",
        "ok = mac.encode() == self._mac(payload).encode()",
        "ok = header == session.csrf",
        "ok = found.token_hash == digest.hex()",
        "ok = signature == expected",
        "ok = hashlib.sha256(raw).hexdigest() == stored",
        "ok = given_password == settings.admin_password",
    ],
)
def test_a_plain_comparison_of_a_secret_is_flagged(line: str) -> None:
    found = list(lint.findings(line + "\n"))
    assert len(found) == 1
    assert "compare_digest" in found[0][1]


@pytest.mark.parametrize(
    "line",
    [
        "ok = hmac.compare_digest(digest, allowed)",
        "ok = token_hash is None",
        "ok = csrf == ''",
        "ok = len(token) == 0",
        "ok = token_count == limit",
        "ok = scheme.lower() != b'bearer'",
        "ok = url == settings.token_store",
        "ok = digest == other  # secrets: not a secret (a cache key, public)",
    ],
)
def test_comparisons_that_say_nothing_about_a_secret_pass(line: str) -> None:
    assert list(lint.findings(line + "\n")) == []


def test_the_real_tree_passes() -> None:
    assert lint.check_paths([ROOT / "core", ROOT / "handlers"]) == []


def test_the_command_fails_on_a_sample(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("def check(given, digest):\n    return given == digest\n")
    assert lint.main([str(sample)]) == 1
    assert "sample.py:2" in capsys.readouterr().out
