"""The embedded default: one SQLite file, no server and no cloud account.

Good for one machine (a VM, a container with a volume, the CLI beside `llm-proxy serve`).
On function platforms each instance has its own disk: use DynamoDB or Redis there.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Mapping
from typing import Any

from core.stores import Item

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    key TEXT PRIMARY KEY,
    doc TEXT NOT NULL,
    expires_at REAL,
    last_used REAL
)
"""

# Rate-limit counters (core/access/limits.py): one row per key and counter name.
_COUNTERS_SCHEMA = """
CREATE TABLE IF NOT EXISTS counters (
    key TEXT NOT NULL,
    name TEXT NOT NULL,
    value INTEGER NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (key, name)
)
"""


class SQLiteStore:
    blocking = True

    def __init__(self, path: str) -> None:
        # One connection shared by the proxy's worker threads, serialised by a lock;
        # autocommit, so a revoke by the CLI is visible to the proxy at once.
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")  # readers never wait for the CLI
            self._db.execute("PRAGMA busy_timeout=5000")
            # Safe with WAL (no corruption on a crash, at worst the last commits roll back)
            # and it drops the fsync per rate-limit increment that cost 2/3 of throughput.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(_SCHEMA)
            self._db.execute(_COUNTERS_SCHEMA)
        self._increments = 0

    def get(self, key: str) -> Item | None:
        with self._lock:
            row = self._db.execute(
                "SELECT key, doc, expires_at, last_used FROM items WHERE key = ? "
                "AND (expires_at IS NULL OR expires_at > ?)",
                (key, time.time()),
            ).fetchone()
        return _item(row) if row else None

    def put(self, key: str, doc: dict[str, Any], *, expires_at: float | None = None) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO items (key, doc, expires_at) VALUES (?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE "
                "SET doc = excluded.doc, expires_at = excluded.expires_at",
                (key, json.dumps(doc), expires_at),
            )

    def delete(self, key: str) -> bool:
        with self._lock:
            cursor = self._db.execute("DELETE FROM items WHERE key = ?", (key,))
        return cursor.rowcount > 0

    def scan(self, prefix: str) -> list[Item]:
        now = time.time()
        with self._lock:
            # Expired rows have no other reader: drop them while we are here.
            self._db.execute(
                "DELETE FROM items WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,)
            )
            rows = self._db.execute(
                "SELECT key, doc, expires_at, last_used FROM items WHERE substr(key, 1, ?) = ? "
                "ORDER BY key",
                (len(prefix), prefix),
            ).fetchall()
        return [_item(row) for row in rows]

    def touch(self, key: str, when: float) -> None:
        with self._lock:
            self._db.execute("UPDATE items SET last_used = ? WHERE key = ?", (when, key))

    def increment(
        self, key: str, amounts: Mapping[str, int], *, expires_at: float
    ) -> dict[str, int]:
        now = time.time()
        with self._lock:
            # IMMEDIATE takes the write lock first, so processes sharing the file count
            # exactly (the lock above only covers this process's threads).
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._increments += 1
                if self._increments % 1000 == 1:
                    self._db.execute("DELETE FROM counters WHERE expires_at <= ?", (now,))
                for name, amount in amounts.items():
                    self._db.execute(
                        "INSERT INTO counters (key, name, value, expires_at) VALUES (?, ?, ?, ?) "
                        "ON CONFLICT(key, name) DO UPDATE SET value = CASE "
                        "WHEN counters.expires_at <= ? THEN excluded.value "
                        "ELSE counters.value + excluded.value END, "
                        "expires_at = excluded.expires_at",
                        (key, name, amount, expires_at, now),
                    )
                rows = self._db.execute(
                    "SELECT name, value FROM counters WHERE key = ? AND expires_at > ?",
                    (key, now),
                ).fetchall()
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return {name: int(value) for name, value in rows}

    def reserve(
        self, key: str, name: str, amount: int, limit: int, *, expires_at: float
    ) -> int | None:
        now = time.time()
        with self._lock:
            # IMMEDIATE: the read and the add happen under the file's write lock, so
            # processes sharing the file cannot both take the same room.
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute(
                    "SELECT value FROM counters WHERE key = ? AND name = ? AND expires_at > ?",
                    (key, name, now),
                ).fetchone()
                used = int(row[0]) if row else 0
                if used >= limit:
                    self._db.execute("ROLLBACK")
                    return None
                added = min(amount, limit - used)
                self._db.execute(
                    "INSERT INTO counters (key, name, value, expires_at) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT(key, name) DO UPDATE SET value = CASE "
                    "WHEN counters.expires_at <= ? THEN excluded.value "
                    "ELSE counters.value + excluded.value END, "
                    "expires_at = excluded.expires_at",
                    (key, name, added, expires_at, now),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return added

    def scan_counters(self, prefix: str) -> list[tuple[str, dict[str, int]]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT key, name, value FROM counters WHERE substr(key, 1, ?) = ? "
                "AND expires_at > ? ORDER BY key",
                (len(prefix), prefix, time.time()),
            ).fetchall()
        found: dict[str, dict[str, int]] = {}
        for key, name, value in rows:
            found.setdefault(key, {})[name] = int(value)
        return list(found.items())


def _item(row: tuple[str, str, float | None, float | None]) -> Item:
    return Item(row[0], json.loads(row[1]), row[2], row[3])
