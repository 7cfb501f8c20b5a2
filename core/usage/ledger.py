"""The usage ledger: tokens and cost per caller, provider, model and UTC day.

Each metered request adds to one group of counters with the store's atomic `increment`
(so every instance adds to the same figures and none is lost under concurrency), under

    usage:<YYYY-MM-DD>:<caller>:<provider>:<model>

with each part percent-encoded (`:` and `%` included), so any character is safe and the
key still reads as what it counts. Counters are integers: cost is kept in micro-dollars.
Groups expire after RETENTION_DAYS. Reports scan the `usage:` counters (`scan_counters`)
and add them up; they are for the admin, never on a request's path.
"""

from __future__ import annotations

import datetime
import time
from dataclasses import dataclass
from typing import Literal, get_args
from urllib.parse import quote, unquote

from core.stores import Store

KEY_PREFIX = "usage:"
RETENTION_DAYS = 400
_DAY = 86400
# A caller id or model longer than this is cut: a key stays small whatever a request says.
_MAX_PART = 200

GroupBy = Literal["caller", "provider", "model", "day"]
GROUPINGS: tuple[str, ...] = get_args(GroupBy)


@dataclass(frozen=True)
class UsageEntry:
    caller: str  # stable id: "token:<id>", "user:<sub>", "ip:<addr>", "shared", "anonymous"
    provider: str  # provider route name, e.g. "openai", "default", "anthropic"
    model: str  # "" if unknown
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int = 0
    cost_usd: float = 0.0
    saved_tokens: int = 0  # served from the response cache: tokens not spent
    at: float = 0.0  # epoch seconds; 0 means now


@dataclass(frozen=True)
class UsageRow:
    """One group's totals; `key` is the caller, provider, model or ISO day grouped by."""

    key: str
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cost_usd: float = 0.0
    saved_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def to_json(self) -> dict[str, object]:
        return {
            "key": self.key,
            "requests": self.requests,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cached_input_tokens": self.cached_input_tokens,
            "total_tokens": self.total_tokens,
            "cost_usd": round(self.cost_usd, 6),
            "saved_tokens": self.saved_tokens,
        }


@dataclass(frozen=True)
class _Group:
    day: str
    caller: str
    provider: str
    model: str
    counters: dict[str, int]


def _part(text: str) -> str:
    return quote(text[:_MAX_PART], safe="")


def usage_key(day: str, caller: str, provider: str, model: str) -> str:
    return f"{KEY_PREFIX}{day}:{_part(caller)}:{_part(provider)}:{_part(model)}"


def _parse_key(key: str) -> tuple[str, str, str, str] | None:
    parts = key[len(KEY_PREFIX) :].split(":")
    if len(parts) != 4:
        return None
    day, caller, provider, model = parts
    return day, unquote(caller), unquote(provider), unquote(model)


def _day(stamp: float) -> datetime.date:
    return datetime.datetime.fromtimestamp(stamp, datetime.UTC).date()


def _add(rows: dict[str, dict[str, int]], key: str, counters: dict[str, int]) -> None:
    row = rows.setdefault(key, {})
    for name, value in counters.items():
        row[name] = row.get(name, 0) + value


def _row(key: str, counters: dict[str, int]) -> UsageRow:
    return UsageRow(
        key=key,
        requests=counters.get("requests", 0),
        input_tokens=counters.get("input_tokens", 0),
        output_tokens=counters.get("output_tokens", 0),
        cached_input_tokens=counters.get("cached_input_tokens", 0),
        cost_usd=counters.get("cost_micro_usd", 0) / 1_000_000,
        saved_tokens=counters.get("saved_tokens", 0),
    )


class UsageLedger:
    def __init__(self, store: Store) -> None:
        self.store = store

    def record(self, entry: UsageEntry) -> None:
        """Add one request's usage: a single atomic increment on the store."""
        at = entry.at or time.time()
        day = _day(at)
        day_start = datetime.datetime.combine(day, datetime.time(), datetime.UTC).timestamp()
        self.store.increment(
            usage_key(day.isoformat(), entry.caller, entry.provider, entry.model),
            {
                "requests": 1,
                "input_tokens": max(0, int(entry.input_tokens)),
                "output_tokens": max(0, int(entry.output_tokens)),
                "cached_input_tokens": max(0, int(entry.cached_input_tokens)),
                "cost_micro_usd": max(0, round(entry.cost_usd * 1_000_000)),
                "saved_tokens": max(0, int(entry.saved_tokens)),
            },
            expires_at=day_start + (RETENTION_DAYS + 1) * _DAY,
        )

    def _groups(self, since: datetime.date | None) -> list[_Group]:
        first = since.isoformat() if since is not None else ""
        groups = []
        for key, counters in self.store.scan_counters(KEY_PREFIX):
            parsed = _parse_key(key)
            if parsed is None or parsed[0] < first:
                continue
            groups.append(_Group(*parsed, counters=counters))
        return groups

    def rows(self, *, by: GroupBy, since: datetime.date | None = None) -> list[UsageRow]:
        """Totals per caller, provider, model or day since `since` (inclusive, UTC); days in
        order, the others by cost then tokens, largest first."""
        if by not in GROUPINGS:
            raise ValueError(f"usage can be grouped by {', '.join(GROUPINGS)}, not {by!r}")
        totals: dict[str, dict[str, int]] = {}
        for group in self._groups(since):
            _add(totals, getattr(group, by), group.counters)
        rows = [_row(key, counters) for key, counters in totals.items()]
        if by == "day":
            return sorted(rows, key=lambda r: r.key)
        return sorted(rows, key=lambda r: (-r.cost_usd, -r.total_tokens, r.key))

    def caller_window(self, caller: str, since: datetime.date) -> UsageRow:
        """One caller's totals since `since` (the tokens page's "usage this window")."""
        totals: dict[str, dict[str, int]] = {}
        for group in self._groups(since):
            if group.caller == caller:
                _add(totals, caller, group.counters)
        return _row(caller, totals.get(caller, {}))

    def callers_window(self, since: datetime.date) -> dict[str, UsageRow]:
        """Every caller's totals since `since`, from one scan (for a list of tokens)."""
        return {row.key: row for row in self.rows(by="caller", since=since)}
