"""The parts of aiohttp that core/upstream/aiohttp_transport.py relies on but that are not
aiohttp's public API. One test per internal, naming the code that relies on it, so an
upgrade past the bound in pyproject.toml fails here, loudly, instead of silently reading a
reset upstream body as complete. docs/development.md says how to raise the bound.

tests/security/test_upstream_reset.py checks the behaviour end to end through the proxy.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp.client_proto import ResponseHandler

from core.upstream.aiohttp_transport import _Connector, _ResetAwareHandler

HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n"


@pytest.fixture
async def close_delimited() -> AsyncIterator[tuple[int, asyncio.Event, list[asyncio.StreamWriter]]]:
    """A raw server that answers a head and the start of a close-delimited body, then waits
    (`release`) before it resets the connection."""
    release = asyncio.Event()
    writers: list[asyncio.StreamWriter] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writers.append(writer)
        writer.write(HEAD + b"partial body")
        await writer.drain()
        await release.wait()
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield port, release, writers
        release.set()


def test_response_handler_is_importable_and_takes_the_loop_by_keyword() -> None:
    """aiohttp_transport.py subclasses `aiohttp.client_proto.ResponseHandler` and builds it
    as `ResponseHandler(loop=...)` (the partial it puts in `TCPConnector._factory`)."""
    assert issubclass(_ResetAwareHandler, ResponseHandler)
    loop = asyncio.new_event_loop()
    try:
        handler = _ResetAwareHandler(loop=loop)
        # `_payload` exists before any response: None until a body starts.
        assert handler._payload is None
        assert callable(handler.connection_lost)
    finally:
        loop.close()


async def test_the_connector_builds_each_connection_with_factory() -> None:
    """aiohttp_transport.py `_Connector` replaces `TCPConnector._factory` (built in
    `__init__` from `self._loop`) so every connection, TLS ones included, gets the
    reset-aware handler."""
    plain = aiohttp.TCPConnector()
    try:
        assert callable(plain._factory)
        assert plain._loop is asyncio.get_running_loop()
    finally:
        await plain.close()
    connector = _Connector()
    try:
        assert isinstance(connector._factory(), _ResetAwareHandler)
    finally:
        await connector.close()


async def test_payload_is_the_open_body_and_a_reset_fails_it(
    close_delimited: tuple[int, asyncio.Event, list[asyncio.StreamWriter]],
) -> None:
    """aiohttp_transport.py `_ResetAwareHandler.connection_lost` reads `self._payload`, the
    StreamReader of the body being read (the response's `content`), asks `is_eof()` and
    calls `set_exception()`: a reset mid-body must end the read in ClientPayloadError."""
    port, release, _ = close_delimited
    async with aiohttp.ClientSession(connector=_Connector()) as session:
        response = await session.get(f"http://127.0.0.1:{port}/")
        assert await response.content.readany() == b"partial body"
        protocol = response.connection.protocol  # type: ignore[union-attr]
        assert isinstance(protocol, _ResetAwareHandler)
        assert protocol._payload is response.content
        assert not protocol._payload.is_eof()
        release.set()
        with pytest.raises(aiohttp.ClientPayloadError):
            while await response.content.readany():
                pass


async def test_without_the_patch_aiohttp_still_reads_a_reset_as_a_clean_end(
    close_delimited: tuple[int, asyncio.Event, list[asyncio.StreamWriter]],
) -> None:
    """Why the patch exists at all. If aiohttp starts failing a reset close-delimited body
    by itself, this test says so, and `_ResetAwareHandler` (with the two internals it reads)
    can go."""
    port, release, _ = close_delimited
    async with aiohttp.ClientSession() as session:
        response = await session.get(f"http://127.0.0.1:{port}/")
        assert await response.content.readany() == b"partial body"
        release.set()
        while await response.content.readany():
            pass
        assert response.content.is_eof()


async def test_the_read_timer_is_aiohttps_own_rearmed_lazily() -> None:
    """aiohttp_transport.py `_ResetAwareHandler` overrides `_reschedule_timeout` (what
    aiohttp calls for each chunk that arrives, and to start the read timeout) and reads
    `_read_timeout`, `_read_timeout_handle`, `_loop`, `_drop_timeout` and
    `_on_read_timeout`. The timeout must still fire a full sock_read after the last chunk,
    never sooner, and a pause (`_drop_timeout`) must stop it."""
    loop = asyncio.get_running_loop()
    handler = _ResetAwareHandler(loop=loop)
    handler.read_timeout = 0.3
    assert handler._read_timeout == 0.3
    started = loop.time()
    handler.start_timeout()
    first_timer = handler._read_timeout_handle
    assert first_timer is not None
    await asyncio.sleep(0.2)
    handler._reschedule_timeout()  # a chunk came: the same timer, not a new one
    assert handler._read_timeout_handle is first_timer
    await asyncio.sleep(0.2)  # 0.4 s from the start, 0.2 s after the chunk
    assert handler.exception() is None
    await asyncio.sleep(0.25)  # 0.45 s after the chunk
    error = handler.exception()
    assert isinstance(error, aiohttp.SocketTimeoutError)
    assert loop.time() - started >= 0.5

    paused = _ResetAwareHandler(loop=loop)
    paused.read_timeout = 0.1
    paused.start_timeout()
    paused._drop_timeout()  # reading paused by us: the peer is not late
    assert paused._read_timeout_handle is None
    await asyncio.sleep(0.2)
    assert paused.exception() is None
    assert callable(ResponseHandler._on_read_timeout)
