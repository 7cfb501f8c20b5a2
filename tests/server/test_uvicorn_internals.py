"""The parts of uvicorn (and of h11 and httptools under it) that core/server/ relies on but
that are not uvicorn's public API. One test per internal, naming the code that relies on it,
so an upgrade past the bound in pyproject.toml fails here, loudly, instead of silently
undoing the head, body and connection bounds. docs/development.md says how to raise it.

The protocols are driven in-process through a recording transport, as uvicorn's own tests
do; tests/security/test_server_bounds.py and test_body_timeout.py cover the same bounds
over real sockets.
"""

from __future__ import annotations

import asyncio
import pickle
import sys
from collections import deque
from typing import Any

import h11
import pytest
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from core.server.h11_protocol import BoundedH11Protocol
from core.server.httptools_protocol import BoundedHttpToolsProtocol
from core.server.limits import ServerLimits
from core.server.runner import bounded_websocket_protocol, server_config
from core.types import DIRECT_BODY, DISCONNECT_WATCH
from tests.server.protocol_harness import HEAD, App, connect, settle

BOTH = [BoundedHttpToolsProtocol, BoundedH11Protocol]


@pytest.mark.parametrize("cls", BOTH)
async def test_the_protocol_keeps_config_app_loop_logger_and_connections(cls: Any) -> None:
    """core/server/bounds.py `init_bounds` reads `self.config.server_limits` and keeps
    `self.app` (the proxy) aside; `choose_app` counts `self.connections`, the server-wide
    set a connection joins in `connection_made` and leaves in `connection_lost`; the timers
    use `self.loop`; `self.logger` logs the 503."""
    protocol, _ = connect(cls, max_connections=7)
    assert protocol.limits.max_connections == 7
    assert protocol.app is protocol.config.loaded_app is protocol._proxy_app
    assert protocol.loop is asyncio.get_running_loop()
    assert hasattr(protocol.logger, "warning")
    assert isinstance(protocol.connections, set) and protocol in protocol.connections
    protocol.connection_lost(None)
    assert protocol not in protocol.connections


async def test_httptools_calls_the_parser_callbacks_inside_data_received() -> None:
    """core/server/httptools_protocol.py tracks where a request is from the overridden
    `on_message_begin`, `on_headers_complete` and `on_message_complete`, which httptools
    must call synchronously from uvicorn's `data_received`."""
    assert issubclass(BoundedHttpToolsProtocol, HttpToolsProtocol)
    protocol, _ = connect(BoundedHttpToolsProtocol)
    protocol.data_received(HEAD[:20])
    assert protocol.head_begun() and not protocol.reading_body()
    protocol.data_received(HEAD[20:])
    assert protocol.reading_body()
    protocol.data_received(b"{}")
    assert protocol.awaiting_head() and not protocol.reading_body()
    await settle()


async def test_h11_reports_their_state_and_trailing_data() -> None:
    """core/server/h11_protocol.py reads `self.conn` (an h11.Connection): `their_state`
    IDLE with bytes in `trailing_data[0]` is a head pending, SEND_BODY a body pending."""
    assert issubclass(BoundedH11Protocol, H11Protocol)
    protocol, _ = connect(BoundedH11Protocol)
    assert isinstance(protocol.conn, h11.Connection)
    protocol.data_received(HEAD[:20])
    assert protocol.conn.their_state is h11.IDLE
    data, closed = protocol.conn.trailing_data
    assert data == HEAD[:20] and closed is False
    protocol.data_received(HEAD[20:])
    assert protocol.conn.their_state is h11.SEND_BODY
    protocol.data_received(b"{}")
    assert protocol.conn.their_state is h11.DONE
    await settle()


@pytest.mark.parametrize("cls", BOTH)
async def test_the_cycle_flags_and_a_disconnect_set_from_outside(cls: Any) -> None:
    """core/server/bounds.py reads `self.cycle.response_started` / `response_complete`, and
    on a body timeout sets `cycle.disconnected` and `cycle.message_event`: the app waiting
    for its body must then read `http.disconnect`, and what it sends must be dropped."""
    app = App()
    protocol, transport = connect(cls, app)
    protocol.data_received(HEAD)  # the head, no body yet
    await settle()
    cycle = protocol.cycle
    assert cycle.response_started is False and cycle.response_complete is False
    assert isinstance(cycle.message_event, asyncio.Event)
    cycle.disconnected = True
    cycle.message_event.set()
    await settle()
    assert app.received == [{"type": "http.disconnect"}]
    assert transport.written == b""  # the app's 200 went nowhere
    assert cycle.response_started is False


async def test_a_cycle_holds_the_scope_its_app_gets() -> None:
    """httptools_protocol.py tells a request from an upgrade by `self.cycle.scope is
    self.scope` after uvicorn's on_headers_complete, and puts the DisconnectWatch into that
    scope before the app's task first runs."""
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    protocol, _ = connect(BoundedHttpToolsProtocol, app)
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    await settle()
    [scope] = seen
    assert protocol.cycle.scope is scope
    assert DISCONNECT_WATCH in scope


