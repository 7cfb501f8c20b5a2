"""Reading typed settings from environment variables, one problem sentence per bad value.

A setting is declared once, as a record field (core/records.py) made by `setting(...)`:
its variable, its default, its bounds and a one-line description sit together,
`read_settings` reads every declared field of a record class from the environment, and the configuration reference
(core/settings_reference.py) is generated from the same declarations. Every number is
checked here, in one place: finite, within its declared bounds, so a value that would
break every request later (NaN, Infinity, 1e308, a negative count) is refused at start.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple, TypeVar

from core.records import MISSING, Field, Record, field, fields

T = TypeVar("T")


class Setting(NamedTuple):
    """What the environment may say about one field, and what the reference prints."""

    env: str
    description: str
    # Inclusive bounds for numbers; every number has both (a test holds every declaration
    # to it), so "huge" is refused as plainly as "negative".
    low: float | None = None
    high: float | None = None
    # 0 is accepted outside the bounds and means "off" (RATE_LIMIT_REQUESTS=0).
    zero_is_off: bool = False
    # For text settings with a fixed set of values; the first is the default.
    choices: tuple[str, ...] = ()
    # Read by its own code (lists, URLs, JSON): declared here for the reference only.
    custom: bool = False
    # The default as the reference shows it, when the field's own is not what a user sees
    # (a computed default, or "" meaning "unset").
    shown_default: str | None = None
    unit: str = ""


def setting(
    env: str,
    default: Any,
    description: str,
    *,
    low: float | None = None,
    high: float | None = None,
    zero_is_off: bool = False,
    choices: tuple[str, ...] = (),
    custom: bool = False,
    secret: bool = False,
    shown_default: str | None = None,
    unit: str = "",
) -> Any:
    """A record field read from `env`. secret=True keeps it out of repr (tracebacks, logs)."""
    spec = Setting(env, description, low, high, zero_is_off, choices, custom, shown_default, unit)
    metadata = {"setting": spec}
    if callable(default):
        return field(default_factory=default, repr=not secret, metadata=metadata)
    return field(default=default, repr=not secret, metadata=metadata)


def declared(cls: type[Record]) -> Iterator[tuple[Field, Setting]]:
    """Every field of record class `cls` declared by `setting(...)`, in declaration order."""
    for item in fields(cls):
        spec = item.metadata.get("setting")
        if isinstance(spec, Setting):
            yield item, spec


def default_of(item: Field) -> Any:
    if item.default is not MISSING:
        return item.default
    if item.default_factory is not MISSING:
        return item.default_factory()
    return None


def read_settings(
    cls: Callable[..., T], env: Mapping[str, str], problems: list[str], **given: Any
) -> T:
    """An instance of record class `cls`: every declared, non-custom field read from `env`
    (a bad value adds one sentence to `problems` and keeps the default), `given` as is."""
    values = dict(given)
    for item, spec in declared(cls):  # type: ignore[arg-type]
        if spec.custom or item.name in values:
            continue
        values[item.name] = read_value(spec, default_of(item), env, problems)
    return cls(**values)


def read_value(spec: Setting, default: Any, env: Mapping[str, str], problems: list[str]) -> Any:
    """One declared value, by the type of its default."""
    if isinstance(default, bool):
        return parse_bool(env, spec.env, default, problems)
    if spec.choices:
        return parse_choice(env, spec.env, spec.choices, problems)
    known = len(problems)
    if isinstance(default, int):
        value: float = parse_int(env, spec.env, default, problems, allow_zero=True)
    elif isinstance(default, float):
        value = parse_float(env, spec.env, default, problems, allow_zero=True)
    else:
        return env.get(spec.env, "").strip() or default
    if len(problems) > known:
        return default  # one sentence per bad value: not a number, or negative
    problem = bound_problem(spec, value)
    if problem:
        problems.append(problem)
        return default
    return value


def bound_problem(spec: Setting, value: float) -> str | None:
    """A sentence naming the variable if `value` is outside its declared bounds."""
    if value == 0 and spec.zero_is_off:
        return None
    low = -math.inf if spec.low is None else spec.low
    high = math.inf if spec.high is None else spec.high
    if low <= value <= high:
        return None
    unit = f" {spec.unit}" if spec.unit else ""
    bound = f"at most {_number(high)}" if value > high else f"at least {_number(low)}"
    off = " (or 0 = off)" if spec.zero_is_off else ""
    return f"{spec.env} must be {bound}{unit}{off}, got {_number(value)}"


def _number(value: float) -> str:
    if math.isfinite(value) and value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:g}"


def parse_float(
    env: Mapping[str, str],
    name: str,
    default: float,
    problems: list[str],
    *,
    allow_zero: bool = False,
) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        problems.append(f"{name} must be a number, got {raw!r}")
        return default
    if not math.isfinite(value):
        # float() reads "nan" and "inf"; NaN compares false with every bound, so it would
        # pass each check below and switch a limit off (or break every request) silently.
        problems.append(f"{name} must be a finite number, got {raw!r}")
        return default
    if value < 0 or (value == 0 and not allow_zero):
        bound = "0 or more" if allow_zero else "greater than 0"
        problems.append(f"{name} must be {bound}, got {raw!r}")
    return value


def parse_int(
    env: Mapping[str, str],
    name: str,
    default: int,
    problems: list[str],
    *,
    allow_zero: bool = False,
) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        problems.append(f"{name} must be a whole number, got {raw!r}")
        return default
    if value < 0 or (value == 0 and not allow_zero):
        bound = "0 or more (0 = off)" if allow_zero else "greater than 0"
        problems.append(f"{name} must be {bound}, got {raw!r}")
    return value


def parse_bool(env: Mapping[str, str], name: str, default: bool, problems: list[str]) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    problems.append(f"{name} must be true or false, got {raw!r}")
    return default


def parse_choice(
    env: Mapping[str, str], name: str, choices: tuple[str, ...], problems: list[str]
) -> str:
    raw = env.get(name, "").strip().lower() or choices[0]
    if raw not in choices:
        problems.append(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
        return choices[0]
    return raw


def read_env_file(path: str) -> dict[str, str]:
    """KEY=VALUE lines of a `.env` file (comments, blank lines and `export ` allowed; one
    pair of surrounding quotes removed). Values are taken as written: no interpolation."""
    values: dict[str, str] = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if not line or line.startswith("#") or "=" not in line:
                continue
            name, _, value = line.removeprefix("export ").partition("=")
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            values[name.strip()] = value
    return values


def detect_platform(environ: Mapping[str, str]) -> str:
    """The platform this process runs on, by the variables each one sets."""
    if environ.get("AWS_LAMBDA_FUNCTION_NAME"):
        return "aws"
    if environ.get("VERCEL"):
        return "vercel"
    if environ.get("K_SERVICE"):  # Cloud Run services and Cloud Run functions
        return "cloud-run"
    return "socket"
