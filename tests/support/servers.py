"""Run ASGI apps on real loopback sockets for tests: uvicorn in a background thread."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn

from core.types import ASGIApp

REPO = Path(__file__).resolve().parents[2]
FAKE_UPSTREAM_KEY = "sk-mock-upstream-key-not-real"
FAKE_TOKEN = "test-caller-token-0123456789"
OTHER_TOKEN = "test-rotated-token-abcdefghij"


@dataclass
class RunningServer:
    url: str
    port: int


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serve_in_thread(app: ASGIApp, **options: object) -> Iterator[RunningServer]:
    """Serve `app` on 127.0.0.1 (a free port) until the block ends."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_level="warning",
        access_log=False,
        loop="asyncio",
        lifespan="on",
        **options,  # type: ignore[arg-type]
    )
    server = uvicorn.Server(config)
    with _running(server, lambda: asyncio.run(server.serve())) as running:
        yield running


@contextlib.contextmanager
def serve_as_deployed(app: ASGIApp) -> Iterator[RunningServer]:
    """Serve `app` in a background thread as `llm-proxy serve` does: the proxy's own server
    options and bounded protocol (core/server/runner.py), on uvloop when installed."""
    from core.server.runner import server_config

    server = uvicorn.Server(server_config(app, "127.0.0.1", 0))

    def run() -> None:
        try:
            import uvloop
        except ImportError:
            asyncio.run(server.serve())
        else:
            # Its own loop, not the process's policy: other tests keep asyncio's.
            loop = uvloop.new_event_loop()
            try:
                loop.run_until_complete(server.serve())
            finally:
                loop.close()

    with _running(server, run) as running:
        yield running


@contextlib.contextmanager
def _running(server: uvicorn.Server, run: Callable[[], None]) -> Iterator[RunningServer]:
    """`run` (which serves `server`) in a daemon thread, from started until the block ends."""
    # No signal handlers to keep out: uvicorn installs them only from the main thread.
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield RunningServer(url=f"http://127.0.0.1:{port}", port=port)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


# Rate limits count in fixed windows aligned to the clock. With the default minute, a test
# spanning a boundary read the next window's empty counter (one run in thirty for a
# two-second test), and one primed in an hour's last 10 s saw its refusal called
# retryable (tests/sdk/test_refusal_retries.py, at 22:59:5x). The longest window the
# proxy takes puts a boundary once a month.
LONG_WINDOW = str(31 * 86_400)


def proxy_env(upstream_url: str, **extra: str) -> dict[str, str]:
    env = {
        "UPSTREAM_BASE_URL": f"{upstream_url}/v1",
        "UPSTREAM_API_KEY": FAKE_UPSTREAM_KEY,
        "PROXY_ACCESS_TOKEN": f"{FAKE_TOKEN},{OTHER_TOKEN}",
        "ALLOWED_ORIGINS": "http://app.example.test",
        "ACCESS_LOG": "false",
        "RATE_LIMIT_WINDOW": LONG_WINDOW,
    }
    env.update(extra)
    return env


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """Terminate, give it 10 s to exit cleanly, then kill."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def run_process(
    args: list[str], env: Mapping[str, str], ready_url: str, timeout: float = 30
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a server process (output to a file, so a full pipe never stalls it), wait until
    `ready_url` answers, stop it afterwards."""
    with tempfile.NamedTemporaryFile(prefix="server-", suffix=".log", delete=False) as log:
        process = subprocess.Popen(
            args, cwd=REPO, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT
        )
    log_path = Path(log.name)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                output = log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{args} exited early:\n{output}")
            try:
                httpx.get(ready_url, timeout=1, trust_env=False)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{args} not ready in {timeout}s") from None
                time.sleep(0.05)
        yield process
    finally:
        stop_process(process)
        log_path.unlink(missing_ok=True)


PYTHON = sys.executable
# `python -m handlers.http` with httptools hidden: uvicorn's h11 protocol, as in an install
# without the `speed` extra.
_WITHOUT_HTTPTOOLS = (
    "import runpy, sys; sys.modules['httptools'] = None; "
    "runpy.run_module('handlers.http', run_name='__main__')"
)


def http_entry(parser: str = "httptools") -> list[str]:
    """The command of the deployed HTTP entry (`python -m handlers.http`), over httptools
    or, `parser="h11"`, over h11; it reads HOST and PORT from its environment."""
    if parser == "h11":
        return [PYTHON, "-c", _WITHOUT_HTTPTOOLS]
    return [PYTHON, "-m", "handlers.http"]


def reset_upstream(upstream: RunningServer) -> None:
    httpx.post(f"{upstream.url}/_mock/reset")


def upstream_requests(upstream: RunningServer) -> list[dict[str, object]]:
    """What the mock upstream received since the last reset, oldest first."""
    return list(httpx.get(f"{upstream.url}/_mock/requests").json())
