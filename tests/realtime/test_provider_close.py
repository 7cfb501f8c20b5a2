"""A provider that does not answer the proxy's close frame cannot hold a session open.

However a session ends (the caller leaves, a rule ends it, the time limit), the proxy sends
the provider a close frame and waits for its answer at most CLOSE_WAIT_SECONDS
(core/realtime/session.py). The provider here is a bare
WebSocket server on a raw socket that never answers a close: silent, or sending frames the
whole time. Held open, the session would keep the caller's slot under
REALTIME_SESSIONS_PER_CALLER, its reservation unsettled and both sockets until
REALTIME_MAX_SECONDS.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import websockets

from core.realtime.session import CLOSE_WAIT_SECONDS
from tests.support.realtime import ProxyFactory
from tests.support.servers import FAKE_TOKEN

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455, 4.2.2


def server_frame(payload: bytes) -> bytes:
    """An unmasked text frame (a server's), payload under 126 bytes."""
    return bytes([0x81, len(payload)]) + payload


@dataclass
class DeafProvider:
    """Accepts a session, says session.created, then never answers a close frame."""

    chatty: bool
    close_frame_at: float | None = None  # when the proxy's close frame arrived
    gone_at: float | None = None  # when the proxy closed the socket
    sessions: list[None] = field(default_factory=list)

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        found = re.search(rb"(?i)sec-websocket-key: *(\S+)", head)
        assert found is not None
        # SHA-1 is what the handshake is made of (RFC 6455), not a security choice.
        digest = hashlib.sha1(found.group(1) + _GUID, usedforsecurity=False).digest()
        accept = base64.b64encode(digest)
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        writer.write(server_frame(b'{"type":"session.created","session":{}}'))
        self.sessions.append(None)
        while True:
            if self.chatty:
                writer.write(server_frame(b'{"type":"response.output_text.delta"}'))
            try:
                data = await asyncio.wait_for(reader.read(65536), 0.2)
            except TimeoutError:
                continue
            except ConnectionError:
                # Let go with frames of ours still unread: closing such a socket sends a
                # reset, not an end of stream (RFC 1122, 4.2.2.13), which a read sees as a
                # reset and a write of ours (the chatty provider's) as a broken pipe.
                data = b""
            if not data:
                self.gone_at = time.monotonic()
                writer.close()
                return
            if data[0] & 0x0F == 0x8 and self.close_frame_at is None:
                self.close_frame_at = time.monotonic()  # and never answered


async def caller_leaves(socket: Any) -> None:
    pass  # the block ends: the caller's close


async def frame_too_large(socket: Any) -> None:
    await socket.send("x" * 70_000)  # over REALTIME_MAX_FRAME_BYTES: the proxy ends it (1009)
    await closed(socket)


async def time_limit(socket: Any) -> None:
    await closed(socket)  # REALTIME_MAX_SECONDS: the proxy ends it (1008)


async def closed(socket: Any) -> None:
    with pytest.raises(websockets.ConnectionClosed):
        while True:
            await asyncio.wait_for(socket.recv(), 10)


ENDINGS: dict[str, Callable[[Any], Awaitable[None]]] = {
    "caller leaves": caller_leaves,
    "frame too large": frame_too_large,
    "time limit": time_limit,
}


@pytest.mark.parametrize("ending", list(ENDINGS))
@pytest.mark.parametrize("chatty", [False, True], ids=["silent", "sending"])
async def test_a_provider_that_never_answers_the_close_is_let_go(
    start_proxy: ProxyFactory, chatty: bool, ending: str
) -> None:
    provider = DeafProvider(chatty)
    server = await asyncio.start_server(provider, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    limit = "1" if ending == "time limit" else "30"
    try:
        with start_proxy(
            OPENAI_UPSTREAM=f"http://127.0.0.1:{port}",
            REALTIME_MAX_SECONDS=limit,
            REALTIME_MAX_FRAME_BYTES="65536",
        ) as proxy:
            url = "ws" + proxy.url[4:] + "/openai/v1/realtime?model=gpt-realtime"
            headers = {"Authorization": f"Bearer {FAKE_TOKEN}"}
            async with websockets.connect(url, additional_headers=headers) as socket:
                await asyncio.wait_for(socket.recv(), 5)  # session.created
                await ENDINGS[ending](socket)
                ended_at = time.monotonic()
            deadline = ended_at + 10
            while provider.gone_at is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
    finally:
        server.close()
    assert provider.sessions, "the proxy never reached the provider"
    # The proxy's close went to the provider, which was then let go within the bound.
    assert provider.close_frame_at is not None
    assert provider.gone_at is not None, "the session was still open 10 s after it ended"
    assert provider.gone_at - ended_at < CLOSE_WAIT_SECONDS + 1.0
