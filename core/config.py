"""Settings, read once from the environment, with one clear line per problem."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

MIN_TOKEN_LENGTH = 16
DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024  # above OpenAI's 25 MB audio upload limit


class ConfigError(Exception):
    """The environment does not describe a usable proxy; `problems` names each variable."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


def hash_token(token: str) -> bytes:
    """Tokens are kept and compared only as SHA-256 digests."""
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True)
class Settings:
    upstream_base_url: str
    # repr=False: a Settings object printed in a traceback or log must not leak the key.
    upstream_api_key: str = field(repr=False)
    access_token_hashes: tuple[bytes, ...] = field(repr=False, default=())
    allowed_origins: tuple[str, ...] = ()
    connect_timeout: float = 10.0
    # Bounds the wait for the first byte and every gap between bytes; there is no total
    # timeout, so a long generation that keeps producing is never cut.
    read_timeout: float = 300.0
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    access_log: bool = True
    # "auto" picks aiohttp under httpx for long-running servers, httpx's own otherwise.
    transport: str = "auto"
    # What to do with the upstream stream when the caller leaves: cancel (default) or drain.
    on_disconnect: str = "cancel"


def _parse_float(env: Mapping[str, str], name: str, default: float, problems: list[str]) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        problems.append(f"{name} must be a number of seconds, got {raw!r}")
        return default
    if value <= 0:
        problems.append(f"{name} must be greater than 0, got {raw!r}")
    return value


def _parse_int(env: Mapping[str, str], name: str, default: int, problems: list[str]) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        problems.append(f"{name} must be a whole number, got {raw!r}")
        return default
    if value <= 0:
        problems.append(f"{name} must be greater than 0, got {raw!r}")
    return value


def _parse_bool(env: Mapping[str, str], name: str, default: bool, problems: list[str]) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    problems.append(f"{name} must be true or false, got {raw!r}")
    return default


def _parse_choice(
    env: Mapping[str, str], name: str, choices: tuple[str, ...], problems: list[str]
) -> str:
    raw = env.get(name, "").strip().lower() or choices[0]
    if raw not in choices:
        problems.append(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
        return choices[0]
    return raw


def check_base_url(name: str, raw: str) -> str | None:
    """Return a problem sentence if `raw` is not an absolute http(s) URL without query."""
    parts = urlsplit(raw)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        return f"{name} must be an absolute http(s) URL like https://api.openai.com/v1, got {raw!r}"
    if parts.query or parts.fragment or parts.username or parts.password:
        return f"{name} must not contain a query, fragment or credentials"
    return None


def _parse_tokens(env: Mapping[str, str], problems: list[str]) -> tuple[bytes, ...]:
    raw = env.get("PROXY_ACCESS_TOKEN", "")
    tokens = [t.strip() for t in raw.split(",") if t.strip()]
    if not tokens:
        problems.append(
            "PROXY_ACCESS_TOKEN is not set: callers need a credential "
            "(a comma-separated list allows rotation)"
        )
    for index, token in enumerate(tokens, start=1):
        # Never echo the token itself: the message may reach a log.
        if len(token) < MIN_TOKEN_LENGTH:
            problems.append(
                f"PROXY_ACCESS_TOKEN entry {index} is shorter than {MIN_TOKEN_LENGTH} characters"
            )
    return tuple(hash_token(t) for t in tokens)


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from the environment or raise ConfigError listing every problem."""
    env = os.environ if environ is None else environ
    problems: list[str] = []

    base_url = env.get("UPSTREAM_BASE_URL", "").strip().rstrip("/")
    if not base_url:
        problems.append("UPSTREAM_BASE_URL is not set (for example https://api.openai.com/v1)")
    elif problem := check_base_url("UPSTREAM_BASE_URL", base_url):
        problems.append(problem)

    api_key = env.get("UPSTREAM_API_KEY", "").strip()
    if not api_key:
        problems.append("UPSTREAM_API_KEY is not set: the proxy has no key to send upstream")
    elif any(ch in api_key for ch in "\r\n"):
        problems.append("UPSTREAM_API_KEY contains a line break")

    token_hashes = _parse_tokens(env, problems)
    origins = tuple(o.strip().rstrip("/") for o in env.get("ALLOWED_ORIGINS", "").split(",") if o.strip())
    for origin in origins:
        if origin != "*" and check_base_url("ALLOWED_ORIGINS", origin):
            problems.append(f"ALLOWED_ORIGINS entry {origin!r} must look like https://app.example.com")

    settings = Settings(
        upstream_base_url=base_url,
        upstream_api_key=api_key,
        access_token_hashes=token_hashes,
        allowed_origins=origins,
        connect_timeout=_parse_float(env, "UPSTREAM_CONNECT_TIMEOUT", 10.0, problems),
        read_timeout=_parse_float(env, "UPSTREAM_READ_TIMEOUT", 300.0, problems),
        max_body_bytes=_parse_int(env, "MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES, problems),
        access_log=_parse_bool(env, "ACCESS_LOG", True, problems),
        transport=_parse_choice(env, "UPSTREAM_TRANSPORT", ("auto", "aiohttp", "httpx"), problems),
        on_disconnect=_parse_choice(env, "ON_CLIENT_DISCONNECT", ("cancel", "drain"), problems),
    )
    if problems:
        raise ConfigError(problems)
    return settings
