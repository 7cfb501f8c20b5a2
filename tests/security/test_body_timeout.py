"""A request body has a bounded time to arrive (BODY_TIMEOUT), on the real server entry
(`python -m handlers.http`, over httptools and over h11) (issue 19, class 2).

Before: a caller with a valid token that sent its head, then one body byte every 5 s,
held its connection (and the request's task) indefinitely: there was a head timeout but no
body timeout. Bounds here are scaled down (2 s) so the suite stays quick.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import Iterator

import pytest

from core.config import ConfigError, load_settings
from core.server.limits import ServerLimits
from tests.support.servers import (
    FAKE_TOKEN,
    RunningServer,
    free_port,
    http_entry,
    proxy_env,
    reset_upstream,
    run_process,
    upstream_requests,
)

BODY_TIMEOUT = 2.0
PAGE = "https://app.example"
# Scheduling slack on a loaded 2-core machine: the bound is checked to this precision.
SLACK = 1.5


@pytest.fixture(scope="module", params=["httptools", "h11"])
def proxy_port(request: pytest.FixtureRequest, mock_upstream: RunningServer) -> Iterator[int]:
    port = free_port()
    env = proxy_env(
        mock_upstream.url,
        HOST="127.0.0.1",
        PORT=str(port),
        BODY_TIMEOUT=str(BODY_TIMEOUT),
        IDLE_TIMEOUT="30",
        ALLOWED_ORIGINS=PAGE,
    )
    with run_process(http_entry(request.param), env, f"http://127.0.0.1:{port}/health"):
        yield port


def chat_body(size: int) -> bytes:
    """A chat request padded with whitespace to `size` bytes."""
    body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
    return body.encode().ljust(size)


def head(
    length: int, token: str | None = FAKE_TOKEN, keep_alive: bool = False, origin: str = ""
) -> bytes:
    lines = [
        "POST /v1/chat/completions HTTP/1.1",
        "Host: proxy.test",
        "Content-Type: application/json",
        f"Content-Length: {length}",
    ]
    if origin:
        lines.append(f"Origin: {origin}")
    if not keep_alive:
        lines.append("Connection: close")
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def trickle_until_closed(sock: socket.socket, body: bytes, gap: float, limit: float) -> bytes:
    """Send `body` a byte every `gap` seconds until the server answers or closes (or `limit`
    seconds pass); return what it sent back."""
    received = b""
    deadline = time.monotonic() + limit
    sock.settimeout(gap)
    for byte in body:
        if time.monotonic() > deadline:
            break
        try:
            sock.sendall(bytes([byte]))
            chunk = sock.recv(65536)
        except TimeoutError:
            continue  # nothing back yet: the next byte
        except OSError:
            break  # reset: closed by the server
        if not chunk:
            break  # closed by the server
        received += chunk
    with contextlib.suppress(OSError):
        sock.settimeout(2)
        while chunk := sock.recv(65536):
            received += chunk
    return received


def status_of(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/1.1 ") else 0


def test_a_trickled_body_gets_408_within_the_bound(
    proxy_port: int, mock_upstream: RunningServer
) -> None:
    reset_upstream(mock_upstream)
    body = chat_body(200)
    sock = connect(proxy_port)
    started = time.monotonic()
    sock.sendall(head(len(body)))
    reply = trickle_until_closed(sock, body, gap=0.5, limit=BODY_TIMEOUT + 10)
    elapsed = time.monotonic() - started
    sock.close()
    assert status_of(reply) == 408, reply[:200]
    error = json.loads(reply.partition(b"\r\n\r\n")[2])["error"]
    assert "body did not arrive in time" in error["message"]
    assert BODY_TIMEOUT - 0.2 < elapsed < BODY_TIMEOUT + SLACK
    assert upstream_requests(mock_upstream) == []  # nothing half-read was forwarded


@pytest.mark.parametrize(("origin", "readable"), [(PAGE, True), ("https://evil.example", False)])
def test_the_408_is_readable_by_an_allowed_page_only(
    proxy_port: int, origin: str, readable: bool
) -> None:
    """Written by the server, not the app: it carried no CORS header, so a page on an
    allowed origin saw a network error instead of the 408 and its message."""
    body = chat_body(200)
    sock = connect(proxy_port)
    sock.sendall(head(len(body), origin=origin))
    reply = trickle_until_closed(sock, body, gap=0.5, limit=BODY_TIMEOUT + 10)
    sock.close()
    assert status_of(reply) == 408, reply[:200]
    lines = reply.partition(b"\r\n\r\n")[0].lower().split(b"\r\n")
    assert b"vary: origin" in lines
    allowed = b"access-control-allow-origin: " + origin.encode() in lines
    assert allowed is readable
    assert any(line.startswith(b"access-control-allow-origin") for line in lines) is readable


def test_a_body_that_sends_nothing_after_the_head_is_cut_too(proxy_port: int) -> None:
    sock = connect(proxy_port)
    started = time.monotonic()
    sock.sendall(head(100))
    sock.settimeout(BODY_TIMEOUT + 10)
    reply = b""
    with contextlib.suppress(OSError):
        while chunk := sock.recv(65536):
            reply += chunk
    elapsed = time.monotonic() - started
    sock.close()
    assert status_of(reply) == 408
    assert elapsed < BODY_TIMEOUT + SLACK


def test_a_refused_request_still_trickling_its_body_is_closed(proxy_port: int) -> None:
    """Without a credential the proxy answers 401 before it reads the body; a keep-alive
    caller that goes on trickling does not keep the connection (each byte used to put off
    the idle timeout)."""
    body = chat_body(200)
    sock = connect(proxy_port)
    started = time.monotonic()
    sock.sendall(head(len(body), token=None, keep_alive=True))
    reply = trickle_until_closed(sock, body, gap=0.5, limit=BODY_TIMEOUT + 10)
    elapsed = time.monotonic() - started
    sock.close()
    assert status_of(reply) == 401
    assert elapsed < BODY_TIMEOUT + SLACK


def test_a_slow_but_steady_upload_under_the_bound_passes(
    proxy_port: int, mock_upstream: RunningServer
) -> None:
    reset_upstream(mock_upstream)
    body = chat_body(64 * 1024)
    pieces = [body[i : i + 8192] for i in range(0, len(body), 8192)]
    sock = connect(proxy_port)
    started = time.monotonic()
    sock.sendall(head(len(body)))
    for piece in pieces:  # 8 pieces over about 1 s: half the bound
        time.sleep(0.125)
        sock.sendall(piece)
    sock.settimeout(10)
    reply = b""
    with contextlib.suppress(OSError):
        while chunk := sock.recv(65536):
            reply += chunk
    elapsed = time.monotonic() - started
    sock.close()
    assert status_of(reply) == 200, reply[:300]
    assert json.loads(reply.partition(b"\r\n\r\n")[2])["object"] == "chat.completion"
    assert elapsed < BODY_TIMEOUT
    [forwarded] = upstream_requests(mock_upstream)
    assert forwarded["body_length"] == len(body)


def test_a_long_reply_is_not_cut_by_the_body_bound(proxy_port: int) -> None:
    """The bound is on the caller's body only: a reply that streams for longer than it
    (here 3 s of events) reaches its end."""
    body = json.dumps(
        {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    ).encode()
    sock = connect(proxy_port)
    sock.sendall(
        head(len(body)).replace(
            b"\r\n\r\n", b"\r\nx-mock-chunks: 12\r\nx-mock-delay-ms: 250\r\n\r\n"
        )
        + body
    )
    sock.settimeout(10)
    reply = b""
    with contextlib.suppress(OSError):
        while chunk := sock.recv(65536):
            reply += chunk
    sock.close()
    assert status_of(reply) == 200
    assert b"data: [DONE]" in reply


def test_body_timeout_is_read_and_checked_like_the_other_server_bounds() -> None:
    env = proxy_env("http://127.0.0.1:9")
    assert load_settings(env).server.body_timeout == ServerLimits.body_timeout == 60.0
    assert load_settings({**env, "BODY_TIMEOUT": "2.5"}).server.body_timeout == 2.5
    for bad in ("0", "-1", "soon"):
        with pytest.raises(ConfigError) as caught:
            load_settings({**env, "BODY_TIMEOUT": bad})
        assert [p for p in caught.value.problems if p.startswith("BODY_TIMEOUT")], bad


@pytest.mark.parametrize("parser", ["httptools", "h11"])
async def test_a_websocket_session_outlives_the_body_bound(parser: str) -> None:
    """An upgrade hands the connection to the WebSocket protocol: no body timer follows it
    there (a session open for 2.5x BODY_TIMEOUT still relays)."""
    import websockets

    from tests.support.fake_realtime import FakeRealtime
    from tests.support.servers import FAKE_UPSTREAM_KEY, serve_in_thread

    with serve_in_thread(FakeRealtime()) as fake:
        port = free_port()
        env = proxy_env(
            fake.url,
            HOST="127.0.0.1",
            PORT=str(port),
            BODY_TIMEOUT="1",
            OPENAI_API_KEY=FAKE_UPSTREAM_KEY,
            OPENAI_UPSTREAM=fake.url,
        )
        with run_process(http_entry(parser), env, f"http://127.0.0.1:{port}/health"):
            url = f"ws://127.0.0.1:{port}/v1/realtime?model=gpt-realtime"
            headers = {"Authorization": f"Bearer {FAKE_TOKEN}"}
            async with websockets.connect(url, additional_headers=headers) as socket_:
                await asyncio.wait_for(socket_.recv(), 5)  # session.created
                await asyncio.sleep(2.5)
                await socket_.send(json.dumps({"type": "response.create"}))
                kinds = []
                while "response.done" not in kinds:
                    kinds.append(json.loads(await asyncio.wait_for(socket_.recv(), 5))["type"])
