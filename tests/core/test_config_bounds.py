"""Settings that would break every request are refused at start, naming the variable
(issue 19, class 6): NaN, Infinity, negative and absurd numbers, in every numeric setting."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.access.guard_settings import GuardSettings
from core.cache.settings import CacheSettings
from core.config import SERVER_LIMITS, ConfigError, Settings, load_settings
from core.env import Setting, declared, default_of
from core.usage.settings import UsageSettings
from tests.support.servers import FAKE_TOKEN, FAKE_UPSTREAM_KEY, free_port

CLI = [sys.executable, "-m", "core.cli"]
BASE = {
    "UPSTREAM_BASE_URL": "https://api.upstream.test/v1",
    "UPSTREAM_API_KEY": FAKE_UPSTREAM_KEY,
    "PROXY_ACCESS_TOKEN": FAKE_TOKEN,
}


def numeric_settings() -> list[Setting]:
    found = [
        spec
        for cls in (Settings, GuardSettings, UsageSettings, CacheSettings)
        for item, spec in declared(cls)
        if not spec.custom
        and isinstance(default_of(item), int | float)
        and not isinstance(default_of(item), bool)
    ]
    return found + list(SERVER_LIMITS.values())


def problems(**extra: str) -> list[str]:
    try:
        load_settings({**BASE, **extra})
    except ConfigError as exc:
        return exc.problems
    return []


def cli_env(**extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.isupper() or k in ("PATH", "HOME")}
    return {**clean, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), **BASE, **extra}


@pytest.mark.parametrize("spec", numeric_settings(), ids=lambda spec: spec.env)
@pytest.mark.parametrize("raw", ["nan", "NaN", "inf", "-Infinity", "-1", "1e308"])
def test_every_number_refuses_nan_infinity_negative_and_absurd(spec: Setting, raw: str) -> None:
    found = problems(**{spec.env: raw})
    assert len(found) == 1 and found[0].startswith(spec.env), found


@pytest.mark.parametrize("spec", numeric_settings(), ids=lambda spec: spec.env)
def test_every_number_accepts_its_bounds(spec: Setting) -> None:
    for value in (spec.low, spec.high):
        assert value is not None
        raw = str(int(value)) if value == int(value) else str(value)
        assert problems(**{spec.env: raw}) == [], raw


@pytest.mark.parametrize(
    "prices",
    [
        '{"fake-*": {"input": NaN, "output": 1}}',
        '{"fake-*": {"input": 1, "output": Infinity}}',
        '{"fake-*": {"input": 1, "output": -Infinity}}',
        '{"fake-*": {"input": -1, "output": 1}}',
        '{"fake-*": {"input": 1e308, "output": 1}}',
        '{"fake-*": {"input": 1, "output": 1, "cached_input": 1e308}}',
        '{"fake-*": {"input": 1, "output": 1, "max_output": 1e308}}',
        '{"fake-*": {"input": 1, "output": 1, "max_output": -5}}',
        '{"fake-*": {"input": 1, "output": 1, "max_output": 2.5}}',
    ],
)
def test_model_prices_that_would_break_every_priced_request_are_refused(prices: str) -> None:
    found = problems(MODEL_PRICES=prices, BUDGET_PER_CALLER_USD="1")
    assert len(found) == 1 and found[0].startswith("MODEL_PRICES"), found


def test_a_sane_price_table_passes() -> None:
    table = '{"fake-*": {"input": 600, "output": 1200, "cached_input": 0, "max_output": 100000}}'
    assert problems(MODEL_PRICES=table, BUDGET_PER_CALLER_USD="1") == []


def test_check_refuses_an_infinite_price_and_a_nan_budget() -> None:
    env = cli_env(
        MODEL_PRICES='{"fake-*": {"input": Infinity, "output": 1}}', BUDGET_TOTAL_USD="nan"
    )
    result = subprocess.run([*CLI, "check"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stdout
    lines = result.stdout.splitlines()
    assert any(line.startswith("error: MODEL_PRICES") for line in lines), lines
    assert any(line.startswith("error: BUDGET_TOTAL_USD") for line in lines), lines


def test_stream_recovery_attempts_have_an_upper_bound() -> None:
    """At 1000, one request made 1001 billed upstream calls."""
    found = problems(GEMINI_STREAM_RECOVERY="true", GEMINI_STREAM_RECOVERY_ATTEMPTS="1000")
    assert found == ["GEMINI_STREAM_RECOVERY_ATTEMPTS must be at most 5, got 1000"]
    assert problems(GEMINI_STREAM_RECOVERY_ATTEMPTS="0")
    assert problems(GEMINI_STREAM_RECOVERY_ATTEMPTS="5") == []


def serve(**extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "serve", "--port", str(free_port())],
        env=cli_env(**extra),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_serve_says_which_store_it_cannot_open(tmp_path: Path) -> None:
    result = serve(TOKEN_STORE=f"sqlite:///{tmp_path}/no-such-folder/tokens.db")
    assert result.returncode == 2
    assert "refusing to start: TOKEN_STORE could not be opened" in result.stderr
    assert "unable to open database file" in result.stderr


def test_serve_names_a_bad_redis_port_without_its_password() -> None:
    result = serve(TOKEN_STORE="redis://:fake-s3cret@redis.test:99999/0")
    assert result.returncode == 2
    assert "refusing to start: TOKEN_STORE has a port" in result.stderr
    assert "fake-s3cret" not in result.stderr + result.stdout


def test_a_quoted_url_password_is_masked_in_every_problem() -> None:
    found = problems(UPSTREAM_BASE_URL="ftp://user:fake-s3cret@upstream.test/v1")
    assert found and all("fake-s3cret" not in p for p in found)
    assert any("ftp://user:***@upstream.test/v1" in p for p in found)


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        # A store URL whose `://` was mistyped: the whole value was quoted as its "scheme".
        ("TOKEN_STORE", "redis:/default:fake-s3cret@redis.test:6379"),
        ("LIMIT_STORE", "default:fake-s3cret@redis.test:6379"),
        ("USAGE_STORE", "redis//:fake-s3cret@redis.test:6379"),
        ("CACHE_URL", "redis:/default:fake-s3cret@redis.test:6379"),
        # An upstream without its scheme, holding credentials or a key in its query.
        ("OPENAI_UPSTREAM", "user:fake-s3cret@gateway.test/v1"),
        ("OPENAI_UPSTREAM", "gateway.test/v1?api-key=fake-s3cret"),
        ("OPENAI_UPSTREAM", "https://gateway.test/v1,gateway2.test/v1?key=fake-s3cret"),
        # A password with a `/` or an `@` in it (a URL reader takes the last `@`).
        ("UPSTREAM_BASE_URL", "ftp://user:fake/s3cret@upstream.test/v1"),
        ("UPSTREAM_BASE_URL", "ftp://user:fake@s3cret@upstream.test/v1"),
    ],
)
def test_a_mistyped_url_quotes_no_password_or_key(name: str, raw: str) -> None:
    found = problems(**{name: raw})
    assert any(name in p for p in found)
    assert all("fake" not in p and "s3cret" not in p for p in found), found


def test_demo_refuses_a_bad_value_from_the_environment() -> None:
    result = subprocess.run(
        [*CLI, "demo", "--port", str(free_port()), "--mock-port", str(free_port())],
        env=cli_env(MODEL_PRICES='{"mock-*": {"input": NaN, "output": 1}}'),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "refusing to start: MODEL_PRICES" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("name", "raw"), [("PORT", "abc"), ("PORT", "70000"), ("WORKERS", "0")])
def test_serve_refuses_a_bad_port_or_worker_count_without_a_traceback(name: str, raw: str) -> None:
    result = subprocess.run(
        [*CLI, "serve"], env=cli_env(**{name: raw}), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert f"--{name.lower()}" in result.stderr and "Traceback" not in result.stderr
