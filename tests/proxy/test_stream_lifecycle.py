"""Streams over real sockets: disconnects, timeouts, long streams, upstream failures."""

from __future__ import annotations

import http.client
import json
import logging
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from core.app import create_app
from core.config import load_settings
from core.devtools.mock_upstream import MockUpstream
from core.devtools.mock_upstream.content import reply_text
from tests.support.scripted_upstream import ScriptedUpstream
from tests.support.servers import (
    FAKE_TOKEN,
    PYTHON,
    RunningServer,
    free_port,
    http_entry,
    proxy_env,
    run_process,
    serve_as_deployed,
    serve_in_thread,
)

AUTH = {"Authorization": f"Bearer {FAKE_TOKEN}", "content-type": "application/json"}
CHAT = b'{"model":"m","stream":true,"messages":[]}'


# Under plain uvicorn the proxy hears a hang-up from receive(); under its own server
# (`llm-proxy serve`) from the connection itself (core/types.py, DisconnectWatch).
SERVERS = {"uvicorn": serve_in_thread, "deployed": serve_as_deployed}


@pytest.fixture(
    params=[("aiohttp", "uvicorn"), ("httpx", "uvicorn"), ("aiohttp", "deployed")],
    ids=lambda param: "-".join(param),
)
def transport_proxy(
    request: pytest.FixtureRequest, mock_upstream: RunningServer
) -> Iterator[RunningServer]:
    """The proxy with each upstream transport and server, short timeouts."""
    transport, server = request.param
    env = proxy_env(mock_upstream.url, UPSTREAM_TRANSPORT=transport, UPSTREAM_READ_TIMEOUT="0.5")
    with SERVERS[server](create_app(load_settings(env))) as running:
        yield running


def test_client_disconnect_cancels_the_upstream_promptly(
    transport_proxy: RunningServer, mock_upstream: RunningServer
) -> None:
    httpx.post(f"{mock_upstream.url}/_mock/reset")
    headers = {**AUTH, "x-mock-chunks": "100", "x-mock-delay-ms": "50"}
    with httpx.stream(
        "POST",
        f"{transport_proxy.url}/v1/chat/completions",
        content=CHAT,
        headers=headers,
        timeout=10,
    ) as response:
        data = []
        for line in response.iter_lines():
            if line.startswith("data:"):
                data.append(line)
            if len(data) == 3:
                break
        left_at = time.time()
    # The stream was 5 s long; the upstream must see the caller leave within a second.
    deadline = time.monotonic() + 3
    while True:
        streams = httpx.get(f"{mock_upstream.url}/_mock/streams").json()
        if streams and "ended_at" in streams[-1]:
            break
        assert time.monotonic() < deadline, (
            "upstream stream still running 3 s after the caller left"
        )
        time.sleep(0.05)
    [stream] = streams
    assert not stream["completed"]
    assert stream["sent"] < 40
    assert stream["ended_at"] - left_at < 1.0


def test_long_stream_is_not_cut_by_the_read_timeout(transport_proxy: RunningServer) -> None:
    """Read timeout 0.5 s bounds gaps, not the total: 30 chunks 100 ms apart take 3 s."""
    headers = {**AUTH, "x-mock-chunks": "30", "x-mock-delay-ms": "100"}
    response = httpx.post(
        f"{transport_proxy.url}/v1/chat/completions", content=CHAT, headers=headers, timeout=20
    )
    assert response.status_code == 200
    assert response.text.endswith("data: [DONE]\n\n")


def test_slow_first_byte_is_504(transport_proxy: RunningServer) -> None:
    headers = {**AUTH, "x-mock-chunks": "2", "x-mock-delay-ms": "1500"}
    started = time.monotonic()
    response = httpx.post(
        f"{transport_proxy.url}/v1/chat/completions",
        content=b'{"model":"m","messages":[]}',
        headers=headers,
        timeout=20,
    )
    # Non-streamed reply: the mock waits 3 s before answering; the proxy gives up at 0.5 s.
    assert (response.status_code, response.json()["error"]["code"]) == (504, "upstream_timeout")
    assert time.monotonic() - started < 2.5


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_upstream_down_is_502_and_server_stays_up(transport: str) -> None:
    closed_port = free_port()  # nothing listens there
    env = proxy_env(f"http://127.0.0.1:{closed_port}", UPSTREAM_TRANSPORT=transport)
    with serve_in_thread(create_app(load_settings(env))) as proxy:
        for _ in range(3):
            response = httpx.get(f"{proxy.url}/v1/models", headers=AUTH, timeout=10)
            assert (response.status_code, response.json()["error"]["code"]) == (
                502,
                "upstream_unreachable",
            )
        assert httpx.get(f"{proxy.url}/health").status_code == 200


