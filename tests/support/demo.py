"""`llm-proxy demo` as a new user starts it: a subprocess with no provider settings in its
environment, read until its banner is printed and its proxy answers."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx

from tests.support.servers import free_port

# Nothing of the machine's own settings (or a .env) may choose what the demo runs.
CLEAN_ENV = {
    k: v
    for k, v in os.environ.items()
    if not k.startswith(("UPSTREAM_", "PROXY_", "ALLOWED_", "TOKEN_", "ADMIN_"))
}


@dataclass
class RunningDemo:
    port: int
    banner: str

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextlib.contextmanager
def running_demo(*args: str, start_within: float = 20) -> Iterator[RunningDemo]:
    port, mock_port = free_port(), free_port()
    command = [sys.executable, "-m", "core.cli", "demo", "--port", str(port)]
    proc = subprocess.Popen(
        [*command, "--mock-port", str(mock_port), *args],
        env={**CLEAN_ENV, "LLM_PROXY_ENV_FILE": "/nonexistent"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        banner = ""
        deadline = time.monotonic() + start_within
        while "Ctrl-C" not in banner:
            assert time.monotonic() < deadline and proc.stdout is not None
            banner += proc.stdout.readline()
        for _ in range(100):
            try:
                httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield RunningDemo(port, banner)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
