"""The embedded default: one SQLite file, no server and no cloud account.

Good for one machine (a VM, a container with a volume, the CLI beside `llm-proxy serve`).
On function platforms each instance has its own disk: use DynamoDB or Redis there.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
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
            self._db.execute(_SCHEMA)

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


def _item(row: tuple[str, str, float | None, float | None]) -> Item:
    return Item(row[0], json.loads(row[1]), row[2], row[3])
