"""CACHE_* settings, read once with the rest (core/config.py). Off unless CACHE_URL is set."""

from __future__ import annotations

from collections.abc import Mapping

from core.env import read_settings, setting
from core.records import Record
from core.stores import STORE_SCHEMES

DEFAULT_MAX_ENTRY_BYTES = 1024 * 1024
DEFAULT_MAX_ENTRIES = 1000
# A thousand entries of the default 1 MiB would be 1.3 GiB of base64 in one process: a
# caller who asks for large replies (embeddings of many inputs) could fill it for cents.
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
CACHE_SCOPES = ("caller", "shared")


class CacheSettings(Record):
    """The response cache: where it keeps replies, for how long, and which it keeps."""

    # repr=False: a redis:// URL carries the store's password.
    url: str = setting(
        "CACHE_URL",
        "",
        "The response cache's store: memory, sqlite:///path/cache.db, redis://host:6379/1 or "
        "dynamodb://table; unset = no cache.",
        custom=True,
        secret=True,
        shown_default="unset (cache off)",
    )
    ttl_seconds: float = setting(
        "CACHE_TTL_SECONDS",
        3600.0,
        "How long an entry is replayed.",
        low=1,
        high=366 * 86_400,
        unit="s",
    )
    scope: str = setting(
        "CACHE_SCOPE",
        "caller",
        "caller: entries per caller identity; shared: one answer for every allowed caller.",
        choices=CACHE_SCOPES,
    )
    nondeterministic: bool = setting(
        "CACHE_NONDETERMINISTIC",
        False,
        "Also cache requests whose answer may differ each time (temperature absent or > 0).",
    )
    max_entry_bytes: int = setting(
        "CACHE_MAX_ENTRY_BYTES",
        DEFAULT_MAX_ENTRY_BYTES,
        "Larger replies are not stored (DynamoDB: at most 280 KiB).",
        low=1,
        high=64 * 1024 * 1024,
        unit="bytes",
    )
    max_entries: int = setting(
        "CACHE_MAX_ENTRIES",
        DEFAULT_MAX_ENTRIES,
        "Entries the memory store keeps (least recently used dropped first).",
        low=1,
        high=10**7,
    )
    max_bytes: int = setting(
        "CACHE_MAX_BYTES",
        DEFAULT_MAX_BYTES,
        "Memory the memory store's entries take in all, about 4/3 of their replies' bytes "
        "(least recently used dropped first); on SQLite, Redis and DynamoDB, twice what "
        "entries written in one TTL may take (so what is stored at once); also what replies "
        "being copied to be kept may hold together, whatever the store.",
        low=1,
        high=64 * 1024**3,
        unit="bytes",
    )

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
    return read_settings(CacheSettings, env, problems, url=_parse_url(env, problems))
