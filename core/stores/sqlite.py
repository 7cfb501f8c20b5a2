"""The embedded default: one SQLite file, no server and no cloud account.

Good for one machine (a VM, a container with a volume, the CLI beside `llm-proxy serve`).
On function platforms each instance has its own disk: use DynamoDB or Redis there.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Mapping
from typing import Any

from core.stores import Item
from core.stores.calls import DEFAULT_STORE_TIMEOUT

logger = logging.getLogger("llm_proxy")

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


# Expired items are deleted on the first write with an expiry and every this many after.
_SWEEP_EVERY = 100


class SQLiteStore:
    """A file shared by the proxy's threads (one connection each: WAL lets readers go on
    while someone writes) and by other processes (the CLI, other workers)."""

    blocking = True

    def __init__(self, path: str, *, busy_timeout: float = DEFAULT_STORE_TIMEOUT) -> None:
        self._path = path
        self._busy_ms = int(busy_timeout * 1000)
        self._local = threading.local()
        # Counter writes from this process queue here, in order, instead of every thread
        # spinning in SQLite's busy handler (which sleeps in growing steps: under 32
        # concurrent callers some waited past STORE_TIMEOUT). Reads never take it, so token
        # lookups do not wait behind a writer.
        self._write_lock = threading.Lock()
        self._increments = itertools.count()
        # Items written with an expiry (response cache entries, up to CACHE_MAX_ENTRY_BYTES
        # each) are swept every so many writes: `get` never returns an expired one, but
        # without a sweep each stayed in the file for good, and a cache on SQLite grew by
        # every distinct request it ever kept.
        self._expiring_puts = itertools.count()
        self._db()  # opened now, so an unusable path fails at start, not on a request

    def _db(self) -> sqlite3.Connection:
        """This thread's connection, reopened if the file was deleted or replaced.

        A connection keeps the file it opened, even after `rm`: without the check the
        proxy would go on reading a deleted file while `llm-proxy tokens` writes a new one
        (a revoked token still let in, a new one refused) until a restart.
        """
        local = self._local
        db: sqlite3.Connection | None = getattr(local, "db", None)
        identity = _file_identity(self._path)
        if db is not None and identity == local.identity:
            return db
        if db is not None:
            logger.warning("token store file was deleted or replaced: reopening it")
            db.close()
        db = self._open()
        local.db = db
        local.identity = _file_identity(self._path)
        return db

    def _open(self) -> sqlite3.Connection:
        # Autocommit, so a revoke by the CLI is visible to the proxy at once.
        db = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
        try:
            # A write waits this long for a lock someone else holds, then fails (503).
            db.execute(f"PRAGMA busy_timeout={self._busy_ms}")
            self._set_up(db)
        except BaseException:
            db.close()
            raise
        return db

    def _set_up(self, db: sqlite3.Connection) -> None:
        """WAL mode and the tables, retried while another connection sets up the same new
        file: switching a new file to WAL can fail at once with "database is locked",
        without waiting in the busy handler (SQLite's deadlock avoidance), when the CLI
        and the proxy (or two of its threads) open it together, e.g. after `rm tokens.db`.
        """
        deadline = time.monotonic() + self._busy_ms / 1000
        pause = 0.005
        while True:
            try:
                db.execute("PRAGMA journal_mode=WAL")  # readers never wait for the CLI
                # Safe with WAL (no corruption on a crash, at worst the last commits roll
                # back); it drops the fsync per rate-limit increment that cost 2/3 of
                # throughput.
                db.execute("PRAGMA synchronous=NORMAL")
                db.execute(_SCHEMA)
                db.execute(_COUNTERS_SCHEMA)
                # The sweeps of expired items (every 100th expiring put, each scan) read
                # this instead of the whole table: a large cache is mostly entries that
                # expire. Only rows with an expiry are in it (tokens mostly have none).
                db.execute(
                    "CREATE INDEX IF NOT EXISTS items_expiry ON items (expires_at) "
                    "WHERE expires_at IS NOT NULL"
                )
                return
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() + pause > deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 0.1)

    def get(self, key: str) -> Item | None:
        row = (
            self._db()
            .execute(
                "SELECT key, doc, expires_at, last_used FROM items WHERE key = ? "
                "AND (expires_at IS NULL OR expires_at > ?)",
                (key, time.time()),
            )
            .fetchone()
        )
        return _item(row) if row else None

    def put(self, key: str, doc: dict[str, Any], *, expires_at: float | None = None) -> None:
        db = self._db()
        if expires_at is not None and next(self._expiring_puts) % _SWEEP_EVERY == 0:
            db.execute(
                "DELETE FROM items WHERE expires_at IS NOT NULL AND expires_at <= ?",
                (time.time(),),
            )
        db.execute(
            "INSERT INTO items (key, doc, expires_at) VALUES (?, ?, ?) "
            "ON CONFLICT(key) DO UPDATE "
            "SET doc = excluded.doc, expires_at = excluded.expires_at",
            (key, json.dumps(doc), expires_at),
        )

    def update(self, key: str, doc: dict[str, Any], *, expires_at: float | None = None) -> bool:
        cursor = self._db().execute(
            "UPDATE items SET doc = ?, expires_at = ? WHERE key = ? "
            "AND (expires_at IS NULL OR expires_at > ?)",
            (json.dumps(doc), expires_at, key, time.time()),
        )
        return cursor.rowcount > 0

    def delete(self, key: str) -> bool:
        cursor = self._db().execute("DELETE FROM items WHERE key = ?", (key,))
        return cursor.rowcount > 0

    def scan(self, prefix: str) -> list[Item]:
        now = time.time()
        db = self._db()
        # Expired rows have no other reader: drop them while we are here.
        db.execute("DELETE FROM items WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,))
        rows = db.execute(
            "SELECT key, doc, expires_at, last_used FROM items WHERE substr(key, 1, ?) = ? "
            "ORDER BY key",
            (len(prefix), prefix),
        ).fetchall()
        return [_item(row) for row in rows]

    def touch(self, key: str, when: float) -> None:
        self._db().execute("UPDATE items SET last_used = ? WHERE key = ?", (when, key))

    def increment(
        self, key: str, amounts: Mapping[str, int], *, expires_at: float
    ) -> dict[str, int]:
        with self._write_lock:
            now = time.time()
            db = self._db()
            # IMMEDIATE takes the write lock first, so threads and processes sharing the file
            # count exactly.
            db.execute("BEGIN IMMEDIATE")
            try:
                if next(self._increments) % 1000 == 0:
                    db.execute("DELETE FROM counters WHERE expires_at <= ?", (now,))
                for name, amount in amounts.items():
                    db.execute(
                        "INSERT INTO counters (key, name, value, expires_at) VALUES (?, ?, ?, ?) "
                        "ON CONFLICT(key, name) DO UPDATE SET value = CASE "
                        "WHEN counters.expires_at <= ? THEN excluded.value "
                        "ELSE counters.value + excluded.value END, "
                        "expires_at = excluded.expires_at",
                        (key, name, amount, expires_at, now),
                    )
                rows = db.execute(
                    "SELECT name, value FROM counters WHERE key = ? AND expires_at > ?",
                    (key, now),
                ).fetchall()
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return {name: int(value) for name, value in rows}

    def reserve(
        self, key: str, name: str, amount: int, limit: int, *, expires_at: float
    ) -> int | None:
        with self._write_lock:
            now = time.time()
            db = self._db()
            # IMMEDIATE: the read and the add happen under the file's write lock, so threads
            # and processes sharing the file cannot both take the same room.
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute(
                    "SELECT value FROM counters WHERE key = ? AND name = ? AND expires_at > ?",
                    (key, name, now),
                ).fetchone()
                used = int(row[0]) if row else 0
                if used >= limit:
                    db.execute("ROLLBACK")
                    return None
                added = min(amount, limit - used)
                db.execute(
                    "INSERT INTO counters (key, name, value, expires_at) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT(key, name) DO UPDATE SET value = CASE "
                    "WHEN counters.expires_at <= ? THEN excluded.value "
                    "ELSE counters.value + excluded.value END, "
                    "expires_at = excluded.expires_at",
                    (key, name, added, expires_at, now),
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return added

    def scan_counters(self, prefix: str) -> list[tuple[str, dict[str, int]]]:
        rows = (
            self._db()
            .execute(
                "SELECT key, name, value FROM counters WHERE substr(key, 1, ?) = ? "
                "AND expires_at > ? ORDER BY key",
                (len(prefix), prefix, time.time()),
            )
            .fetchall()
        )
        found: dict[str, dict[str, int]] = {}
        for key, name, value in rows:
            found.setdefault(key, {})[name] = int(value)
        return list(found.items())


def _file_identity(path: str) -> tuple[int, int] | None:
    """Device and inode of the file at `path` (None if it is gone): a new file, even under
    the same name, has another."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    """SQLITE_BUSY or SQLITE_LOCKED (their extended codes too): someone else holds the
    file for now."""
    return exc.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _item(row: tuple[str, str, float | None, float | None]) -> Item:
    return Item(row[0], json.loads(row[1]), row[2], row[3])
