"""Nothing a request leaves behind needs the garbage collector.

Servers raise the collector's young-generation threshold (core/server/runner.py,
`tune_gc`): scanning every open stream's objects again and again took about a tenth of the
proxy's CPU at 500 streams. That is safe only while each request is freed by reference
counting the moment it ends. A request caught in a reference cycle (its body, its state,
the server's connection objects) waits for a pass of the collector, which now comes much
later; a caller who leaves mid-stream, again and again, would then hold memory.

Each case runs against the proxy served as `llm-proxy serve` serves it, with the collector
off; afterwards one pass with DEBUG_SAVEALL lists everything only the collector could have
freed. None of it may be the proxy's, the server's or the upstream client's.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest
import websockets

from core.app import create_app
from core.config import load_settings
from core.devtools.mock_upstream import MockUpstream
from tests.support.cycles import collector_off, connect, leaked
from tests.support.fake_realtime import FakeRealtime
from tests.support.servers import (
    FAKE_TOKEN,
    FAKE_UPSTREAM_KEY,
    RunningServer,
    free_port,
    proxy_env,
    serve_as_deployed,
    serve_in_thread,
)

AUTH = {"authorization": f"Bearer {FAKE_TOKEN}", "content-type": "application/json"}
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
# What the libraries leave, one small cycle per WebSocket connection, holding none of the
# request: uvicorn's HTTP protocol after it hands the connection to the WebSocket protocol
# (its parser holds its callbacks; the fake upstream's server leaves one too), and aiohttp's
# WebSocket client (the socket and its connection's reader hold each other); its response
# keeps the request's traces (the hook that refuses a redirect, core/realtime/session.py),
# and through them the closed client session and its timeout settings.
AFTER_A_WEBSOCKET = {
    "aiohttp.client.ClientSession",
    "aiohttp.client.ClientTimeout",
    "core.server.httptools_protocol.BoundedHttpToolsProtocol",
    "uvicorn.protocols.http.httptools_impl.HttpToolsProtocol",
    "uvicorn.protocols.http.flow_control.FlowControl",
    "aiohttp.client_ws.ClientWebSocketResponse",
    "aiohttp.client_reqrep.ClientResponse",
    "aiohttp.client_reqrep.RequestInfo",
    "aiohttp.client_reqrep.ConnectionKey",
    "aiohttp.client_proto.ResponseHandler",
    "aiohttp.client_exceptions.ServerDisconnectedError",
}


@pytest.fixture(scope="module")
def upstreams() -> Iterator[tuple[RunningServer, RunningServer]]:
    with serve_in_thread(MockUpstream()) as mock, serve_in_thread(FakeRealtime()) as realtime:
        yield mock, realtime


# The plain proxy on aiohttp (the default), and metered on both transports: a token limit
# puts the meter and the usage-chunk filter in every reply, and the response cache is on.
SETUPS = {
    "plain": {},
    "metered": {"RATE_LIMIT_TOKENS": "1000000000", "CACHE_URL": "memory://"},
    "metered-httpx": {
        "RATE_LIMIT_TOKENS": "1000000000",
        "CACHE_URL": "memory://",
        "UPSTREAM_TRANSPORT": "httpx",
    },
}


@pytest.fixture(scope="module", params=list(SETUPS))
def proxy(
    request: pytest.FixtureRequest, upstreams: tuple[RunningServer, RunningServer]
) -> Iterator[RunningServer]:
    mock, realtime = upstreams
    env = proxy_env(
        mock.url,
        ANTHROPIC_API_KEY="sk-ant-fake-key-not-real",
        ANTHROPIC_UPSTREAM=mock.url,
        GEMINI_API_KEY="fake-gemini-key-not-real",
        GEMINI_UPSTREAM=mock.url,
        OPENAI_API_KEY=FAKE_UPSTREAM_KEY,
        OPENAI_UPSTREAM=realtime.url,
        # Nothing listens there: a refused connection.
        MISTRAL_API_KEY="fake-mistral-key-not-real",
        MISTRAL_UPSTREAM=f"http://127.0.0.1:{free_port()}",
        MODEL_ROUTES="mistral-*=mistral",
        MODEL_FALLBACKS="mistral-y>gpt-4o-mini",
        MAX_BODY_BYTES="100000",
        UPSTREAM_READ_TIMEOUT="0.5",
        ALLOW_EPHEMERAL_KEYS="true",
        REALTIME_MAX_SECONDS="1.5",
        REALTIME_MAX_FRAME_BYTES="65536",
        **SETUPS[request.param],
    )
    with serve_as_deployed(create_app(load_settings(env))) as server:
        yield server


@dataclass
class Reply:
    status_code: int
    text: str
    headers: dict[str, str]


def call(url: str, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> Reply:
    connection = connect(url)
    try:
        connection.request(method, path, body=body, headers=headers)
        reply = connection.getresponse()
        return Reply(reply.status, reply.read().decode(), dict(reply.getheaders()))
    finally:
        connection.close()


def post(url: str, path: str, body: object, **headers: str) -> Reply:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return call(url, "POST", path, content, {**AUTH, **headers})


def openai_stream(url: str) -> None:
    reply = post(url, "/v1/chat/completions", {**CHAT, "stream": True})
    assert reply.text.endswith("data: [DONE]\n\n")


def whole_reply_twice(url: str) -> None:  # the second from the cache, where it is on
    for _ in range(2):
        assert post(url, "/v1/chat/completions", {**CHAT, "temperature": 0}).status_code == 200


def anthropic_stream(url: str) -> None:
    body = {**CHAT, "model": "claude-test", "max_tokens": 16, "stream": True}
    reply = post(url, "/anthropic/v1/messages", body)
    assert reply.status_code == 200 and "message_stop" in reply.text


def gemini_stream(url: str) -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    path = "/gemini/v1beta/models/gemini-test:streamGenerateContent?alt=sse"
    reply = post(url, path, body)
    assert reply.status_code == 200 and "usageMetadata" in reply.text


def caller_leaves_mid_stream(url: str) -> None:
    headers = {**AUTH, "x-mock-chunks": "200", "x-mock-delay-ms": "10"}
    connection = connect(url)
    try:
        body = json.dumps({**CHAT, "stream": True}).encode()
        connection.request("POST", "/v1/chat/completions", body=body, headers=headers)
        reply = connection.getresponse()
        assert reply.status == 200 and reply.readline().startswith(b"data:")
    finally:
        connection.close()  # with most of the stream still to come


def upstream_breaks_mid_stream(url: str) -> None:
    # The reply's chunked body ends without its last chunk.
    with pytest.raises((http.client.IncompleteRead, ValueError)):
        post(url, "/v1/chat/completions", {**CHAT, "stream": True}, **{"x-mock-cut-after": "3"})


def upstream_errors(url: str) -> None:
    for status in ("500", "429"):
        reply = post(url, "/v1/chat/completions", CHAT, **{"x-mock-status": status})
        assert reply.status_code == int(status)


def upstream_unreachable(url: str) -> None:
    assert post(url, "/v1/chat/completions", {**CHAT, "model": "mistral-x"}).status_code == 502
    # With a fallback: the next model in the chain answers.
    assert post(url, "/v1/chat/completions", {**CHAT, "model": "mistral-y"}).status_code == 200


def upstream_too_slow(url: str) -> None:
    headers = {"x-mock-chunks": "2", "x-mock-delay-ms": "1500"}
    try:
        status = post(url, "/v1/chat/completions", {**CHAT, "stream": True}, **headers).status_code
    except (http.client.IncompleteRead, ValueError):
        return  # the head came in time and the first event did not: the stream was cut
    assert status == 504


def refusals(url: str) -> None:
    assert post(url, "/v1/chat/completions", CHAT, authorization="Bearer nope").status_code == 401
    assert post(url, "/v1/chat/completions", b"{not json").status_code == 400
    assert post(url, "/v1/chat/completions", b" " * 200_000).status_code == 413
    assert post(url, "/nowhere", CHAT).status_code == 404


def gemini_upload(url: str) -> None:
    start = {
        "x-goog-upload-protocol": "resumable",
        "x-goog-upload-command": "start",
        "x-goog-upload-header-content-length": "11",
        "x-goog-upload-header-content-type": "text/plain",
    }
    begun = post(url, "/gemini/upload/v1beta/files", {"file": {"display_name": "notes"}}, **start)
    assert begun.status_code == 200, begun.text
    leg = urlsplit(begun.headers["x-goog-upload-url"])
    headers = {"x-goog-upload-command": "upload, finalize", "x-goog-upload-offset": "0"}
    done = call(url, "POST", f"{leg.path}?{leg.query}", b"hello world", headers)
    assert done.status_code == 200, done.text


def reads(url: str) -> None:
    assert call(url, "GET", "/v1/models", None, AUTH).status_code == 200
    assert call(url, "GET", "/proxy/usage", None, AUTH).status_code == 200


def minting(url: str) -> None:
    body = {"model": "gpt-realtime", "client_secret": {"expires_after": {"seconds": 60}}}
    assert post(url, "/openai/v1/realtime/sessions", body).status_code == 200


def realtime(url: str, then: Callable[[Any], Awaitable[None]]) -> None:
    """A realtime session through the proxy: opened, `then` run on the caller's socket."""

    async def session() -> None:
        # The OpenAI route: the fake provider (tests/support/fake_realtime.py) takes its
        # `test.close` frame.
        address = "ws" + url[4:] + "/openai/v1/realtime?model=gpt-realtime"
        headers = {"Authorization": f"Bearer {FAKE_TOKEN}"}
        async with websockets.connect(address, additional_headers=headers) as socket:
            json.loads(await asyncio.wait_for(socket.recv(), 5))  # session.created
            await then(socket)

    asyncio.run(session())


