"""Reading typed settings from environment variables, one problem sentence per bad value.

Every settings module uses these, so every variable fails the same readable way.
"""

from __future__ import annotations

from collections.abc import Mapping


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
        problems.append(f"{name} must be a number of seconds, got {raw!r}")
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
