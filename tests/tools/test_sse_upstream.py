"""The streams bench's lean upstream (bench/sse_upstream.py) stands in for the mock: the
figures compare relays on it, so it must send the mock's chat events byte for byte, one
stream after another on a keep-alive connection, each event `delay` after the one before."""

from __future__ import annotations

import re
import socket
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.servers import free_port, run_process

CHUNKS = 5
DELAY_MS = 40
REQUEST = {
    "model": "mock-model",
    "stream": True,
    "stream_options": {"include_usage": True},
    "messages": [{"role": "user", "content": "hi"}],
}


@pytest.fixture(scope="module")
def lean() -> Iterator[str]:
    port = free_port()
    args = [sys.executable, "-m", "bench.sse_upstream", str(port), str(CHUNKS), str(DELAY_MS)]
    with run_process(args, {}, f"http://127.0.0.1:{port}/health"):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def mock() -> Iterator[str]:
    port = free_port()
    args = [sys.executable, "-m", "core.cli", "mock-upstream", "--port", str(port)]
    args += ["--chunks", str(CHUNKS), "--delay-ms", "0"]
    with run_process(args, {}, f"http://127.0.0.1:{port}/_mock/requests"):
        yield f"http://127.0.0.1:{port}"


def _events(url: str, request: dict[str, object]) -> list[bytes]:
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=request, timeout=10) as reply:
        assert reply.status_code == 200
        assert reply.headers["content-type"] == "text/event-stream; charset=utf-8"
        body = b"".join(reply.iter_raw())
    # `created` is the second it was made: the one field two servers cannot share.
    body = re.sub(rb'"created":\d+', b'"created":0', body)
    return body.split(b"\n\n")


@pytest.mark.parametrize("usage", [True, False])
def test_the_lean_upstream_sends_the_mocks_events_byte_for_byte(
    lean: str, mock: str, usage: bool
) -> None:
    request = {**REQUEST, "stream_options": {"include_usage": usage}}
    ours = _events(lean, request)
    assert ours == _events(mock, request)
    # role, CHUNKS words, stop, [usage], [DONE], and the empty piece after the last \n\n
    assert len(ours) == CHUNKS + 4 + usage


def test_streams_follow_one_another_on_a_kept_connection_at_the_mocks_pace(lean: str) -> None:
    port = int(lean.rsplit(":", 1)[1])
    body = httpx.Request("POST", "http://x", json=REQUEST).content
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        for _ in range(2):
            started = time.monotonic()
            conn.sendall(head + body)
            received = b""
            arrivals = []
            while not received.endswith(b"\r\n0\r\n\r\n"):
                piece = conn.recv(65536)
                assert piece, "the upstream closed a kept connection"
                received += piece
                arrivals.append(time.monotonic() - started)
            events = received.count(b"\n\n")
            assert events == CHUNKS + 4  # role, words, stop, usage, [DONE]
            # The first event comes `delay` after the request, each next one `delay` later.
            assert arrivals[0] < DELAY_MS / 1000 / 2  # the head, at once
            assert arrivals[-1] >= events * DELAY_MS / 1000 * 0.95
