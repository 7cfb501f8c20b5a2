"""Redis for Vercel and every other platform: a hosted Redis over TLS (`rediss://`) works.

Each item is a hash (`doc`, `last_used`, `expires_at`) with a native expiry, so expired
tokens vanish on their own. redis-py is imported when this store is opened.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from typing import Any

from core.stores import Item

# HSET only when the hash still exists: a touch must not resurrect a revoked token.
_TOUCH = (
    "if redis.call('EXISTS', KEYS[1]) == 1 then "
    "redis.call('HSET', KEYS[1], 'last_used', ARGV[1]) end"
)

# `update`: the document replaced only where one is (an expired hash is already gone).
_UPDATE = (
    "if redis.call('HEXISTS', KEYS[1], 'doc') == 0 then return 0 end "
    "redis.call('HSET', KEYS[1], 'doc', ARGV[1], 'expires_at', ARGV[2]) "
    "if ARGV[3] == '' then redis.call('PERSIST', KEYS[1]) "
    "else redis.call('EXPIREAT', KEYS[1], ARGV[3]) end "
    "return 1"
)


class RedisStore:
    blocking = True

    def __init__(self, url: str) -> None:
        import redis  # only when a Redis store is configured

        self._redis = redis.Redis.from_url(
            url, decode_responses=True, socket_timeout=5, socket_connect_timeout=5
        )

    def get(self, key: str) -> Item | None:
        raw: dict[str, str] = self._redis.hgetall(key)  # type: ignore[assignment]
        if not raw or "doc" not in raw:
            return None
        item = _item(key, raw)
        if item.expires_at is not None and item.expires_at <= time.time():
            return None
        return item

    def put(self, key: str, doc: dict[str, Any], *, expires_at: float | None = None) -> None:
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(
            key,
            mapping={
                "doc": json.dumps(doc),
                "expires_at": "" if expires_at is None else repr(expires_at),
            },
        )
        if expires_at is None:
            pipe.persist(key)
        else:
            pipe.expireat(key, math.ceil(expires_at))
        pipe.execute()

    def update(self, key: str, doc: dict[str, Any], *, expires_at: float | None = None) -> bool:
        item = self.get(key)  # an item past its own expires_at counts as gone
        if item is None:
            return False
        stamp = "" if expires_at is None else repr(expires_at)
        at = "" if expires_at is None else str(math.ceil(expires_at))
        return bool(self._redis.eval(_UPDATE, 1, key, json.dumps(doc), stamp, at))

    def delete(self, key: str) -> bool:
        return bool(self._redis.delete(key))

    def scan(self, prefix: str) -> list[Item]:
        items = []
        for key in sorted(self._redis.scan_iter(match=_glob_escape(prefix) + "*", count=500)):
            item = self.get(key)
            if item is not None:
                items.append(item)
        return items

    def touch(self, key: str, when: float) -> None:
        self._redis.eval(_TOUCH, 1, key, repr(when))

    def increment(
        self, key: str, amounts: Mapping[str, int], *, expires_at: float
    ) -> dict[str, int]:
        # One round trip: MULTI/EXEC runs the adds, the expiry and the read atomically.
        pipe = self._redis.pipeline(transaction=True)
        for name, amount in amounts.items():
            pipe.hincrby(key, name, amount)
        pipe.expireat(key, math.ceil(expires_at))
        pipe.hgetall(key)
        counters: dict[str, str] = pipe.execute()[-1]
        return {name: int(value) for name, value in counters.items()}

    def scan_counters(self, prefix: str) -> list[tuple[str, dict[str, int]]]:
        keys = sorted(self._redis.scan_iter(match=_glob_escape(prefix) + "*", count=500))
        pipe = self._redis.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(key)
        found = []
        for key, raw in zip(keys, pipe.execute() if keys else [], strict=True):
            # Documents are hashes too: theirs have a `doc` field, counters never do.
            if raw and "doc" not in raw:
                found.append((key, {name: int(value) for name, value in raw.items()}))
        return found

    def reserve(
        self, key: str, name: str, amount: int, limit: int, *, expires_at: float
    ) -> int | None:
        # One script: Redis runs it atomically, so the check and the add cannot interleave
        # with another instance's.
        reply = self._redis.eval(
            _RESERVE_SCRIPT, 1, key, name, amount, limit, math.ceil(expires_at)
        )
        return None if reply is None else int(reply)


_RESERVE_SCRIPT = """
local used = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local limit = tonumber(ARGV[3])
if used >= limit then return false end
local added = math.min(tonumber(ARGV[2]), limit - used)
redis.call('HINCRBY', KEYS[1], ARGV[1], added)
redis.call('EXPIREAT', KEYS[1], ARGV[4])
return added
"""


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


def _float(value: str | None) -> float | None:
    return float(value) if value else None


def _item(key: str, raw: dict[str, str]) -> Item:
    return Item(
        key, json.loads(raw["doc"]), _float(raw.get("expires_at")), _float(raw.get("last_used"))
    )
