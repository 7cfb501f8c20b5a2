"""Start the streaming runtime the way Lambda does: the exec wrapper, in a fresh process,
with AWS_LAMBDA_RUNTIME_API pointing at a Runtime API (ours or AWS's emulator)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from core.devtools.mock_upstream import MockOptions, MockUpstream
from core.types import Receive, Scope, Send
from tests.support.servers import stop_process

REPO = Path(__file__).resolve().parents[3]
WRAPPER = REPO / "handlers" / "aws" / "exec_wrapper"
VENV_BIN = str(Path(sys.executable).parent)


def runtime_env(runtime_api: str, proxy: Mapping[str, str]) -> dict[str, str]:
    """The environment Lambda gives a managed-runtime function, plus the proxy's settings."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("UPSTREAM_", "PROXY_"))},
        # `python3` must be this venv's: on Lambda it is the managed runtime's.
        "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "AWS_LAMBDA_RUNTIME_API": runtime_api,
        "LAMBDA_TASK_ROOT": str(REPO),
        "AWS_LAMBDA_FUNCTION_NAME": "llm-proxy-stream",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
        "AWS_REGION": "eu-west-1",
        **proxy,
    }


@dataclass
class RuntimeProcess:
    process: subprocess.Popen[bytes]
    log: Path  # stdout and stderr: a file, so a chatty process never blocks on a full pipe

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def running_runtime(runtime_api: str, proxy: Mapping[str, str]) -> Iterator[RuntimeProcess]:
    """The wrapper started as `$AWS_LAMBDA_EXEC_WRAPPER /var/runtime/bootstrap` is."""
    with tempfile.TemporaryDirectory() as folder:
        log = Path(folder) / "runtime.log"
        with log.open("wb") as sink:
            process = subprocess.Popen(
                [str(WRAPPER), "/var/runtime/bootstrap"],
                env=runtime_env(runtime_api, proxy),
                cwd="/",
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        try:
            yield RuntimeProcess(process, log)
        finally:
            stop_process(process)


class RecordingUpstream:
    """The mock upstream, plus: which client port each request came from (a reused port
    means a warm pooled connection), and `x-break-after: N`, which streams N events and
    then drops the connection mid-body, as a failing provider does."""

    def __init__(self) -> None:
        self.mock = MockUpstream(MockOptions(chunks=8, delay_ms=0))
        self.client_ports: list[int] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope["path"].startswith("/_mock/"):
            self.client_ports.append(scope["client"][1])
            headers = dict(scope["headers"])
            if b"x-break-after" in headers:
                await self._broken_stream(int(headers[b"x-break-after"]), send)
                return
        await self.mock(scope, receive, send)

    @staticmethod
    async def _broken_stream(events: int, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        for index in range(events):
            body = f'data: {{"n":{index}}}\n\n'.encode()
            await send({"type": "http.response.body", "body": body, "more_body": True})
            await asyncio.sleep(0.05)
        raise ConnectionAbortedError("the provider went away mid-stream")
