"""Nothing outlives the rule that ends it, on HTTP too (core/proxy/open_checks.py): a reply
still being relayed when its token is revoked, or the proxy switched off, stops within the
recheck period, and with it the upstream request; one still awaited from the upstream is
answered with the refusal itself. Over real sockets, under uvicorn's stock server (the
disconnect listener's task group) and under `llm-proxy serve`'s own (the watched relay)."""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from core.access.tokens import create_token, revoke_token
from core.app import create_app
from core.caller import SHARED_TOKEN_CALLER, Caller
from core.config import load_settings
from core.proxy.open_checks import can_end
from core.stores import open_store
from core.types import Receive, Scope, Send
from tests.support.servers import (
    RunningServer,
    proxy_env,
    reset_upstream,
    serve_as_deployed,
    serve_in_thread,
)

SERVERS: dict[str, Callable[[Any], AbstractContextManager[RunningServer]]] = {
    "uvicorn": serve_in_thread,
    "llm-proxy serve": serve_as_deployed,
}
ADMIN_TOKEN = "admin-token-for-tests-only-0123456789abcdef"
CHAT = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}


# A generation far longer than any test waits: 600 events 50 ms apart (the mock upstream).
ENDLESS = {"x-mock-chunks": "600", "x-mock-delay-ms": "50"}


async def slow_whole_reply(scope: Scope, receive: Receive, send: Send) -> None:
    """An upstream whose JSON reply (head and all) comes after 3 s: a long generation that
    is not streamed."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await asyncio.sleep(3)
    body = b'{"type":"message","content":[]}'
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/tokens.db"


def proxy(server: str, upstream: RunningServer, store_url: str, **extra: str) -> Any:
    env = proxy_env(
        upstream.url,
        TOKEN_STORE=store_url,
        TOKEN_CACHE_SECONDS="0",
        REALTIME_RECHECK_SECONDS="0.2",
        **extra,
    )
    return SERVERS[server](create_app(load_settings(env)))


def read_until_cut(url: str, token: str, on_first_event: Callable[[], object]) -> tuple[int, float]:
    """Reads a stream, calling `on_first_event` once; the events read and the seconds from
    that call to the stream's end (cut: httpx raises on the aborted body)."""
    events = 0
    started = 0.0
    with httpx.stream(
        "POST",
        f"{url}/v1/chat/completions",
        json=CHAT,
        headers={"authorization": f"Bearer {token}", **ENDLESS},
        timeout=20,
    ) as reply:
        assert reply.status_code == 200
        with pytest.raises(httpx.RemoteProtocolError):
            for _ in reply.iter_lines():
                events += 1
                if events == 1:
                    on_first_event()
                    started = time.monotonic()
    return events, time.monotonic() - started


