"""A WebSocket upgrade on a route that has no WebSocket gets a clear refusal in the route's
shape, not a 500 (issue 11, finding 11; the realtime routes are tests/realtime)."""

from __future__ import annotations

import json
import socket

import pytest

from core.app import create_app
from core.config import load_settings
from tests.support.servers import FAKE_TOKEN, proxy_env, serve_in_thread

UPGRADE = (
    "GET {path} HTTP/1.1\r\nHost: proxy.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    f"Authorization: Bearer {FAKE_TOKEN}\r\n\r\n"
)


def upgrade(port: int, path: str) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(UPGRADE.format(path=path).encode())
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
            head, sep, body = reply.partition(b"\r\n\r\n")
            if sep and b"content-length" in head.lower():
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                if len(body) >= length:
                    break
    status = int(reply.split(b" ", 2)[1])
    return status, reply.partition(b"\r\n\r\n")[2]


@pytest.mark.parametrize(
    ("path", "shape"),
    [
        ("/v1/chat/completions", "openai"),
        ("/anthropic/v1/messages", "anthropic"),
        ("/gemini/v1beta/x", "gemini"),
    ],
)
def test_websocket_upgrade_is_refused_in_the_route_shape(path: str, shape: str) -> None:
    env = proxy_env(
        "http://127.0.0.1:9",
        ANTHROPIC_API_KEY="sk-fake-anthropic-key",
        GEMINI_API_KEY="fake-gemini-key",
    )
    with serve_in_thread(create_app(load_settings(env))) as proxy:
        status, body = upgrade(proxy.port, path)
    assert status == 404
    error = json.loads(body)
    if shape == "anthropic":
        assert error["type"] == "error"
    elif shape == "gemini":
        assert error["error"]["status"] == "NOT_FOUND"
    else:
        assert error["error"]["message"]
