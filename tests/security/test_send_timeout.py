"""A reply its caller takes nothing of has a bounded time (SEND_TIMEOUT), on the real server
entry (`python -m handlers.http`, over httptools and over h11).

Before: a caller that asked for a stream and then read nothing (its socket full) held its
connection, the relay and the upstream request for as long as it liked: the upstream was
held back (nothing piled up in memory), but nothing ever ended it, so a few such callers
kept MAX_CONNECTIONS slots and upstream generations open on the key owner's bill. A caller
that reads slowly is not cut: the bound is on taking no byte at all. Bounds are scaled down
(2 s) so the suite stays quick.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from core.types import Receive, Scope, Send
from tests.support.fake_realtime import FakeRealtime
from tests.support.servers import (
    FAKE_TOKEN,
    FAKE_UPSTREAM_KEY,
    free_port,
    http_entry,
    proxy_env,
    run_process,
    serve_in_thread,
)

SEND_TIMEOUT = 2.0
# Scheduling slack on a loaded 2-core machine: the bound is checked to this precision.
SLACK = 2.5
CHAT = json.dumps(
    {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
).encode()
# 16 KB events: an endless stream fills any socket buffer a host allows.
EVENT = (
    b"data: " + json.dumps({"choices": [{"delta": {"content": "x" * 16_000}}]}).encode() + b"\n\n"
)


class EndlessStream:
    """An upstream whose stream never ends: it writes as fast as it is read, until its
    caller (the proxy) hangs up, and says when that was."""

    def __init__(self) -> None:
        self.streams: list[dict[str, Any]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        record: dict[str, Any] = {"sent": 0}
        self.streams.append(record)
        gone = asyncio.Event()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        watcher = asyncio.ensure_future(watch())
        headers = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        try:
            while not gone.is_set():
                await send({"type": "http.response.body", "body": EVENT, "more_body": True})
                record["sent"] += 1
                await asyncio.sleep(0)  # the watcher's turn
        finally:
            record["ended_at"] = time.time()
            watcher.cancel()


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[EndlessStream, str]]:
    app = EndlessStream()
    with serve_in_thread(app) as server:
        yield app, server.url


@pytest.fixture(scope="module", params=["httptools", "h11"])
def proxy_port(
    request: pytest.FixtureRequest, upstream: tuple[EndlessStream, str]
) -> Iterator[int]:
    port = free_port()
    env = proxy_env(upstream[1], HOST="127.0.0.1", PORT=str(port), SEND_TIMEOUT=str(SEND_TIMEOUT))
    with run_process(http_entry(request.param), env, f"http://127.0.0.1:{port}/health"):
        yield port


def ask_for_a_stream(port: int) -> socket.socket:
    caller = socket.socket()
    caller.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    caller.connect(("127.0.0.1", port))
    caller.sendall(
        (
            "POST /v1/chat/completions HTTP/1.1\r\nHost: proxy.test\r\n"
            f"Authorization: Bearer {FAKE_TOKEN}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(CHAT)}\r\n\r\n"
        ).encode()
        + CHAT
    )
    return caller


def ended(upstream: EndlessStream, until: float) -> dict[str, Any]:
    """The upstream's one stream once it has ended, or as it is at `until`."""
    while time.monotonic() < until and not (upstream.streams and "ended_at" in upstream.streams[0]):
        time.sleep(0.1)
    [stream] = upstream.streams
    return stream


def test_a_caller_that_reads_nothing_is_cut_and_its_upstream_with_it(
    proxy_port: int, upstream: tuple[EndlessStream, str]
) -> None:
    app = upstream[0]
    app.streams.clear()
    started = time.time()
    caller = ask_for_a_stream(proxy_port)
    try:
        stream = ended(app, until=time.monotonic() + SEND_TIMEOUT + 15)
        assert "ended_at" in stream, f"the upstream request is still open: {stream}"
        # Ended by the bound: after SEND_TIMEOUT of nothing read, not before.
        assert SEND_TIMEOUT <= stream["ended_at"] - started < SEND_TIMEOUT + SLACK, stream
        # The caller's connection is gone too: what was buffered, then the end.
        caller.settimeout(10)
        with contextlib.suppress(ConnectionResetError):
            while caller.recv(1 << 20):
                pass
    finally:
        caller.close()


def test_a_caller_that_reads_slowly_is_not_cut(
    proxy_port: int, upstream: tuple[EndlessStream, str]
) -> None:
    app = upstream[0]
    app.streams.clear()
    caller = ask_for_a_stream(proxy_port)
    try:
        caller.settimeout(5)
        received = 0
        deadline = time.monotonic() + 3 * SEND_TIMEOUT
        while time.monotonic() < deadline:
            chunk = caller.recv(4096)
            assert chunk, f"cut while reading, after {received} bytes"
            received += len(chunk)
            time.sleep(0.1)  # about 40 KB/s: far slower than the upstream writes
        [stream] = app.streams
        assert "ended_at" not in stream, stream
    finally:
        caller.close()


class TimedRealtime(FakeRealtime):
    """The fake realtime provider, noting when its session with the proxy ended (however
    it ended: a provider blocked sending to the proxy ends on an error, not a close)."""

    ended: float | None = None

    async def session(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().session(scope, receive, send)
        finally:
            self.ended = time.monotonic()


def masked_text_frame(payload: bytes) -> bytes:
    mask = b"\x01\x02\x03\x04"
    data = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    return b"\x81\xff" + struct.pack("!Q", len(payload)) + mask + data


def test_a_realtime_caller_that_reads_nothing_is_cut_and_its_session_with_it() -> None:
    """The same bound on a WebSocket session: a caller that sends frames the provider
    answers, and reads none of the answers, was held until REALTIME_MAX_SECONDS (30 min)."""
    provider = TimedRealtime()
    with serve_in_thread(provider) as upstream:
        port = free_port()
        env = proxy_env(
            upstream.url,
            HOST="127.0.0.1",
            PORT=str(port),
            SEND_TIMEOUT=str(SEND_TIMEOUT),
            OPENAI_API_KEY=FAKE_UPSTREAM_KEY,
            OPENAI_UPSTREAM=upstream.url,
        )
        with run_process(http_entry(), env, f"http://127.0.0.1:{port}/health"):
            caller = socket.socket()
            caller.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            caller.connect(("127.0.0.1", port))
            key = base64.b64encode(os.urandom(16)).decode()
            caller.sendall(
                (
                    "GET /v1/realtime?model=gpt-realtime HTTP/1.1\r\nHost: proxy.test\r\n"
                    "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                    f"Sec-WebSocket-Key: {key}\r\nAuthorization: Bearer {FAKE_TOKEN}\r\n\r\n"
                ).encode()
            )
            head = b""
            while b"\r\n\r\n" not in head:
                head += caller.recv(1)
            assert head.startswith(b"HTTP/1.1 101"), head
            started = time.monotonic()
            frame = masked_text_frame(b"x" * 200_000)  # not JSON: the provider echoes it

            def flood() -> None:
                with contextlib.suppress(OSError):
                    caller.settimeout(30)
                    for _ in range(400):
                        caller.sendall(frame)

            sender = threading.Thread(target=flood, daemon=True)
            sender.start()
            try:
                deadline = started + SEND_TIMEOUT + 15
                while provider.ended is None and time.monotonic() < deadline:
                    time.sleep(0.1)
                assert provider.ended is not None, "the session with the provider is still open"
                assert SEND_TIMEOUT <= provider.ended - started < SEND_TIMEOUT + SLACK
            finally:
                caller.close()
                sender.join(10)