def upstream_stopped(mock: RunningServer, within: float = 3.0) -> bool:
    """Whether the mock upstream's one stream ended unfinished (the proxy hung up on it)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        streams = httpx.get(f"{mock.url}/_mock/streams").json()
        if streams and "ended_at" in streams[-1]:
            return len(streams) == 1 and not streams[0]["completed"]
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("server", SERVERS)
def test_a_stream_stops_when_its_token_is_revoked(
    server: str, store_url: str, mock_upstream: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    store = open_store(store_url)
    token, record = create_token(store, "revoked-while-streaming")
    reset_upstream(mock_upstream)
    with (
        caplog.at_level(logging.INFO, logger="llm_proxy"),
        proxy(server, mock_upstream, store_url, ACCESS_LOG="true") as running,
    ):
        events, seconds = read_until_cut(running.url, token, lambda: revoke_token(store, record.id))
    # The access line says which rule ended it; a rule doing its work is not logged as
    # the proxy failing (an ERROR line that pages whoever watches them). Stock uvicorn
    # logs any app that raises after the head with its own traceback: the proxy's own
    # lines are what it controls.
    ours = [r for r in caplog.records if r.name.startswith("llm_proxy")]
    lines = [
        json.loads(r.getMessage())
        for r in ours
        if r.name == "llm_proxy.access" and r.getMessage().startswith('{"event":"request"')
    ]
    assert [(line["status"], line.get("error")) for line in lines] == [(200, "invalid_api_key")]
    assert [r.getMessage() for r in ours if r.levelno >= logging.ERROR] == []
    # Cut within the recheck period and a margin, not after the 30 s the upstream would go on.
    assert seconds < 3, seconds
    assert events < 80, events
    # The upstream request ended with it: nothing more is generated on the key owner's bill.
    assert upstream_stopped(mock_upstream)


@pytest.mark.parametrize("server", SERVERS)
def test_a_stream_stops_when_the_proxy_is_switched_off(
    server: str, store_url: str, mock_upstream: RunningServer
) -> None:
    store = open_store(store_url)
    token, _ = create_token(store, "streaming-at-the-switch")
    reset_upstream(mock_upstream)
    with proxy(server, mock_upstream, store_url, ADMIN_TOKEN=ADMIN_TOKEN) as running:

        def switch_off() -> None:
            reply = httpx.put(
                f"{running.url}/admin/api/status",
                json={"online": False},
                headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
            )
            assert reply.status_code == 200, reply.text

        _, seconds = read_until_cut(running.url, token, switch_off)
        # New requests get the switch's 503, as before.
        refused = httpx.post(
            f"{running.url}/v1/chat/completions",
            json=CHAT,
            headers={"authorization": f"Bearer {token}"},
        )
    assert refused.status_code == 503
    assert seconds < 3, seconds
    assert upstream_stopped(mock_upstream)


def test_a_reply_still_awaited_is_refused_in_the_routes_shape(store_url: str) -> None:
    """Revoked while the upstream has not answered yet: no head went out, so the caller
    gets the refusal itself (a 401 in the route's shape), not a cut connection."""
    store = open_store(store_url)
    token, record = create_token(store, "revoked-while-waiting")

    async def ask_and_revoke(url: str) -> httpx.Response:
        async with httpx.AsyncClient(timeout=20) as client:
            asking = asyncio.create_task(
                client.post(
                    f"{url}/anthropic/v1/messages",
                    json={"model": "claude-x", "max_tokens": 5, "messages": CHAT["messages"]},
                    headers={"x-api-key": token},
                )
            )
            await asyncio.sleep(0.5)
            revoke_token(store, record.id)
            return await asking

    with (
        serve_in_thread(slow_whole_reply) as up,
        proxy(
            "uvicorn",
            up,
            store_url,
            ANTHROPIC_API_KEY="sk-ant-fake-0000",
            ANTHROPIC_UPSTREAM=up.url,
        ) as running,
    ):
        started = time.monotonic()
        reply = asyncio.run(ask_and_revoke(running.url))
        seconds = time.monotonic() - started
    assert reply.status_code == 401, reply.text
    assert reply.json()["type"] == "error"  # Anthropic's shape
    assert reply.json()["error"]["type"] == "authentication_error"
    assert seconds < 2.5, seconds  # not after the upstream's 3 s


def test_a_stream_from_a_token_that_nothing_can_end_is_not_watched() -> None:
    """The shared access token without a dashboard cannot be revoked mid-stream: no timer
    is armed for its replies (the hot path stays as it was)."""
    assert not can_end(SHARED_TOKEN_CALLER, has_status=False)
    assert can_end(SHARED_TOKEN_CALLER, has_status=True)
    assert can_end(Caller("jwt:user", expires_at=time.time() + 60), has_status=False)


async def test_a_store_that_cannot_be_read_stops_a_reply_as_it_refuses_a_request() -> None:
    """The check fails closed, as at admission and in realtime sessions: a token store that
    does not answer stops the reply (its 503 is the refusal while no head went out)."""
    from core.access.credentials import TokenStoreUnavailable
    from core.proxy.open_checks import OpenChecks
    from core.proxy.relay import Exchange

    async def recheck(request: Any) -> None:
        raise TokenStoreUnavailable("The token store is unavailable.")

    state = Exchange()
    relaying = asyncio.create_task(asyncio.sleep(30))
    checks = OpenChecks(recheck, SimpleNamespace(log=None), state, 0.05)  # type: ignore[arg-type]
    checks.start(relaying)
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(relaying, 2)
    checks.stop()
    assert state.stopped_by is not None and state.stopped_by.status == 503


def test_an_upload_leg_slower_than_the_period_is_not_refused(store_url: str) -> None:
    """An upload leg carries no credential (its upload_id stands for the token that began
    the upload, checked when the leg is admitted): checked again while relayed as if it
    were a request without one, a leg that outlasts the period was answered 401."""
    from core.devtools.mock_upstream import MockOptions, MockUpstream
    from tests.support.gemini import START, upload
    from tests.support.gemini import UPLOAD_KEY as GEMINI_KEY

    mock = MockUpstream(MockOptions())

    async def slow_upload_legs(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and b"upload_id=" in scope.get("query_string", b""):
            await asyncio.sleep(1)  # a large chunk on a slow link: five periods
        await mock(scope, receive, send)

    store = open_store(store_url)
    token, _ = create_token(store, "uploader")
    with (
        serve_in_thread(slow_upload_legs) as up,
        proxy("uvicorn", up, store_url, GEMINI_API_KEY=GEMINI_KEY, GEMINI_UPSTREAM=up.url) as p,
    ):
        started = httpx.post(
            f"{p.url}/gemini/upload/v1beta/files",
            headers={**START, "x-goog-api-key": token},
            json={"file": {"display_name": "notes"}},
        )
        assert started.status_code == 200, started.text
        done = upload(started.headers["x-goog-upload-url"])
    assert done.status_code == 200, done.text
    assert done.headers["x-goog-upload-status"] == "final"


async def test_a_reply_already_settled_is_not_stopped() -> None:
    """A check that fails while the reply settles at its end (a budget or ledger store
    awaited at the last event, or before a whole body's head) finds the reply charged
    whole: stopping it then cut a caller off (or refused it) after charging it all, and
    its SDK would ask, and be charged, again."""
    from core.errors import Unauthorized
    from core.proxy.open_checks import OpenChecks
    from core.proxy.relay import Exchange

    async def recheck(request: Any) -> None:
        raise Unauthorized("The proxy token t1 has expired.")

    state = Exchange(settled=True)  # the figures are in; the last bytes are on their way
    relaying = asyncio.create_task(asyncio.sleep(0.3))
    checks = OpenChecks(recheck, SimpleNamespace(log=None), state, 0.05)  # type: ignore[arg-type]
    checks.start(relaying)
    await asyncio.wait_for(relaying, 2)  # not cancelled
    checks.stop()
    assert state.stopped_by is None


def _refused_then_cut(url: str, store: Any) -> None:
    """One reply refused while awaited, one stream cut: the standard library's client, as
    tests/server/test_no_reference_cycles.py has it (httpx makes cycles of its own)."""
    import threading

    from tests.support.cycles import connect

    token, record = create_token(store, "revoked-while-waiting")
    threading.Timer(0.5, revoke_token, (store, record.id)).start()
    body = {"model": "claude-x", "max_tokens": 5, "messages": CHAT["messages"]}
    connection = connect(url)
    try:
        connection.request("POST", "/anthropic/v1/messages", json.dumps(body), {"x-api-key": token})
        assert connection.getresponse().status == 401
    finally:
        connection.close()
    token, record = create_token(store, "revoked-while-streaming")
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json", **ENDLESS}
    connection = connect(url)
    try:
        connection.request("POST", "/v1/chat/completions", json.dumps(CHAT), headers)
        reply = connection.getresponse()
        assert reply.status == 200
        reply.readline()
        revoke_token(store, record.id)
        with pytest.raises(http.client.IncompleteRead):
            reply.read()
    finally:
        connection.close()


@pytest.mark.parametrize("server", SERVERS)
def test_a_stopped_reply_leaves_nothing_for_the_collector(
    server: str, store_url: str, mock_upstream: RunningServer
) -> None:
    """As every other end of a request (tests/server/test_no_reference_cycles.py): a reply
    stopped by its check, refused before its head or cut mid-stream, is freed by reference
    counting, not kept in a cycle with the request's state until a full collection."""
    from tests.support.cycles import collector_off, leaked

    store = open_store(store_url)
    with (
        serve_in_thread(slow_whole_reply) as up,
        proxy(
            server,
            up,
            store_url,
            ANTHROPIC_API_KEY="sk-ant-fake-0000",
            ANTHROPIC_UPSTREAM=up.url,
            UPSTREAM_BASE_URL=f"{mock_upstream.url}/v1",
        ) as running,
    ):
        _refused_then_cut(running.url, store)  # warm: what a first request sets up for good
        with collector_off() as garbage:
            for _ in range(2):
                _refused_then_cut(running.url, store)
            time.sleep(0.5)  # the access log line and the connection's close
    kept = leaked(garbage)
    assert not kept, f"kept in reference cycles: {dict(kept)}"


async def test_a_check_that_fails_unexpectedly_does_not_end_the_checks() -> None:
    """A fault in a recheck (a store's unexpected error, a bug) is logged and the checks
    go on: they stopped for the rest of the reply, so a revocation after a passing glitch
    never reached a stream still relayed."""
    from core.errors import Unauthorized
    from core.proxy.open_checks import OpenChecks

    calls = 0

    async def recheck(request: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("store glitch")
        raise Unauthorized("The proxy token is not valid.")

    state = SimpleNamespace(response_done=False, settled=False, stopped_by=None)
    request = SimpleNamespace(log=None)
    relaying = asyncio.ensure_future(asyncio.sleep(5))
    checks = OpenChecks(recheck, request, state, 0.05)  # type: ignore[arg-type]
    checks.start(relaying)
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(relaying, 2)
    checks.stop()
    assert calls == 2
    assert isinstance(state.stopped_by, Unauthorized)
