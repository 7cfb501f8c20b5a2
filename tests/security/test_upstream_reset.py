"""An upstream body that ends in a TCP reset reaches the caller as a broken connection,
never as a clean end (issue 11, finding 8).

A close-delimited body (no Content-Length, not chunked) ends where the connection does,
so only the way it ends tells a complete body from a cut one: a FIN is the end, a reset
is a failure (and the peer's kernel may even drop bytes it had not yet handed over).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct

import httpx
import pytest

from core.app import create_app
from core.config import load_settings
from tests.support.raw_upstream import raw_upstream
from tests.support.servers import FAKE_TOKEN, proxy_env, serve_in_thread

BODY = b"data: " + b"x" * 100_000 + b"\n\n"
HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n"


def close_delimited_upstream(*, reset: bool) -> contextlib.AbstractContextManager[int]:
    """Every request gets HEAD + BODY, then a reset (SO_LINGER 0) or an orderly close."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(HEAD + BODY)
        await writer.drain()
        await asyncio.sleep(0.05)  # the body is on the wire before the connection ends
        if reset:
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        else:
            writer.close()

    return raw_upstream(answer)


def fetch_through_proxy(upstream_port: int, transport: str) -> bytes:
    env = proxy_env(f"http://127.0.0.1:{upstream_port}", UPSTREAM_TRANSPORT=transport)
    headers = {"authorization": f"Bearer {FAKE_TOKEN}"}
    with (
        serve_in_thread(create_app(load_settings(env))) as proxy,
        httpx.Client(timeout=10) as client,
        client.stream("GET", f"{proxy.url}/v1/stream", headers=headers) as response,
    ):
        assert response.status_code == 200
        return response.read()


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_reset_after_a_close_delimited_body_aborts_the_reply(transport: str) -> None:
    with close_delimited_upstream(reset=True) as port:
        for _ in range(3):  # it must hold every time, not now and then
            with pytest.raises(httpx.RemoteProtocolError):
                fetch_through_proxy(port, transport)


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_orderly_close_after_a_close_delimited_body_is_a_clean_end(transport: str) -> None:
    with close_delimited_upstream(reset=False) as port:
        assert fetch_through_proxy(port, transport) == BODY
