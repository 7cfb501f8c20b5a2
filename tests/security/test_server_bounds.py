"""What a connection can hold before authentication, on the real server entry
(`python -m handlers.http`: uvicorn + httptools, as the Dockerfile runs it) (issue 11,
finding 6).

Measured before: three connections with unfinished 30 MB headers took the process from
44 to 216 MB; 150 slowloris connections were all open after 30 s; a connection that sent
nothing stayed open 80 s.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.servers import (
    PYTHON,
    RunningServer,
    free_port,
    http_entry,
    proxy_env,
    run_process,
)

LIMITS = {
    "MAX_HEADER_BYTES": "16384",
    "HEADER_TIMEOUT": "1",
    "IDLE_TIMEOUT": "1.5",
    "MAX_CONNECTIONS": "40",
}


@pytest.fixture(scope="module", params=["httptools", "h11"])
def server(request: pytest.FixtureRequest) -> Iterator[tuple[RunningServer, int]]:
    port = free_port()
    env = proxy_env(
        "http://127.0.0.1:9",
        HOST="127.0.0.1",
        PORT=str(port),
        ANTHROPIC_API_KEY="sk-fake-anthropic-key",
        **LIMITS,
    )
    url = f"http://127.0.0.1:{port}"
    with run_process(http_entry(request.param), env, f"{url}/health") as process:
        yield RunningServer(url=url, port=port), process.pid


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def is_closed(sock: socket.socket) -> bool:
    """True once the server closed the connection (any reply it sent is read and dropped)."""
    sock.setblocking(False)
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return True
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        sock.setblocking(True)


def reply(sock: socket.socket) -> tuple[int, bytes]:
    status, _, body = reply_and_head(sock)
    return status, body


def reply_and_head(sock: socket.socket) -> tuple[int, bytes, bytes]:
    data = b""
    with contextlib.suppress(OSError):
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return (int(head.split(b" ", 2)[1]) if head else 0), head.lower(), body


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_an_endless_head_is_cut_at_the_byte_bound(server: tuple[RunningServer, int]) -> None:
    proxy, pid = server
    before = rss_mb(pid)
    socks = [connect(proxy.port) for _ in range(3)]
    piece = b"a" * 65536
    for sock in socks:
        sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: proxy.test\r\nX-Filler: ")
        with contextlib.suppress(OSError):
            for _ in range(160):  # 10 MB each, unfinished
                sock.sendall(piece)
    grew = rss_mb(pid) - before
    statuses = [reply(sock)[0] for sock in socks]
    for sock in socks:
        sock.close()
    assert statuses == [431, 431, 431]
    assert grew < 15, f"RSS grew {grew:.0f} MB"


def test_slow_heads_are_closed_after_the_head_timeout(server: tuple[RunningServer, int]) -> None:
    proxy, _ = server
    socks = [connect(proxy.port) for _ in range(30)]
    for sock in socks:
        sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: proxy.test\r\n")
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:  # slowloris: one more header line now and then
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.sendall(b"X-a: b\r\n")
        time.sleep(0.2)
    still_open = sum(not is_closed(sock) for sock in socks)
    for sock in socks:
        sock.close()
    assert still_open == 0, f"{still_open} of {len(socks)} slow connections still open"


def test_silent_connections_are_closed_after_the_head_timeout(
    server: tuple[RunningServer, int],
) -> None:
    proxy, _ = server
    socks = [connect(proxy.port) for _ in range(20)]
    time.sleep(2)
    still_open = sum(not is_closed(sock) for sock in socks)
    for sock in socks:
        sock.close()
    assert still_open == 0, f"{still_open} of {len(socks)} silent connections still open"


def test_idle_keep_alive_connections_are_closed(server: tuple[RunningServer, int]) -> None:
    proxy, _ = server
    sock = connect(proxy.port)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: proxy.test\r\n\r\n")
    assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    time.sleep(0.5)
    assert not is_closed(sock)  # still usable for a while
    time.sleep(1.6)
    assert is_closed(sock)
    sock.close()


def test_connections_past_the_bound_get_a_503_in_the_route_shape(
    server: tuple[RunningServer, int],
) -> None:
    proxy, _ = server
    data = answer_past_the_bound(
        proxy.port,
        b"POST /anthropic/v1/messages HTTP/1.1\r\nHost: proxy.test\r\nContent-Length: 0\r\n\r\n",
    )
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == b"503"
    assert json.loads(body)["error"]["type"] == "overloaded_error"


def answer_past_the_bound(port: int, request: bytes) -> bytes:
    """The whole reply to `request` sent on a connection past MAX_CONNECTIONS (40 held)."""
    held = [connect(port) for _ in range(40)]
    time.sleep(0.2)
    sock = connect(port)
    sock.sendall(request)
    data = b""
    with contextlib.suppress(OSError):
        while chunk := sock.recv(65536):
            data += chunk
    for other in [*held, sock]:
        other.close()
    return data


@pytest.mark.parametrize(
    ("origin", "readable"), [("http://app.example.test", True), ("https://elsewhere.test", False)]
)
def test_the_503_past_the_bound_is_readable_by_an_allowed_page_only(
    server: tuple[RunningServer, int], origin: str, readable: bool
) -> None:
    # Answered instead of the app, so outside its CORS layer: a page on an allowed origin
    # must still be able to read it (and its Retry-After), a foreign page not.
    proxy, _ = server
    data = answer_past_the_bound(
        proxy.port,
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: proxy.test\r\nContent-Length: 0\r\n"
        b"Origin: " + origin.encode() + b"\r\n\r\n",
    )
    head = data.partition(b"\r\n\r\n")[0].decode().lower().split("\r\n")
    assert head[0].split(" ")[1] == "503"
    headers = [line.partition(":")[::2] for line in head[1:]]
    found = {name.strip(): value.strip() for name, value in headers}
    assert "origin" in found.get("vary", "")
    if readable:
        assert found["access-control-allow-origin"] == origin
        assert "retry-after" in found["access-control-expose-headers"]
    else:
        assert "access-control-allow-origin" not in found


def test_ordinary_requests_are_untouched(server: tuple[RunningServer, int]) -> None:
    proxy, _ = server
    with httpx.Client(base_url=proxy.url, timeout=10) as client:
        # A head just under the bound, and a body far over it sent in one piece.
        near = client.get("/health", headers={"x-filler": "a" * 15_000})
        assert near.status_code == 200
        big = client.post("/v1/chat/completions", content=b"{" + b" " * 300_000 + b"}")
        assert big.status_code == 401
        many = [client.get("/health").status_code for _ in range(50)]
    assert set(many) == {200}


def test_a_head_framed_both_ways_is_refused_not_read_as_two_requests(
    server: tuple[RunningServer, int],
) -> None:
    """Content-Length and Transfer-Encoding both: a front end that honours the length passes
    the bytes after the last chunk as body; a server that reads the chunks would take them
    for a next request the front end never saw. Both parsers refuse the head instead."""
    proxy, _ = server
    smuggled = b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    body = b"0\r\n\r\n" + smuggled
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\ntransfer-encoding: chunked\r\n\r\n" % len(body)
    )
    with connect(proxy.port) as sock:
        sock.sendall(head + body)
        data = b""
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                data += chunk
    assert data.count(b"HTTP/1.1 ") == 1, data  # one reply: no second request was read
    status, reply_body = data.split(b" ", 2)[1], data.partition(b"\r\n\r\n")[2]
    assert status == b"400"
    assert json.loads(reply_body)["error"]["code"] == "bad_request"


def anthropic_error(body: bytes) -> str:
    """The Anthropic error type of a reply body: the shape its SDK reads a message from."""
    document = json.loads(body)
    assert document["type"] == "error", document
    return str(document["error"]["type"])


def test_a_head_too_large_or_too_slow_is_refused_in_the_route_shape(
    server: tuple[RunningServer, int],
) -> None:
    # Refused before the head is complete: shaped by its request line, read already.
    proxy, _ = server
    with connect(proxy.port) as sock:
        sock.sendall(b"POST /anthropic/v1/messages HTTP/1.1\r\nHost: x\r\nX-Filler: ")
        with contextlib.suppress(OSError):
            for _ in range(10):
                sock.sendall(b"a" * 65536)
        status, head, body = reply_and_head(sock)
    assert status == 431
    assert anthropic_error(body) == "request_too_large"
    # No retry cures it, as every 4xx the app refuses says (main: no such header here).
    assert b"\r\nx-should-retry: false" in head
    with connect(proxy.port) as sock:
        sock.sendall(b"POST /anthropic/v1/messages?beta=true HTTP/1.1\r\nHost: x\r\n")
        status, head, body = reply_and_head(sock)
    assert status == 408
    assert anthropic_error(body) == "invalid_request_error"
    assert b"x-should-retry" not in head  # the SDKs retry a 408, as anywhere


def test_a_head_that_is_not_valid_http_is_refused_in_the_route_shape(
    server: tuple[RunningServer, int], request: pytest.FixtureRequest
) -> None:
    # h11 drops a head it cannot parse, path and all, before the server sees it: there the
    # refusal is still a clear JSON 400, in OpenAI's shape (the one it can know).
    h11 = request.node.callspec.params["server"] == "h11"
    proxy, _ = server
    for framing in (
        b"Content-Length: 2\r\nContent-Length: 3",  # two lengths
        b"Content-Length: 2\r\nTransfer-Encoding: chunked",  # framed both ways
        b"X-Note: a\x00b",  # a NUL in a header
    ):
        with connect(proxy.port) as sock:
            sock.sendall(
                b"POST /anthropic/v1/messages HTTP/1.1\r\nHost: x\r\n" + framing + b"\r\n\r\n{}"
            )
            status, body = reply(sock)
        assert status == 400
        if h11:
            assert json.loads(body)["error"]["message"]
        else:
            assert anthropic_error(body) == "invalid_request_error"


def test_worker_processes_have_the_bounds_too() -> None:
    """`llm-proxy serve --workers 2`: each worker unpickles the server config, protocol
    class and limits included."""
    port = free_port()
    env = proxy_env("http://127.0.0.1:9", HEADER_TIMEOUT="1", WORKERS="2")
    url = f"http://127.0.0.1:{port}"
    args = [PYTHON, "-m", "core.cli", "serve", "--port", str(port)]
    with run_process(args, env, f"{url}/health"):
        socks = [connect(port) for _ in range(4)]
        time.sleep(2)
        still_open = sum(not is_closed(sock) for sock in socks)
        for sock in socks:
            sock.close()
    assert still_open == 0
