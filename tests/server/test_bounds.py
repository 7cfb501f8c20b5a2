"""core/server/bounds.py in-process: where a body timeout may write its 408 and where it
may only close (the socket-level behaviour is tests/security/test_body_timeout.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from core.server.h11_protocol import BoundedH11Protocol
from core.server.httptools_protocol import BoundedHttpToolsProtocol
from core.types import DISCONNECT_WATCH
from tests.server.protocol_harness import HEAD, connect, settle

BOUND = 0.2


async def wait_closed(transport: Any) -> None:
    deadline = asyncio.get_running_loop().time() + 5
    while not transport.closed and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("cls", [BoundedHttpToolsProtocol, BoundedH11Protocol])
async def test_a_slow_body_gets_408_and_the_app_reads_a_disconnect(cls: Any) -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while True:  # the whole body, as the proxy reads it
            message = await receive()
            seen.append(message["type"])
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"too late"})

    protocol, transport = connect(cls, app, body_timeout=BOUND)
    protocol.data_received(HEAD + b"{")  # one of two body bytes
    await wait_closed(transport)
    await settle()
    assert transport.written.startswith(b"HTTP/1.1 408")
    assert b"too late" not in transport.written
    assert seen == ["http.request", "http.disconnect"]


@pytest.mark.parametrize("cls", [BoundedHttpToolsProtocol, BoundedH11Protocol])
async def test_a_reply_already_started_is_closed_not_interrupted(cls: Any) -> None:
    """An app that answers before reading the body: the timeout cannot write a 408 into
    its reply, so the connection only closes."""
    gate = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"early", "more_body": True})
        await gate.wait()

    protocol, transport = connect(cls, app, body_timeout=BOUND)
    protocol.data_received(HEAD + b"{")
    await wait_closed(transport)
    assert transport.written.startswith(b"HTTP/1.1 200")
    assert b"408" not in transport.written
    gate.set()
    await settle()


async def test_a_pipelined_slow_body_behind_a_streaming_reply_only_closes() -> None:
    gate = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"streaming", "more_body": True})
        await gate.wait()

    protocol, transport = connect(BoundedHttpToolsProtocol, app, body_timeout=BOUND)
    protocol.data_received(HEAD + b"{}")
    await settle()
    protocol.data_received(HEAD + b"{")  # pipelined: waits behind the first reply
    assert protocol.pipeline
    await wait_closed(transport)
    assert b"408" not in transport.written
    gate.set()
    await settle()


@pytest.mark.parametrize("cls", [BoundedHttpToolsProtocol, BoundedH11Protocol])
async def test_a_body_in_one_read_arms_no_timer(cls: Any) -> None:
    protocol, _ = connect(cls)
    protocol.data_received(HEAD + b"{}")
    assert protocol._body_timer is None
    await settle()  # answered: the connection takes the next request
    protocol.data_received(HEAD)
    assert protocol._body_timer is not None  # a body still to come
    protocol.data_received(b"{}")
    assert protocol._body_timer is None
    await settle()


# ---- the caller hanging up (core/types.py, DisconnectWatch) ----------------------------

GET = b"GET /stream HTTP/1.1\r\nHost: proxy\r\n\r\n"


async def test_every_reply_still_running_hears_its_caller_hang_up() -> None:
    """Two requests pipelined on one connection, the first still streaming when the caller
    hangs up. uvicorn marks only its newest request (the second, not yet started) as
    disconnected, so the first would stream on, and its upstream generate on, unheard. The
    server's watch tells each request whose reply is not complete."""
    heard: list[str] = []
    release = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        watch = scope[DISCONNECT_WATCH]
        watch.callback = lambda: heard.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
        await release.wait()

    protocol, _ = connect(BoundedHttpToolsProtocol, app)
    protocol.data_received(GET + GET.replace(b"/stream", b"/second"))
    await settle()
    assert heard == []
    protocol.connection_lost(None)
    await settle()
    release.set()
    assert heard == ["/stream"]  # the second never started: nothing of it to stop


async def test_a_reply_complete_before_the_hang_up_hears_nothing() -> None:
    heard: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        scope[DISCONNECT_WATCH].callback = lambda: heard.append("hung up")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"whole"})

    protocol, transport = connect(BoundedHttpToolsProtocol, app)
    protocol.data_received(GET)
    await settle()
    assert transport.written.endswith(b"whole\r\n0\r\n\r\n")  # the reply is complete
    protocol.connection_lost(None)
    await settle()
    assert heard == []


async def streaming(scope: Any, receive: Any, send: Any) -> None:
    """A reply under way that waits on the caller (as the relay does on a full socket)."""
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"first", "more_body": True})
    await asyncio.Event().wait()


@pytest.mark.parametrize("cls", [BoundedHttpToolsProtocol, BoundedH11Protocol])
async def test_a_caller_that_takes_nothing_is_cut_after_the_send_bound(cls: Any) -> None:
    protocol, transport = connect(cls, streaming, send_timeout=BOUND)
    protocol.data_received(HEAD + b"{}")
    await settle()
    transport.buffered = 70_000
    protocol.pause_writing()  # the caller's socket is full, and stays so
    await wait_closed(transport)
    assert transport.aborted  # not closed: a close would wait to write what is not read
    protocol.connection_lost(None)
    await settle()


@pytest.mark.parametrize("cls", [BoundedHttpToolsProtocol, BoundedH11Protocol])
async def test_a_caller_that_reads_slowly_is_not_cut(cls: Any) -> None:
    protocol, transport = connect(cls, streaming, send_timeout=BOUND)
    protocol.data_received(HEAD + b"{}")
    await settle()
    transport.buffered = 70_000
    protocol.pause_writing()
    for _ in range(6):  # three bounds' time, a few bytes taken in each
        await asyncio.sleep(BOUND / 2)
        transport.buffered -= 100
    assert not transport.closed
    protocol.resume_writing()  # taken down to the low mark: the bound is off
    await asyncio.sleep(BOUND * 2)
    assert not transport.closed
    protocol.connection_lost(None)
    await settle()
