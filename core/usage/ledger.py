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

import asyncio
import datetime
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, get_args
from urllib.parse import quote, unquote

from core.errors import ProxyError
from core.stores import Store
from core.stores.calls import call_store_later

if TYPE_CHECKING:
    from core.request import ProxyRequest
    from core.stages import Outcome
    from core.usage.prices import PriceTable

logger = logging.getLogger("llm_proxy")

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

    def record_request(self, entry: RequestEntry) -> None:
        """Keep one request in the bounded request log (the dashboard's Requests page)."""
        _record_request(self.store, entry)

    def recent_requests(self, **filters: Any) -> list[RequestEntry]:
        return recent_requests(self.store, **filters)

    def callers_window(self, since: datetime.date) -> dict[str, UsageRow]:
        """Every caller's totals since `since`, from one scan (for a list of tokens)."""
        return {row.key: row for row in self.rows(by="caller", since=since)}


# ---- the request log: the latest requests, one document each, bounded per store ------

REQUEST_PREFIX = "requests:"
# The most requests a store keeps: each new one takes the next of this many slots, so the
# log never grows past it whatever the traffic (and each row lasts a week at most).
REQUEST_LOG_SIZE = 2000
REQUEST_RETENTION_SECONDS = 7 * _DAY
_SEQUENCE_KEY = "requests:sequence"


@dataclass(frozen=True)
class RequestEntry:
    """One proxied request as the dashboard's Requests page shows it."""

    at: float
    caller: str
    provider: str
    model: str
    status: int
    refusal: str = ""
    latency_ms: float = 0.0
    first_byte_ms: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float | None = None
    cache: str = ""
    stream: bool = False
    request_id: str = ""

    def to_json(self) -> dict[str, object]:
        return {
            "at": self.at,
            "caller": self.caller,
            "provider": self.provider,
            "model": self.model,
            "status": self.status,
            "refusal": self.refusal,
            "latency_ms": round(self.latency_ms, 2),
            "first_byte_ms": None if self.first_byte_ms is None else round(self.first_byte_ms, 2),
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": None if self.cost_usd is None else round(self.cost_usd, 6),
            "cache": self.cache,
            "stream": self.stream,
            "request_id": self.request_id,
        }

    @classmethod
    def from_json(cls, doc: dict[str, object]) -> RequestEntry | None:
        try:
            return cls(**{name: doc[name] for name in _ENTRY_FIELDS if name in doc})  # type: ignore[arg-type]
        except TypeError:
            return None

    def matches(self, caller: str, model: str, status: str) -> bool:
        if caller and self.caller != caller:
            return False
        if model and self.model != model:
            return False
        if status:
            code = str(self.status)
            if status.endswith("xx"):
                return code[:1] == status[:1]
            return status in (code, self.refusal)
        return True


_ENTRY_FIELDS = tuple(RequestEntry.__dataclass_fields__)


def _record_request(store: Store, entry: RequestEntry) -> None:
    sequence = store.increment(
        _SEQUENCE_KEY, {"n": 1}, expires_at=entry.at + RETENTION_DAYS * _DAY
    )["n"]
    slot = sequence % REQUEST_LOG_SIZE
    store.put(
        f"{REQUEST_PREFIX}{slot:05d}",
        entry.to_json(),
        expires_at=entry.at + REQUEST_RETENTION_SECONDS,
    )


def recent_requests(
    store: Store, *, limit: int = 200, caller: str = "", model: str = "", status: str = ""
) -> list[RequestEntry]:
    """The latest requests first, filtered; reads the whole bounded log (admin use)."""
    entries = []
    for item in store.scan(REQUEST_PREFIX):
        entry = RequestEntry.from_json(item.doc)
        if entry is not None and entry.matches(caller, model, status):
            entries.append(entry)
    entries.sort(key=lambda entry: entry.at, reverse=True)
    return entries[:limit]


def percentiles(values: list[float], points: tuple[int, ...] = (50, 90, 99)) -> dict[str, float]:
    """Nearest-rank percentiles, e.g. {"p50": .., "p90": .., "p99": ..}; {} for no values."""
    if not values:
        return {}
    ordered = sorted(values)
    last = len(ordered) - 1
    return {
        f"p{p}": round(ordered[min(last, max(0, -(-p * len(ordered) // 100) - 1))], 2)
        for p in points
    }


def request_figures(entries: list[RequestEntry]) -> dict[str, object]:
    """Latency and time-to-first-byte percentiles of the given requests (those that reached
    an upstream; a refusal's few microseconds would only flatter the figures)."""
    forwarded = [e for e in entries if not e.refusal and e.cache != "hit"]
    return {
        "requests": len(entries),
        "latency_ms": percentiles([e.latency_ms for e in forwarded]),
        "first_byte_ms": percentiles(
            [e.first_byte_ms for e in forwarded if e.first_byte_ms is not None]
        ),
    }


class RecordUsage:
    """The settle stage's usage ledger entry: what each metered reply used and cost."""

    def __init__(self, ledger: UsageLedger, prices: PriceTable, timeout: float) -> None:
        self.ledger = ledger
        self.prices = prices
        self.timeout = timeout

    async def __call__(self, request: ProxyRequest, outcome: Outcome) -> None:
        if not outcome.billable or request.route.kind not in ("metered", "minting"):
            return
        usage = outcome.usage
        try:
            model = await request.model()
        except ProxyError:
            model = None
        if outcome.cost_usd is None and usage is not None:
            # No budget priced it: the ledger still shows what it cost, where a price is known.
            price = self.prices.find(model)
            if price is not None:
                outcome.cost_usd = price.cost_usd(usage)
        entry = UsageEntry(
            caller=request.counted_as,
            provider=request.provider.name,
            model=model or "",
            input_tokens=usage.input_tokens if usage else 0,
            output_tokens=usage.output_tokens if usage else 0,
            cached_input_tokens=usage.cached_input_tokens if usage else 0,
            cost_usd=outcome.cost_usd or 0.0,
        )
        # Bookkeeping: written in the background, so no reply waits on the ledger's store.
        done = call_store_later(self.ledger.store, self.ledger.record, entry)
        done.add_done_callback(_log_ledger_failure)


def _log_ledger_failure(done: asyncio.Future[None]) -> None:
    if not done.cancelled() and done.exception() is not None:
        logger.warning("usage ledger write failed: %s", type(done.exception()).__name__)