async def closed_with(socket: Any) -> int:
    """The close code the proxy ends the caller's session with."""
    with pytest.raises(websockets.ConnectionClosed) as closed:
        while True:
            await asyncio.wait_for(socket.recv(), 5)
    return int(closed.value.rcvd.code)


def realtime_session(url: str) -> None:  # the caller closes it
    async def turn(socket: Any) -> None:
        await socket.send('{"type":"response.create"}')
        while json.loads(await asyncio.wait_for(socket.recv(), 5))["type"] != "response.done":
            pass

    realtime(url, turn)


def realtime_time_limit(url: str) -> None:
    async def wait(socket: Any) -> None:
        assert await closed_with(socket) == 1008

    realtime(url, wait)


def realtime_provider_closes(url: str) -> None:
    async def ask(socket: Any) -> None:
        await socket.send('{"type":"test.close","code":4001,"reason":"done"}')
        assert await closed_with(socket) == 4001

    realtime(url, ask)


def realtime_frame_too_large(url: str) -> None:
    async def flood(socket: Any) -> None:
        await socket.send('{"type":"conversation.item.create","text":"' + "x" * 70_000 + '"}')
        assert await closed_with(socket) == 1009

    realtime(url, flood)


CASES: dict[str, Callable[[str], None]] = {
    case.__name__: case
    for case in (
        openai_stream,
        whole_reply_twice,
        anthropic_stream,
        gemini_stream,
        caller_leaves_mid_stream,
        upstream_breaks_mid_stream,
        upstream_errors,
        upstream_unreachable,
        upstream_too_slow,
        refusals,
        gemini_upload,
        reads,
        minting,
        realtime_session,
        realtime_time_limit,
        realtime_provider_closes,
        realtime_frame_too_large,
    )
}


def wait_until_idle(url: str) -> None:
    """Until the proxy has finished every request (a caller who left is noticed a moment
    later): its Prometheus gauge of open streams and sessions is back to zero."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        connection = connect(url)
        try:
            connection.request("GET", "/metrics")
            metrics = connection.getresponse().read().decode()
        finally:
            connection.close()
        open_now = [
            line
            for line in metrics.splitlines()
            if line.startswith("llm_proxy_open{") and not line.endswith(" 0.0")
        ]
        if not open_now:
            return
        time.sleep(0.05)
    raise AssertionError(f"the proxy still has requests open: {open_now}")


@pytest.mark.parametrize("case", list(CASES))
def test_a_finished_request_leaves_nothing_for_the_collector(
    proxy: RunningServer, case: str
) -> None:
    with collector_off() as garbage:
        for _ in range(3):
            CASES[case](proxy.url)
        wait_until_idle(proxy.url)
        time.sleep(0.1)  # the access log line and the connection's close, after the gauge
    allowed = AFTER_A_WEBSOCKET if case.startswith("realtime") else frozenset()
    kept = leaked(garbage, allowed)
    assert not kept, f"kept in reference cycles: {dict(kept)}"