async def test_a_finished_cycle_says_so() -> None:
    """core/server/bounds.py `_head_timed_out`: a pipelined head behind a reply still
    streaming waits for `cycle.response_complete`."""
    protocol, transport = connect(BoundedHttpToolsProtocol)
    protocol.data_received(HEAD + b"{}")
    await settle()
    assert protocol.cycle.response_started and protocol.cycle.response_complete
    assert transport.written.startswith(b"HTTP/1.1 200")


async def test_httptools_queues_pipelined_requests_in_pipeline() -> None:
    """core/server/bounds.py `_body_timed_out` writes no 408 while `pipeline` (uvicorn's
    deque of requests waiting behind a reply) holds one: a reply is on the wire."""
    gate = asyncio.Event()

    async def slow(scope: Any, receive: Any, send: Any) -> None:
        await gate.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    protocol, _ = connect(BoundedHttpToolsProtocol, slow)
    assert isinstance(protocol.pipeline, deque) and not protocol.pipeline
    protocol.data_received(HEAD + b"{}" + HEAD)
    await settle()
    assert len(protocol.pipeline) == 1
    gate.set()
    await settle()


@pytest.mark.parametrize("cls", BOTH)
async def test_send_400_response_is_the_hook_for_a_request_that_is_not_http(cls: Any) -> None:
    """core/server/*_protocol.py override `send_400_response(msg)`, which uvicorn calls on a
    parse error (and h11 past `h11_max_incomplete_event_size`), to answer JSON."""
    protocol, transport = connect(cls)
    protocol.data_received(b"NOT HTTP AT ALL\r\n\r\n")
    assert transport.written.startswith(b"HTTP/1.1 400")
    assert b"content-type: application/json" in transport.written
    assert transport.closed


