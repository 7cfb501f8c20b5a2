"""CACHE_* settings, read once with the rest (core/config.py). Off unless CACHE_URL is set."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from core.env import parse_bool, parse_choice, parse_float, parse_int
from core.stores import STORE_SCHEMES

DEFAULT_MAX_ENTRY_BYTES = 1024 * 1024
DEFAULT_MAX_ENTRIES = 1000
CACHE_SCOPES = ("caller", "shared")


@dataclass(frozen=True)
class CacheSettings:
    # "" (off), memory://, sqlite:///path, redis://..., dynamodb://table. repr=False: a
    # redis:// URL carries the store's password.
    url: str = field(repr=False, default="")
    ttl_seconds: float = 3600.0
    # caller: entries per caller identity; shared: one answer for every allowed caller.
    scope: str = "caller"
    # Also cache requests whose answer may differ each time (temperature absent or > 0).
    nondeterministic: bool = False
    max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES
    # The memory store's LRU size.
    max_entries: int = DEFAULT_MAX_ENTRIES

    @property
    def on(self) -> bool:
        return bool(self.url)

    @property
    def per_caller(self) -> bool:
        return self.on and self.scope == "caller"


def _parse_url(env: Mapping[str, str], problems: list[str]) -> str:
    raw = env.get("CACHE_URL", "").strip()
    if raw == "memory":
        return "memory://"
    if raw == "sqlite":
        return "sqlite:///llm-proxy-cache.db"
    scheme = raw.partition("://")[0]
    if raw and ("://" not in raw or scheme not in STORE_SCHEMES):
        problems.append(
            "CACHE_URL must be memory, sqlite:///path/cache.db, redis://host:6379 (or "
            f"rediss://) or dynamodb://table, got scheme {scheme!r}"
        )
        return ""
    return raw


def parse_cache_settings(env: Mapping[str, str], problems: list[str]) -> CacheSettings:
    """Read CACHE_*, appending one sentence per problem."""
    return CacheSettings(
        url=_parse_url(env, problems),
        ttl_seconds=parse_float(env, "CACHE_TTL_SECONDS", 3600.0, problems),
        scope=parse_choice(env, "CACHE_SCOPE", CACHE_SCOPES, problems),
        nondeterministic=parse_bool(env, "CACHE_NONDETERMINISTIC", False, problems),
        max_entry_bytes=parse_int(env, "CACHE_MAX_ENTRY_BYTES", DEFAULT_MAX_ENTRY_BYTES, problems),
        max_entries=parse_int(env, "CACHE_MAX_ENTRIES", DEFAULT_MAX_ENTRIES, problems),
    )