def test_upstream_dying_mid_stream_truncates_the_response() -> None:
    """A stream that breaks upstream must not look complete to the caller."""

    async def dying_upstream(scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
        raise RuntimeError("upstream crashed")  # uvicorn aborts the connection

    with serve_in_thread(dying_upstream) as upstream:
        env = proxy_env(upstream.url)
        with serve_in_thread(create_app(load_settings(env))) as proxy:
            with pytest.raises(httpx.RemoteProtocolError):
                httpx.post(
                    f"{proxy.url}/v1/chat/completions", content=CHAT, headers=AUTH, timeout=10
                )
            assert httpx.get(f"{proxy.url}/health").status_code == 200


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_upstream_stalling_mid_stream_is_cut_after_the_read_timeout(transport: str) -> None:
    """UPSTREAM_READ_TIMEOUT bounds every gap between bytes, not only the first byte: an
    upstream that goes quiet mid-stream is given up on, and the caller's stream ends
    without its [DONE] (the relay never makes a cut stream look complete)."""
    import asyncio

    async def stalling_upstream(scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        head = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": head})
        for n in range(2):
            event = b'data: {"n":%d}\n\n' % n
            await send({"type": "http.response.body", "body": event, "more_body": True})
        await asyncio.sleep(4)  # quiet far past the 0.5 s read timeout
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})

    with serve_in_thread(stalling_upstream) as upstream:
        env = proxy_env(upstream.url, UPSTREAM_TRANSPORT=transport, UPSTREAM_READ_TIMEOUT="0.5")
        with serve_in_thread(create_app(load_settings(env))) as proxy:
            started = time.monotonic()
            received = b""
            with (
                pytest.raises(httpx.RemoteProtocolError),
                httpx.stream(
                    "POST",
                    f"{proxy.url}/v1/chat/completions",
                    content=CHAT,
                    headers=AUTH,
                    timeout=10,
                ) as response,
            ):
                assert response.status_code == 200
                for chunk in response.iter_raw():
                    received += chunk
            took = time.monotonic() - started
            assert received.count(b"data: {") == 2
            assert b"[DONE]" not in received
            # Given up on after the 0.5 s gap (with some slack), not after the 4 s stall.
            assert took < 2.5, took
            assert httpx.get(f"{proxy.url}/health").status_code == 200


def test_raw_malformed_requests_do_not_take_the_server_down(proxy: RunningServer) -> None:
    for raw in (
        b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \x00\x01\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n",
        b"GARBAGE\r\n\r\n",
    ):
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
            sock.sendall(raw)
            reply = sock.recv(4096)
            assert reply.startswith(b"HTTP/1.1 4"), reply[:100]
            assert b"Traceback" not in reply
    assert httpx.get(f"{proxy.url}/health").status_code == 200


def test_upstream_records_real_key_not_caller_token_when_streaming(
    proxy: RunningServer, mock_upstream: RunningServer
) -> None:
    httpx.post(f"{mock_upstream.url}/_mock/reset")
    httpx.post(
        f"{proxy.url}/v1/chat/completions?key={FAKE_TOKEN}",
        content=CHAT,
        headers={"content-type": "application/json"},
        timeout=10,
    )
    [seen] = httpx.get(f"{mock_upstream.url}/_mock/requests").json()
    assert FAKE_TOKEN not in str(seen)
    assert seen["query"] == ""
    assert MockUpstream is not None


