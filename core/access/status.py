"""The kill switch and the schedule: when the proxy serves no one, whoever asks.

Two documents in the token store (memory if none), so every instance obeys a change within
TOKEN_CACHE_SECONDS: the switch, `status` = {"online": bool}, and the schedule, `schedule`
= {"windows": [...]}. Each change writes only its own: one document for both, read then
written back whole, let an admin saving the schedule undo another's switch-off made
between the read and the write (release 0.3.0 kept the windows in `status`: they are read
there until a schedule is saved). A window is either
nightly, `{"nightly": "22:00-06:00"}` (UTC, may wrap past midnight), or absolute,
`{"from": "2026-12-24T18:00:00Z", "to": "2026-12-27T08:00:00Z"}`; either may carry a `note`.

While offline every proxy route answers 503 in the caller's own error shape (/proxy/usage
included); /health and /admin keep working. An open realtime session is closed with 1013
(try again later) within REALTIME_RECHECK_SECONDS, or at once on a frame that starts a turn
(core/realtime/stages.py). A store that cannot be read keeps the last known status (online if
none was ever read): the switch is an operator's tool, not a credential check, and the
token check already fails closed for stored tokens when the store is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from core.errors import ProxyOffline
from core.stores import Store
from core.stores.calls import DEFAULT_STORE_TIMEOUT, call_store

if TYPE_CHECKING:
    from core.request import ProxyRequest
    from core.stages import Ticket

logger = logging.getLogger("llm_proxy")

STATUS_KEY = "status"
SCHEDULE_KEY = "schedule"
_NIGHTLY = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)$")
MAX_WINDOWS = 50


class ScheduleError(ValueError):
    """A schedule the proxy cannot follow; the message says which window and why."""


@dataclass(frozen=True)
class Window:
    nightly: tuple[int, int] | None = None  # minutes after midnight UTC: start, end
    start: float | None = None  # absolute, epoch seconds
    end: float | None = None
    note: str = ""

    def covers(self, now: float) -> bool:
        if self.nightly is not None:
            stamp = datetime.fromtimestamp(now, UTC)
            minute = stamp.hour * 60 + stamp.minute
            first, last = self.nightly
            if first <= last:
                return first <= minute < last
            return minute >= first or minute < last  # wraps past midnight
        assert self.start is not None and self.end is not None
        return self.start <= now < self.end

    def next_start(self, now: float) -> float | None:
        """When this window next begins after `now`; None for one that never will (an
        absolute window already begun or past)."""
        if self.nightly is not None:
            stamp = datetime.fromtimestamp(now, UTC)
            midnight = stamp.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
            start = midnight + self.nightly[0] * 60
            return start if start > now else start + 86400
        assert self.start is not None
        return self.start if self.start > now else None

    def describe(self) -> str:
        if self.nightly is not None:
            first, last = self.nightly
            text = (
                f"every night {first // 60:02}:{first % 60:02}-{last // 60:02}:{last % 60:02} UTC"
            )
        else:
            assert self.start is not None and self.end is not None
            text = f"from {_iso(self.start)} to {_iso(self.end)}"
        return f"{text} ({self.note})" if self.note else text


def _iso(stamp: float) -> str:
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(text: Any, where: str) -> float:
    if not isinstance(text, str):
        raise ScheduleError(f"{where} must be an ISO time like 2026-12-24T18:00:00Z")
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ScheduleError(f"{where} must be an ISO time like 2026-12-24T18:00:00Z") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    try:
        # In UTC first: the time is written back in UTC, where an offset may push it past
        # the calendar's ends (year 1 at +14:00 is year 0 in UTC).
        return when.astimezone(UTC).timestamp()
    except (OverflowError, ValueError):
        raise ScheduleError(f"{where} is outside the years 1 to 9999 in UTC") from None


def _encodable(text: str) -> bool:
    # A lone surrogate (JSON's "\ud800") is no UTF-8: kept, it would make every reply that
    # quotes the note (the dashboard's, each caller's 503 while offline) fail to encode.
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def parse_window(raw: Any, index: int = 1) -> Window:
    where = f"window {index}"
    if isinstance(raw, str):
        raw = {"nightly": raw}
    if not isinstance(raw, dict):
        raise ScheduleError(f"{where} must be an object: {{nightly}} or {{from, to}}")
    note = raw.get("note") or ""
    if not isinstance(note, str) or len(note) > 200 or not _encodable(note):
        raise ScheduleError(f"{where}: note must be text of at most 200 characters")
    if "nightly" in raw:
        text = raw["nightly"]
        match = _NIGHTLY.match(text.strip()) if isinstance(text, str) else None
        if match is None:
            raise ScheduleError(f"{where}: nightly must look like 22:00-06:00 (UTC)")
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        if (h1, m1) == (h2, m2):
            raise ScheduleError(f"{where}: a nightly window must not start and end together")
        return Window(nightly=(h1 * 60 + m1, h2 * 60 + m2), note=note)
    if "from" in raw or "to" in raw:
        start = _parse_time(raw.get("from"), f"{where}: from")
        end = _parse_time(raw.get("to"), f"{where}: to")
        if end <= start:
            raise ScheduleError(f"{where}: to must be after from")
        return Window(start=start, end=end, note=note)
    raise ScheduleError(f"{where} must have nightly, or from and to")


def window_doc(window: Window) -> dict[str, str]:
    if window.nightly is not None:
        first, last = window.nightly
        doc = {"nightly": f"{first // 60:02}:{first % 60:02}-{last // 60:02}:{last % 60:02}"}
    else:
        assert window.start is not None and window.end is not None
        doc = {"from": _iso(window.start), "to": _iso(window.end)}
    if window.note:
        doc["note"] = window.note
    return doc


def parse_windows(raw: Any) -> list[Window]:
    if not isinstance(raw, list):
        raise ScheduleError("windows must be a list")
    if len(raw) > MAX_WINDOWS:
        raise ScheduleError(f"at most {MAX_WINDOWS} windows")
    return [parse_window(item, index) for index, item in enumerate(raw, start=1)]


@dataclass(frozen=True)
class StatusDoc:
    online: bool = True
    windows: tuple[Window, ...] = ()
    changed_at: float | None = None

    def offline_reason(self, now: float) -> str | None:
        if not self.online:
            return "The service is switched off by its operator; try again later."
        for window in self.windows:
            if window.covers(now):
                return f"The service is offline on schedule ({window.describe()})."
        return None

    def online_until(self, now: float) -> float | None:
        """When the schedule next takes the proxy offline after `now` (None: never, as it
        stands). What outlives the proxy's own checks (a minted key) must end by then."""
        starts = [start for w in self.windows if (start := w.next_start(now)) is not None]
        return min(starts, default=None)

    def to_json(self, now: float) -> dict[str, Any]:
        return {
            "online": self.online,
            "windows": [window_doc(w) for w in self.windows],
            "changed_at": self.changed_at,
            "offline_reason": self.offline_reason(now),
        }