@pytest.mark.parametrize("cls", BOTH)
async def test_an_upgrade_hands_the_transport_to_another_protocol(cls: Any) -> None:
    """core/server/bounds.py `upgraded()` compares `transport.get_protocol()` with the HTTP
    protocol: uvicorn hands a WebSocket upgrade over with `transport.set_protocol`, and the
    HTTP protocol's timers must leave that connection alone."""
    protocol, transport = connect(cls)
    assert protocol.config.ws_protocol_class is not None  # websockets is installed
    protocol.data_received(
        b"GET /v1/realtime HTTP/1.1\r\nHost: proxy.test\r\nConnection: Upgrade\r\n"
        b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    assert transport.get_protocol() is not protocol
    assert protocol.upgraded()
    assert protocol._body_timer is None and protocol._head_timer is None
    await settle()
    transport.protocol.connection_lost(None)


async def test_the_upgrade_goes_to_the_bounded_websocket_protocol_uvicorn_would_pick() -> None:
    """core/server/websocket_protocol.py subclasses uvicorn's WebSocketsSansIOProtocol, the
    one uvicorn's `ws="auto"` picks with websockets installed; the send bound
    (core/server/send_bound.py) wraps its `pause_writing` / `resume_writing` (which keep
    `writable`, its sends' gate) and uses its `config`, `loop`, `logger` and `transport`;
    `connection_lost` ends the timer."""
    from uvicorn.protocols.websockets.auto import AutoWebSocketsProtocol

    from core.server.websocket_protocol import BoundedWebSocketProtocol

    assert issubclass(BoundedWebSocketProtocol, AutoWebSocketsProtocol)  # type: ignore[arg-type]
    config = server_config(App(), "127.0.0.1", 0, ServerLimits(send_timeout=0.2))
    config.load()
    # A function that builds it at the upgrade (uvicorn calls what it is given).
    assert config.ws_protocol_class is bounded_websocket_protocol

    async def session(scope: Any, receive: Any, send: Any) -> None:
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        await receive()  # until the connection goes

    protocol, transport = connect(BoundedHttpToolsProtocol, session, send_timeout=0.2)
    protocol.ws_protocol_class = config.ws_protocol_class  # as from server_config's Config
    protocol.data_received(
        b"GET /v1/realtime HTTP/1.1\r\nHost: proxy.test\r\nConnection: Upgrade\r\n"
        b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    socket_protocol = transport.get_protocol()
    assert isinstance(socket_protocol, BoundedWebSocketProtocol)
    assert socket_protocol.loop is asyncio.get_running_loop() and socket_protocol.logger
    assert socket_protocol.transport is transport
    await settle()  # accepted
    assert transport.written.startswith(b"HTTP/1.1 101")
    transport.buffered = 70_000
    socket_protocol.pause_writing()
    assert not socket_protocol.writable.is_set()  # its sends now wait
    deadline = asyncio.get_running_loop().time() + 5
    while not transport.aborted and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.02)
    assert transport.aborted
    socket_protocol.connection_lost(None)
    assert socket_protocol._send_timer is None and socket_protocol.writable.is_set()
    await settle()


@pytest.mark.parametrize(
    "missing", ["websockets", "uvicorn.protocols.websockets.websockets_sansio_impl"]
)
def test_without_the_protocol_it_builds_on_the_server_keeps_uvicorns_own(
    monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    """The bounded protocol subclasses uvicorn's sans-I/O one (uvicorn 0.35 on; pyproject
    allows 0.30) over the websockets library. Where either cannot be imported, the server
    is configured with uvicorn's own choice, as before the protocol was loaded lazily: a
    function that imports the subclass at each upgrade would fail every session there."""
    assert server_config(App(), "127.0.0.1", 0).ws is bounded_websocket_protocol
    monkeypatch.setitem(sys.modules, missing, None)  # as an import of it would fail
    assert server_config(App(), "127.0.0.1", 0).ws == "auto"


def test_the_config_takes_the_server_options_and_survives_pickling() -> None:
    """core/server/runner.py `server_config`: uvicorn.Config takes a protocol class as
    `http`, `h11_max_incomplete_event_size`, a float `timeout_keep_alive` (handed to
    call_later), and an extra `server_limits` attribute that worker processes get back when
    they unpickle the Config (`llm-proxy serve --workers N`)."""
    limits = ServerLimits(max_header_bytes=4096, idle_timeout=1.5, body_timeout=3.0)
    config = server_config("core.cli:app_from_environment", "127.0.0.1", 0, limits, factory=True)
    assert config.http in (BoundedHttpToolsProtocol, BoundedH11Protocol)
    assert config.h11_max_incomplete_event_size == 4096
    assert config.timeout_keep_alive == 1.5
    copy = pickle.loads(pickle.dumps(config))  # noqa: S301  # our own bytes, as workers do
    assert copy.server_limits == limits
    assert copy.http is config.http


def _streaming_app(direct: bool, chunks: list[bytes], headers: Any = (), method_seen: Any = None):  # type: ignore[no-untyped-def]
    """Answers with `chunks` as a streamed body: through the scope's DirectBody writer when
    `direct`, else through `send`, as the relay would (core/proxy/relay.py)."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": list(headers)})
        write = scope[DIRECT_BODY].writer() if direct else None
        if method_seen is not None:
            method_seen.append(write)
        for chunk in chunks:
            if write is None:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            elif write(chunk):
                await scope[DIRECT_BODY].drain()
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    return app


async def test_a_direct_body_writes_what_send_would() -> None:
    """core/server/direct_body.py writes a chunked body's chunks itself, reading the cycle's
    `response_started`, `response_complete`, `chunked_encoding`, `scope`, `transport`,
    `disconnected` and `flow`: what reaches the caller is byte for byte what uvicorn's own
    `send` writes for the same messages."""
    chunks = [b"data: one\n\n", b"data: " + b"x" * 300 + b"\n\n", b"data: [DONE]\n\n"]
    written = []
    for direct in (False, True):
        seen: list[Any] = []
        protocol, transport = connect(
            BoundedHttpToolsProtocol, _streaming_app(direct, chunks, method_seen=seen)
        )
        protocol.data_received(HEAD + b"{}")
        await settle()
        assert protocol.cycle.response_complete
        assert (seen[0] is not None) is direct
        written.append(transport.written)
    assert written[0] == written[1]
    assert b"\r\n\r\nb\r\ndata: one\n\n\r\n134\r\ndata: xxx" in written[1]
    assert written[1].endswith(b"\n\n\r\ne\r\ndata: [DONE]\n\n\r\n0\r\n\r\n")


async def test_a_direct_body_is_offered_only_for_a_chunked_body() -> None:
    """A reply of declared length, or an answer to HEAD, is uvicorn's to write (it counts
    the length, or writes no body): the writer is None and the relay sends."""
    seen: list[Any] = []
    app = _streaming_app(True, [], headers=[(b"content-length", b"0")], method_seen=seen)
    protocol, _ = connect(BoundedHttpToolsProtocol, app)
    protocol.data_received(HEAD + b"{}")
    await settle()
    protocol.data_received(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
    await settle()
    assert seen == [None, None]


async def test_a_direct_body_waits_while_the_caller_is_slow_and_stops_when_it_leaves() -> None:
    """uvicorn's `flow` (pause_writing / resume_writing from the transport) says when the
    caller's socket is full: the writer says so and `drain` waits, as `send` would. Once
    the connection is lost (`cycle.disconnected`), nothing more is written and `drain`
    returns at once."""
    gate = asyncio.Event()
    results: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        body = scope[DIRECT_BODY]
        write = body.writer()
        results.append(write(b"first"))
        await gate.wait()
        results.append(write(b"second"))  # written; the socket is full from now on
        drained = asyncio.ensure_future(body.drain())
        await asyncio.sleep(0)
        results.append(drained.done())
        await drained
        results.append(write(b"third"))

    protocol, transport = connect(BoundedHttpToolsProtocol, app)
    protocol.data_received(HEAD + b"{}")
    await settle()
    assert results == [False]
    protocol.pause_writing()
    gate.set()
    await settle()
    assert results == [False, True, False]  # the writer said full; drain still waiting
    protocol.connection_lost(None)  # uvicorn resumes writing as it loses the connection
    await settle()
    assert results == [False, True, False, False]
    assert b"second" in transport.written and b"third" not in transport.written