@pytest.mark.parametrize("server", SERVERS)
def test_a_caller_hanging_up_at_done_before_the_upstream_ends_is_not_a_disconnect(
    caplog: pytest.LogCaptureFixture, server: str
) -> None:
    """The openai SDK stops reading at `[DONE]` and hangs up. The upstream's end of body
    can still be on its way (here 50 ms later): the stream was complete all the same, and
    the access log and the ledger must not call it a disconnect."""
    events = [b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n', b"data: [DONE]\n\n"]
    parts = [(0.0, event) for event in events] + [(0.05, b"")]  # the end, 50 ms later
    upstream = ScriptedUpstream(
        lambda request: (200, [("content-type", "text/event-stream")], parts)
    )
    with serve_in_thread(upstream) as mock:
        env = proxy_env(mock.url, ACCESS_LOG="true")
        with SERVERS[server](create_app(load_settings(env))) as proxy:
            caplog.set_level(logging.INFO, logger="llm_proxy.access")
            connection = http.client.HTTPConnection(f"127.0.0.1:{proxy.port}", timeout=10)
            connection.request("POST", "/v1/chat/completions", body=CHAT, headers=AUTH)
            reply = connection.getresponse()
            while reply.readline() != b"data: [DONE]\n":
                pass
            connection.close()  # as the SDK does, before the body's end
            deadline = time.monotonic() + 5
            while not any('"event":"request"' in r.getMessage() for r in caplog.records):
                assert time.monotonic() < deadline, "no access log line"
                time.sleep(0.02)
    [line] = [r.getMessage() for r in caplog.records if '"event":"request"' in r.getMessage()]
    assert '"status":200' in line
    assert "client_disconnected" not in line


def held_back(mock_url: str, deadline: float) -> dict[str, Any]:
    """The mock upstream's one stream once its count of events sent has stopped growing
    for a second (it is not read meanwhile). The mock writes a long stream's events before
    it sends the first, and a loaded machine takes seconds at it: the waits are long."""
    last: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        time.sleep(1)
        streams = httpx.get(f"{mock_url}/_mock/streams", timeout=30).json()
        if streams:
            [stream] = streams
            if stream["sent"] and last is not None and stream["sent"] == last["sent"]:
                return stream
            last = stream
    raise AssertionError(f"the upstream never came to rest: {last}")


# Each server as a process of its own, run as it is deployed. 32 MB through three threads
# of the test's own process was at the mercy of the GIL: with one other thread busy, each
# 2 KB read waited about 10 ms for its turn, and the relay took 150 s instead of 2.
SERVER_PROCESSES = {
    "uvicorn": lambda port: [
        PYTHON,
        "-m",
        "uvicorn",
        "--factory",
        "core.cli:app_from_environment",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ],
    "deployed": lambda port: http_entry(),
}


@pytest.fixture(scope="module")
def mock_process() -> Iterator[str]:
    """The mock upstream in a process of its own (see SERVER_PROCESSES)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = [PYTHON, "-m", "core.cli", "mock-upstream", "--port", str(port)]
    with run_process(args, {}, f"{url}/_mock/requests"):
        yield url


@pytest.mark.parametrize("server", sorted(SERVER_PROCESSES))
def test_a_caller_that_stops_reading_holds_the_upstream_back(
    server: str, mock_process: str
) -> None:
    """A caller that reads nothing for a while: the relay waits for it (the server's own
    chunk writer waits on a full socket as uvicorn's `send` does), so the upstream's bytes
    stay in the socket buffers instead of piling up in the proxy, and every event arrives,
    in order, once the caller reads. 120,000 events are about 32 MB, several times what the
    buffers between upstream and caller hold."""
    httpx.post(f"{mock_process}/_mock/reset")
    events = 120_000
    port = free_port()
    env = proxy_env(mock_process, HOST="127.0.0.1", PORT=str(port))
    with run_process(SERVER_PROCESSES[server](port), env, f"http://127.0.0.1:{port}/health"):
        caller = socket.socket()
        caller.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        caller.connect(("127.0.0.1", port))
        head = (
            "POST /v1/chat/completions HTTP/1.1\r\nHost: proxy.test\r\n"
            f"Authorization: Bearer {FAKE_TOKEN}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(CHAT)}\r\nx-mock-chunks: {events}\r\nx-mock-delay-ms: 0\r\n\r\n"
        )
        caller.sendall(head.encode() + CHAT)
        # Held back: while the caller reads nothing, the upstream's count of events sent
        # comes to rest short of the end. (How far it gets first is the kernel's: a host
        # that lets a socket buffer grow to 32 MB holds most of these 32 MB in buffers.)
        stream = held_back(mock_process, deadline=time.monotonic() + 30)
        assert stream["sent"] < stream["events"], stream
        received = bytearray()
        caller.settimeout(30)
        while not received.endswith(b"\r\n0\r\n\r\n"):
            chunk = caller.recv(1 << 20)
            assert chunk, "the proxy closed the connection before the stream's end"
            received += chunk
        caller.close()
    head_end = received.index(b"\r\n\r\n") + 4
    assert received.startswith(b"HTTP/1.1 200")
    # Every event, in order: the chunked framing taken off, the words read back whole.
    body, at = bytearray(), head_end
    while True:
        size_end = received.index(b"\r\n", at)
        size = int(received[at:size_end], 16)
        if not size:
            break
        body += received[size_end + 2 : size_end + 2 + size]
        at = size_end + 2 + size + 2
    text = [
        json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
        for line in bytes(body).split(b"\n")
        if line.startswith(b"data: {")
    ]
    assert len(text) == events + 2  # the role event, every word, the stop event
    assert "".join(text) == reply_text(events)
    assert body.endswith(b"data: [DONE]\n\n")