def _from_doc(doc: dict[str, Any]) -> StatusDoc:
    windows = []
    for index, raw in enumerate(doc.get("windows") or [], start=1):
        try:
            windows.append(parse_window(raw, index))
        except ScheduleError as exc:  # written by hand into the store: skip, say so
            logger.warning("status: ignoring %s", exc)
    return StatusDoc(
        online=bool(doc.get("online", True)),
        windows=tuple(windows),
        changed_at=doc.get("changed_at"),
    )


# The request that refreshes the switch's state waits this long for it, then goes on with
# the last known state while the read finishes in the background.
_READ_WAIT = 0.5


class ServiceStatus:
    """Reads the status document at most once per `cache_seconds` per instance."""

    def __init__(
        self, store: Store, cache_seconds: float = 2.0, timeout: float = DEFAULT_STORE_TIMEOUT
    ) -> None:
        self.store = store
        self.cache_seconds = cache_seconds
        self.timeout = timeout
        self._known = StatusDoc()
        self._fetched_at: float | None = None  # monotonic
        self._refreshing: asyncio.Future[None] | None = None

    # ---- per request -------------------------------------------------------------------

    async def offline_reason(self, now: float) -> str | None:
        fetched = self._fetched_at
        if fetched is None or time.monotonic() - fetched >= self.cache_seconds:
            if not self.store.blocking:
                self._refresh_now()
            elif self._refreshing is None:
                # One read per period, by the request that found the state stale; it waits
                # for the answer only briefly, and requests meanwhile use the last known
                # state: no caller waits long on a slow store for the switch.
                self._fetched_at = time.monotonic()
                refresh = self._refreshing = asyncio.ensure_future(self._refresh())
                refresh.add_done_callback(self._refreshed)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(refresh), _READ_WAIT)
        return self._known.offline_reason(now)

    def _refreshed(self, _: asyncio.Future[None]) -> None:
        self._refreshing = None

    def _refresh_now(self) -> None:
        try:
            self._known = self.read()
        except Exception as exc:
            logger.error("status read failed, keeping the last known: %s", type(exc).__name__)
        self._fetched_at = time.monotonic()

    def online_until(self, now: float) -> float | None:
        """When the schedule, as last read (KillSwitch read it for this request), next takes
        the proxy offline after `now`; None if it never does."""
        return self._known.online_until(now)

    async def check(self, now: float) -> None:
        """Raise ProxyOffline (503) while the switch is off or a window covers `now`."""
        reason = await self.offline_reason(now)
        if reason is not None:
            raise ProxyOffline(reason, headers={"retry-after": "60"})

    async def _refresh(self) -> None:
        try:
            self._known = await call_store(self.store, self.timeout, self.read)
        except Exception as exc:
            # The type only: a driver's message may quote the store URL and its password.
            logger.error("status read failed, keeping the last known: %s", type(exc).__name__)
        self._fetched_at = time.monotonic()

    # ---- admin (sync: the admin API calls them off the loop) ---------------------------

    def read(self) -> StatusDoc:
        switch = self.store.get(STATUS_KEY)
        schedule = self.store.get(SCHEDULE_KEY)
        doc = {} if switch is None else switch.doc
        windows = doc if schedule is None else schedule.doc  # 0.3.0 kept both in `status`
        stamps = [d.get("changed_at") for d in (doc, windows)]
        return _from_doc(
            {
                "online": doc.get("online", True),
                "windows": windows.get("windows"),
                "changed_at": max((t for t in stamps if isinstance(t, int | float)), default=None),
            }
        )

    def _obey(self) -> StatusDoc:
        # This instance obeys at once; the others within cache_seconds.
        self._known, self._fetched_at = self.read(), time.monotonic()
        return self._known

    def set_online(self, online: bool) -> StatusDoc:
        doc: dict[str, Any] = {"online": online, "changed_at": time.time()}
        if self.store.get(SCHEDULE_KEY) is None:
            # Windows release 0.3.0 kept here stay until a schedule is saved; a
            # schedule saved meanwhile is read first, so this cannot undo it.
            old = self.store.get(STATUS_KEY)
            if old is not None and old.doc.get("windows"):
                doc["windows"] = old.doc["windows"]
        self.store.put(STATUS_KEY, doc)
        return self._obey()

    def set_windows(self, raw: Any) -> StatusDoc:
        windows = [window_doc(w) for w in parse_windows(raw)]
        self.store.put(SCHEDULE_KEY, {"windows": windows, "changed_at": time.time()})
        return self._obey()


class KillSwitch:
    """Offline now, or in a scheduled window: every proxy route answers 503."""

    reads_body = False

    def __init__(self, status: ServiceStatus) -> None:
        self.status = status

    async def admit(self, request: ProxyRequest) -> Ticket | None:
        await self.status.check(time.time())
        return None
