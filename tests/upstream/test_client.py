"""core/upstream/client.py: both transports fail the same way, and a server never loads httpx.

A server relays through aiohttp; a function instance through httpx. The proxy's code reads
a TransportFailure (its kind, whether it timed out, whether anything was sent), never a
transport's own classes, so a failover, a 502/504 and telemetry's error.type come out the
same on both, and a server does not pay for importing httpx (and, where rich and click are
installed, httpx's command line): about 6 MB of a server's memory at rest here.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import textwrap

import pytest

from core.config import load_settings
from core.errors import InvalidUpstreamURL, TransportFailure
from core.upstream.client import UpstreamClient
from tests.support.servers import PYTHON, REPO

TRANSPORTS = ("aiohttp", "httpx")


def client(transport: str, read_timeout: str = "30") -> UpstreamClient:
    settings = load_settings(
        {
            "UPSTREAM_BASE_URL": "http://127.0.0.1:9/v1",
            "UPSTREAM_API_KEY": "sk-fake-client-test",
            "PROXY_ACCESS_TOKEN": "tok-fake-client-test-0123456789",
            "UPSTREAM_READ_TIMEOUT": read_timeout,
        }
    )
    return UpstreamClient(settings, transport)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def failure_of(transport: str, url: str, read_timeout: str = "30") -> TransportFailure:
    upstream = client(transport, read_timeout)
    try:
        with pytest.raises(TransportFailure) as raised:
            await upstream.send("POST", url, [(b"content-type", b"application/json")], b"{}")
        return raised.value
    finally:
        await upstream.aclose()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_refused_connection_is_a_connect_error_that_sent_nothing(transport: str) -> None:
    failure = await failure_of(transport, f"http://127.0.0.1:{closed_port()}/v1/x")
    assert (failure.kind, failure.never_sent, failure.timed_out) == ("ConnectError", True, False)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_an_upstream_that_never_answers_is_a_read_timeout_that_was_sent(
    transport: str,
) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await reader.read()  # never answers: reads until the proxy gives up and hangs up

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        failure = await failure_of(transport, f"http://127.0.0.1:{port}/v1/x", "0.3")
    finally:
        server.close()
    # Sent, and maybe running and billed there: no failover, and the caller is charged.
    assert (failure.kind, failure.never_sent, failure.timed_out) == ("ReadTimeout", False, True)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("bad", ["\x01", "\x7f", "x" * 70_000])
async def test_a_url_httpx_refuses_is_refused_on_both_transports(transport: str, bad: str) -> None:
    failure = await failure_of(transport, f"http://127.0.0.1:{closed_port()}/v1/x?q={bad}")
    assert isinstance(failure, InvalidUpstreamURL)


def test_a_server_relays_a_stream_without_importing_httpx() -> None:
    """The app a server builds (`concurrent=True`: aiohttp) answers a streamed request in a
    fresh interpreter, and httpx is not among the modules it loaded."""
    script = textwrap.dedent(
        """
        import asyncio, sys
        from core.app import create_app
        from core.config import load_settings

        async def upstream(reader, writer):
            await reader.readuntil(b"\\r\\n\\r\\n")
            body = b'data: {"choices":[]}\\n\\ndata: [DONE]\\n\\n'
            writer.write(b"HTTP/1.1 200 OK\\r\\ncontent-type: text/event-stream\\r\\n"
                         b"content-length: %d\\r\\n\\r\\n" % len(body) + body)
            await writer.drain()
            writer.close()

        async def main():
            server = await asyncio.start_server(upstream, "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            app = create_app(load_settings({
                "UPSTREAM_BASE_URL": f"http://127.0.0.1:{port}/v1",
                "UPSTREAM_API_KEY": "sk-fake-no-httpx",
                "PROXY_ACCESS_TOKEN": "tok-fake-no-httpx-0123456789",
            }), concurrent=True)
            body = b'{"model":"m","stream":true,"messages":[]}'
            messages = [{"type": "http.request", "body": body, "more_body": False}]
            sent = []
            async def receive():
                if messages:
                    return messages.pop()
                await asyncio.Event().wait()
            async def send(message):
                sent.append(message)
            scope = {"type": "http", "http_version": "1.1", "method": "POST",
                     "scheme": "http", "path": "/v1/chat/completions",
                     "raw_path": b"/v1/chat/completions", "query_string": b"",
                     "root_path": "", "client": ("127.0.0.1", 5), "server": ("127.0.0.1", 8),
                     "headers": [(b"host", b"proxy"), (b"content-type", b"application/json"),
                                 (b"authorization", b"Bearer tok-fake-no-httpx-0123456789")]}
            await app(scope, receive, send)
            server.close()
            print(sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:]))
            print("httpx loaded:", "httpx" in sys.modules, "aiohttp loaded:", "aiohttp" in sys.modules)

        asyncio.run(main())
        """
    )
    env = {"PATH": os.environ["PATH"], "LLM_PROXY_ENV_FILE": os.devnull + ".absent"}
    done = subprocess.run(
        [PYTHON, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "200 b'data: {\"choices\":[]}\\n\\ndata: [DONE]\\n\\n'" in done.stdout, done.stdout
    assert "httpx loaded: False aiohttp loaded: True" in done.stdout, done.stdout
