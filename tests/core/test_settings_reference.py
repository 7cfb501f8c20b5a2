"""One source for settings: the generated reference, .env.example and the code agree.

A variable the code reads but the reference or .env.example does not list, one listed there
that nothing reads any more, and a reference page older than its generator all fail here.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from core.access.guard_settings import GuardSettings
from core.cache.settings import CacheSettings
from core.config import SERVER_LIMITS, Settings
from core.env import declared, default_of
from core.providers import CATALOGUE, provider_env_names
from core.settings_reference import (
    PLATFORM_VARIABLES,
    SECRET_SUFFIXES,
    TELEMETRY_VARIABLES,
    documented_variables,
    render,
)
from core.usage.settings import UsageSettings

ROOT = Path(__file__).resolve().parents[2]
NAME = r"([A-Z][A-Z0-9_]*[A-Z0-9])"
# Every way the code reads a variable by its literal name.
READS = (
    re.compile(r"""(?:environ|env)\.get\(\s*["']""" + NAME + "[\"']"),
    re.compile(r"""getenv\(\s*["']""" + NAME + "[\"']"),
    re.compile(r"""environ\[\s*["']""" + NAME + r"""["']\s*\](?!\s*=[^=])"""),
    re.compile(r"""parse_(?:int|float|bool|choice)\(\s*\w+,\s*["']""" + NAME + "[\"']"),
)
# A declaration read by read_settings (custom=False) is a read too; a custom one must be
# read by its own code, which READS finds.
DECLARED = (Settings, GuardSettings, UsageSettings, CacheSettings)


def sources() -> list[Path]:
    return [*ROOT.joinpath("core").rglob("*.py"), *ROOT.joinpath("handlers").rglob("*.py")]


def names_read_by_code() -> set[str]:
    found: set[str] = set()
    for path in sources():
        text = path.read_text(encoding="utf-8")
        for pattern in READS:
            found.update(pattern.findall(text))
    for cls in DECLARED:
        found.update(spec.env for _, spec in declared(cls) if not spec.custom)
    found.update(spec.env for spec in SERVER_LIMITS.values())
    return found


def provider_names() -> set[str]:
    return {name for record in CATALOGUE for name in provider_env_names(record)}


def names_in_env_example() -> set[str]:
    text = ROOT.joinpath(".env.example").read_text(encoding="utf-8")
    return set(re.findall(r"\b" + NAME + "=", text))


def test_every_variable_the_code_reads_is_in_the_reference() -> None:
    missing = names_read_by_code() - documented_variables()
    assert not missing, f"read by the code, missing from docs/configuration.md: {missing}"


def test_every_documented_variable_is_still_read() -> None:
    dynamic = provider_names()  # read by name pattern from the catalogue (core/config.py)
    # The standard OTEL_* variables are read by the OpenTelemetry SDK itself.
    standard = {row[0] for row in TELEMETRY_VARIABLES if row[0].startswith("OTEL_")}
    stale = documented_variables() - names_read_by_code() - dynamic - standard
    assert not stale, f"documented but read by nothing: {stale}"


def test_env_example_lists_every_setting_and_nothing_else() -> None:
    listed = names_in_env_example()
    platform = {name for name, _ in PLATFORM_VARIABLES}
    wanted = documented_variables() - platform - provider_names()
    assert not wanted - listed, f"missing from .env.example: {wanted - listed}"
    # Each provider appears by its key or its origin.
    for record in CATALOGUE:
        assert set(provider_env_names(record)) & listed, f"{record.name} not in .env.example"
    secret_refs = {n for n in listed if n.endswith(SECRET_SUFFIXES)}
    for ref in secret_refs:
        target = ref.removesuffix("_SECRET_ID").removesuffix("_SSM_PARAMETER")
        assert target in documented_variables(), f".env.example names a secret for {target}"
    unknown = listed - documented_variables() - secret_refs
    assert not unknown, f"in .env.example but read by nothing: {unknown}"


def test_the_reference_page_is_generated_from_the_code() -> None:
    page = ROOT.joinpath("docs", "configuration.md").read_text(encoding="utf-8")
    assert page == render(), "docs/configuration.md is stale: run `make config-docs`"


@pytest.mark.parametrize("cls", DECLARED)
def test_every_number_is_bounded_above_and_below(cls: type) -> None:
    specs = [(spec, default_of(item)) for item, spec in declared(cls)]
    specs += [(spec, None) for spec in SERVER_LIMITS.values()] if cls is Settings else []
    for spec, default in specs:
        numeric = default is None or (
            isinstance(default, int | float) and not isinstance(default, bool)
        )
        if spec.custom or not numeric:
            continue
        assert spec.low is not None and spec.high is not None, spec.env
        assert math.isfinite(spec.low) and math.isfinite(spec.high), spec.env
        if default is not None:
            assert spec.low <= default <= spec.high or (default == 0 and spec.zero_is_off)


@pytest.mark.parametrize(
    "line",
    [
        'os.environ.get("NEW_SETTING", "1")',
        "environ.get('NEW_SETTING')",
        'os.getenv("NEW_SETTING")',
        'value = os.environ["NEW_SETTING"]',
        'parse_float(env, "NEW_SETTING", 2.0, problems)',
    ],
)
def test_the_scan_sees_each_way_of_reading_a_variable(line: str) -> None:
    """The checks above are only as good as this scan: a new read must be seen."""
    assert any(pattern.findall(line) == ["NEW_SETTING"] for pattern in READS)


def test_a_variable_the_platform_writes_is_not_a_read() -> None:
    assert not any(pattern.findall('os.environ["_X_AMZN_TRACE_ID"] = trace') for pattern in READS)
