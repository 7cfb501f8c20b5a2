"""The kill switch and the schedule: windows, the per-instance cache, and what callers see."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.access.status import (
    STATUS_KEY,
    ScheduleError,
    ServiceStatus,
    parse_window,
    parse_windows,
    window_doc,
)
from core.app import create_app
from core.config import load_settings
from core.errors import ProxyOffline
from core.stores import Store, open_store
from tests.support.servers import FAKE_TOKEN, RunningServer, proxy_env, serve_in_thread

CACHE = 0.3


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def test_nightly_windows_wrap_past_midnight() -> None:
    night = parse_window({"nightly": "22:00-06:30"})
    assert night.covers(at("2026-11-30T23:15:00"))
    assert night.covers(at("2026-11-30T06:29:00"))
    assert not night.covers(at("2026-11-30T06:30:00"))
    assert not night.covers(at("2026-11-30T12:00:00"))
    lunch = parse_window("12:00-13:00")
    assert lunch.covers(at("2026-11-30T12:59:59")) and not lunch.covers(at("2026-11-30T13:00:00"))


def test_absolute_windows_and_bad_input() -> None:
    window = parse_window(
        {"from": "2026-12-24T18:00:00Z", "to": "2026-12-27T08:00", "note": "xmas"}
    )
    assert window.covers(at("2026-12-25T00:00:00"))
    assert not window.covers(at("2026-12-27T08:00:00"))
    assert "xmas" in window.describe()
    for bad, says in [
        ({"nightly": "25:00-06:00"}, "22:00-06:00"),
        ({"nightly": "06:00-06:00"}, "start and end together"),
        ({"from": "2026-12-27T00:00:00Z", "to": "2026-12-24T00:00:00Z"}, "after from"),
        ({"from": "soon", "to": "later"}, "ISO time"),
        ({}, "nightly, or from and to"),
        (7, "must be an object"),
    ]:
        with pytest.raises(ScheduleError, match=says):
            parse_window(bad)
    with pytest.raises(ScheduleError, match="list"):
        parse_windows({"nightly": "22:00-06:00"})


async def test_switch_and_schedule_with_the_cache(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/status.db"
    admin, instance = ServiceStatus(open_store(url)), ServiceStatus(open_store(url), CACHE)
    now = at("2026-11-30T12:00:00")
    assert await instance.offline_reason(now) is None
    admin.set_online(False)
    # Another instance obeys within its cache time, not necessarily at once.
    time.sleep(CACHE + 0.05)
    reason = await instance.offline_reason(now)
    assert reason is not None and "switched off" in reason
    with pytest.raises(ProxyOffline) as raised:
        await instance.check(now)
    assert raised.value.status == 503
    admin.set_online(True)
    admin.set_windows([{"nightly": "11:00-13:00", "note": "maintenance"}])
    time.sleep(CACHE + 0.05)
    reason = await instance.offline_reason(now)
    assert reason is not None and "11:00-13:00" in reason and "maintenance" in reason
    assert await instance.offline_reason(at("2026-11-30T14:00:00")) is None
    assert admin.read().to_json(now)["windows"] == [
        {"nightly": "11:00-13:00", "note": "maintenance"}
    ]


class _OtherAdminFirst:
    """A store whose next write lets another admin's change land first: the moment
    between an admin's read of the status and its write."""

    def __init__(self, store: Store, other: Callable[[], object]) -> None:
        self.store, self.other = store, other
        self.blocking = store.blocking

    def put(self, *args: Any, **kwargs: Any) -> None:
        other, self.other = self.other, lambda: None
        other()
        self.store.put(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def test_saving_the_schedule_never_undoes_a_concurrent_switch_off(tmp_path: Path) -> None:
    """Two admins at once: one saves the schedule while the other switches the proxy off.
    One document for both, read then written whole, put the switch back on (main)."""
    url = f"sqlite:///{tmp_path}/status.db"
    other = ServiceStatus(open_store(url))
    admin = ServiceStatus(_OtherAdminFirst(open_store(url), lambda: other.set_online(False)))  # type: ignore[arg-type]
    admin.set_windows([{"nightly": "02:00-03:00"}])
    seen = ServiceStatus(open_store(url)).read()
    assert not seen.online  # main: online again, the kill undone
    assert [window_doc(w) for w in seen.windows] == [{"nightly": "02:00-03:00"}]


def test_switching_never_undoes_a_concurrent_schedule(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/status.db"
    other = ServiceStatus(open_store(url))
    night = [{"nightly": "02:00-03:00"}]
    admin = ServiceStatus(_OtherAdminFirst(open_store(url), lambda: other.set_windows(night)))  # type: ignore[arg-type]
    admin.set_online(False)
    seen = ServiceStatus(open_store(url)).read()
    assert not seen.online
    assert [window_doc(w) for w in seen.windows] == night  # main: the schedule lost


def test_a_schedule_release_0_3_0_stored_with_the_switch_is_still_obeyed() -> None:
    store = open_store("memory://")
    night = [{"nightly": "02:00-03:00"}]
    store.put(STATUS_KEY, {"online": True, "windows": night, "changed_at": 1.0})
    status = ServiceStatus(store)
    assert [window_doc(w) for w in status.read().windows] == night
    status.set_online(False)  # keeps the old windows until a schedule is saved
    assert [window_doc(w) for w in status.read().windows] == night
    status.set_windows([])
    assert status.read().windows == () and not status.read().online


async def test_an_unreadable_store_keeps_the_last_known_status() -> None:
    status = ServiceStatus(open_store("memory://"), cache_seconds=0)
    status.set_online(False)

    def broken(key: str) -> None:
        raise ConnectionError("redis://:password@host down")

    status.store.get = broken  # type: ignore[method-assign,assignment]
    assert await status.offline_reason(time.time()) is not None


@pytest.fixture
def offline_proxy(
    mock_upstream: RunningServer, tmp_path: Path
) -> Iterator[tuple[str, ServiceStatus]]:
    upstream = mock_upstream.url
    env = proxy_env(
        upstream,
        ANTHROPIC_API_KEY="fake-anthropic-key-for-tests",
        ANTHROPIC_UPSTREAM=upstream,
        GEMINI_API_KEY="mock-gemini",
        GEMINI_UPSTREAM=upstream,
        TOKEN_STORE=f"sqlite:///{tmp_path}/tokens.db",
        TOKEN_CACHE_SECONDS=str(CACHE),
    )
    with serve_in_thread(create_app(load_settings(env))) as server:
        yield server.url, ServiceStatus(open_store(env["TOKEN_STORE"]))


def test_offline_answers_503_in_each_protocol_and_health_stays_up(
    offline_proxy: tuple[str, ServiceStatus],
) -> None:
    url, admin = offline_proxy
    auth = {"authorization": f"Bearer {FAKE_TOKEN}"}
    chat = {"model": "mock-model", "messages": [{"role": "user", "content": "hi"}]}
    assert httpx.post(f"{url}/v1/chat/completions", json=chat, headers=auth).status_code == 200
    admin.set_online(False)
    time.sleep(CACHE + 0.05)

    openai = httpx.post(f"{url}/v1/chat/completions", json=chat, headers=auth)
    assert openai.status_code == 503
    assert openai.json()["error"]["code"] == "service_offline"
    assert openai.headers["retry-after"] == "60"
    anthropic = httpx.post(
        f"{url}/anthropic/v1/messages",
        json={"model": "claude", "max_tokens": 5, "messages": []},
        headers={"x-api-key": FAKE_TOKEN},
    )
    assert anthropic.status_code == 503
    assert anthropic.json()["type"] == "error"
    assert anthropic.json()["error"]["type"] == "overloaded_error"
    gemini = httpx.post(
        f"{url}/gemini/v1beta/models/gemini-2.0-flash:generateContent",
        json={"contents": []},
        headers={"x-goog-api-key": FAKE_TOKEN},
    )
    assert gemini.status_code == 503 and gemini.json()["error"]["status"] == "UNAVAILABLE"
    assert httpx.get(f"{url}/health").status_code == 200

    admin.set_online(True)
    time.sleep(CACHE + 0.05)
    assert httpx.post(f"{url}/v1/chat/completions", json=chat, headers=auth).status_code == 200


def test_the_next_offline_moment_of_a_schedule() -> None:
    """What a minted key must not outlive (core/realtime/minting.py): the start of the next
    window after now, tonight's or tomorrow's for a nightly one; never one already past."""
    from core.access.status import StatusDoc

    def at(text: str) -> float:
        return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()

    nightly = parse_window({"nightly": "22:00-06:00"})
    assert nightly.next_start(at("2026-12-05T07:00:00")) == at("2026-12-05T22:00:00")
    assert nightly.next_start(at("2026-12-05T22:00:00")) == at("2026-12-06T22:00:00")
    past = parse_window({"from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z"})
    later = parse_window({"from": "2026-12-05T09:30:00Z", "to": "2026-12-05T10:00:00Z"})
    assert past.next_start(at("2026-12-05T08:00:00")) is None
    doc = StatusDoc(windows=(nightly, past, later))
    assert doc.online_until(at("2026-12-05T08:00:00")) == at("2026-12-05T09:30:00")
    assert doc.online_until(at("2026-12-05T11:00:00")) == at("2026-12-05T22:00:00")
    assert StatusDoc(windows=(past,)).online_until(at("2026-12-05T08:00:00")) is None
