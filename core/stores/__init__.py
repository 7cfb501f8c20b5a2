"""State behind one small interface: memory, SQLite, DynamoDB, Redis.

A store keeps JSON documents under string keys, each with an optional expiry (epoch
seconds; backends with native TTL use it, the others filter on read) and a `last_used`
time that can be bumped without rewriting the document, so a busy caller's touch never
undoes an admin's concurrent disable. The methods are synchronous and small: the CLI calls
them directly, the proxy calls them off the event loop on a cache miss.

`open_store(url)` picks the backend from the URL scheme and imports its client library
only then (boto3 and redis stay out of a cold start that does not use them).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple, Protocol
from urllib.parse import parse_qs, urlsplit

# Every URL scheme `open_store` understands.
STORE_SCHEMES = frozenset({"memory", "sqlite", "dynamodb", "redis", "rediss"})


class Item(NamedTuple):
    """One document of a store under its key, with its expiry and last use."""

    key: str
    doc: dict[str, Any]
    expires_at: float | None = None
    last_used: float | None = None


class Store(Protocol):
    # False only for the in-process memory store: the proxy then skips the thread hop.
    blocking: bool

    def get(self, key: str) -> Item | None:
        """The item under `key`, or None if absent or expired."""

    def put(self, key: str, doc: dict[str, Any], *, expires_at: float | None = None) -> None:
        """Create or replace the document; `last_used` is kept."""

    def update(self, key: str, doc: dict[str, Any], *, expires_at: float | None = None) -> bool:
        """Replace the document of an item that exists (`last_used` kept), in one atomic
        store operation; False, and nothing written, if there is none (deleted or
        expired). An admin's change to a token (disable, enable) thus never brings back a
        token revoked in the meantime, as a read then a `put` would."""

    def delete(self, key: str) -> bool:
        """Remove the item; True if it existed."""

    def scan(self, prefix: str) -> list[Item]:
        """Every unexpired item whose key starts with `prefix`, sorted by key (admin use,
        not per request)."""

    def touch(self, key: str, when: float) -> None:
        """Set `last_used` if the item still exists; never recreates a deleted one."""

    def increment(
        self, key: str, amounts: Mapping[str, int], *, expires_at: float
    ) -> dict[str, int]:
        """Atomically add each amount to the named counter under `key` (created at 0, kept
        until `expires_at`) and return every counter of `key` after the add. Used by the
        rate limiter (core/access/limits.py), so many instances share one count; counter keys
        never collide with document keys."""

    def reserve(
        self, key: str, name: str, amount: int, limit: int, *, expires_at: float
    ) -> int | None:
        """Atomically reserve room under a cap: if the counter `name` under `key` is below
        `limit`, add `amount` or the room left, whichever is smaller, and return what was
        added; None (and no change) if there is no room. Check and add are one atomic
        store operation, so concurrent requests on many instances cannot pass a cap
        together: the most it can be overshot is one request's own use beyond what it
        reserved (core/access/limits.py, core/usage/budget.py)."""

    def scan_counters(self, prefix: str) -> list[tuple[str, dict[str, int]]]:
        """Every unexpired counter key starting with `prefix` and its counters, sorted by
        key (the usage ledger's reports; admin use, not per request). `scan` returns
        documents only."""


class StoreURLError(ValueError):
    """The store URL names no backend this proxy has."""


class StoreUnopenable(Exception):
    """The store a URL names could not be opened (a SQLite file in a missing directory, a
    port out of range). `reason` is safe to show: it never quotes the URL, which may
    carry a password."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(reason)
        self.url = url
        self.reason = reason


def store_url_problem(name: str, url: str) -> str | None:
    """A sentence naming the variable `name` if `url` names no store this proxy has, or
    its host part cannot be right; else None. One check for every *_STORE variable."""
    scheme = url.partition("://")[0]
    if scheme not in STORE_SCHEMES:
        return (
            f"{name} must look like memory://, sqlite:///path.db, dynamodb://table, "
            f"redis://host:6379 or rediss://host:6380, got scheme {scheme!r}"
        )
    try:
        urlsplit(url).port  # noqa: B018 - parsing the port is the check
    except ValueError:
        return f"{name} has a port that is not a number from 1 to 65535"
    return None


def open_store(url: str) -> Store:
    """The store a TOKEN_STORE-style URL names; StoreUnopenable if it cannot be opened."""
    try:
        return _open_store(url)
    except StoreURLError:
        raise
    except Exception as exc:
        raise StoreUnopenable(url, _reason(exc)) from None


def _reason(exc: Exception) -> str:
    import sqlite3

    # SQLite's messages name no path; other drivers' may quote the URL and its password.
    if isinstance(exc, sqlite3.Error):
        return f"{type(exc).__name__}: {exc}"
    return type(exc).__name__


def _open_store(url: str) -> Store:
    parts = urlsplit(url)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    if parts.scheme == "memory":
        from core.stores.memory import MemoryStore

        return MemoryStore()
    if parts.scheme == "sqlite":
        from core.stores.sqlite import SQLiteStore

        # sqlite:///relative.db and sqlite:////absolute/path.db, as SQLAlchemy spells them.
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        return SQLiteStore(path or "llm-proxy-tokens.db")
    if parts.scheme == "dynamodb":
        from core.stores.dynamodb import DynamoDBStore

        return DynamoDBStore(
            table=parts.netloc,
            region=query.get("region"),
            endpoint_url=query.get("endpoint"),
        )
    if parts.scheme in ("redis", "rediss"):
        from core.stores.redis_store import RedisStore

        return RedisStore(url)
    raise StoreURLError(
        "a store URL looks like sqlite:///tokens.db, dynamodb://table, redis://host:6379 "
        "or memory://"
    )


class StoreSet:
    """Opens each store URL once, so every part of one app shares one client per store."""

    def __init__(self) -> None:
        self._open: dict[str, Store] = {}

    def open(self, url: str) -> Store:
        store = self._open.get(url)
        if store is None:
            store = self._open[url] = open_store(url)
        return store
