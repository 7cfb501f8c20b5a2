"""The streaming runtime under AWS's own Runtime Interface Emulator (the `rapid` binary
that ships in the aws-sam-cli wheel): a protocol conformance check.

The emulator accepts a streamed reply but hands the invoker the whole body at the end, so
this checks the protocol (prelude, delimiter, body, one INIT for many invocations, a
deadline honoured without a sandbox reset), not timing; test_stream_runtime.py does that.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from core import __version__
from tests.support.lambda_events import HttpRequest, api_gateway_v1, function_url
from tests.support.servers import (
    FAKE_TOKEN,
    RunningServer,
    free_port,
    proxy_env,
    serve_in_thread,
    stop_process,
)

from .runtime_process import REPO, WRAPPER, RecordingUpstream, runtime_env

FETCH_RIE = REPO / "tools" / "lambda" / "fetch_rie.py"
INVOKE_PATH = "/2015-03-31/functions/function/invocations"
DELIMITER = b"\0" * 8


def emulator_binary() -> Path:
    """tools/lambda/rie/aws-lambda-rie-<arch> (`make lambda-tools` puts it there)."""
    out = subprocess.run(
        [sys.executable, str(FETCH_RIE)], capture_output=True, text=True, timeout=300, check=True
    )
    return Path(out.stdout.strip().splitlines()[-1])


class Emulator:
    def __init__(self, url: str, log: Path) -> None:
        self.url = url
        self.log = log

    def invoke(
        self, event: dict[str, object], timeout: float = 30
    ) -> tuple[dict[str, object], bytes]:
        reply = httpx.post(self.url + INVOKE_PATH, json=event, timeout=timeout)
        assert reply.status_code == 200, reply.text
        prelude, delimiter, body = reply.content.partition(DELIMITER)
        assert delimiter, reply.content[:300]
        return json.loads(prelude), body

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def running_emulator(proxy: dict[str, str], function_timeout: int = 30) -> Iterator[Emulator]:
    port, api_port = free_port(), free_port()
    env = runtime_env("set-by-the-emulator", proxy)
    del env["AWS_LAMBDA_RUNTIME_API"]
    env["AWS_LAMBDA_FUNCTION_TIMEOUT"] = str(function_timeout)
    with tempfile.TemporaryDirectory() as folder:
        log = Path(folder) / "rie.log"
        with log.open("wb") as sink:
            process = subprocess.Popen(
                [
                    str(emulator_binary()),
                    # Never the emulator's default of 0.0.0.0:8080: loopback only.
                    "--runtime-interface-emulator-address",
                    f"127.0.0.1:{port}",
                    "--runtime-api-address",
                    f"127.0.0.1:{api_port}",
                    str(WRAPPER),
                    "/var/runtime/bootstrap",
                ],
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        try:
            emulator = Emulator(f"http://127.0.0.1:{port}", log)
            deadline = time.monotonic() + 15
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    httpx.get(emulator.url, timeout=1)
                    break
                assert process.poll() is None and time.monotonic() < deadline, emulator.output()
                time.sleep(0.05)
            yield emulator
        finally:
            stop_process(process)


@pytest.fixture(scope="module")
def upstream() -> Iterator[RunningServer]:
    with serve_in_thread(RecordingUpstream()) as server:
        yield server


@pytest.fixture(scope="module")
def emulator(upstream: RunningServer) -> Iterator[Emulator]:
    with running_emulator(proxy_env(upstream.url), function_timeout=2) as running:
        yield running


def chat(**headers: str) -> dict[str, object]:
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    extra = [(name.replace("_", "-"), value) for name, value in headers.items()]
    return function_url(
        HttpRequest(
            "POST",
            "/v1/chat/completions",
            headers=[
                ("authorization", f"Bearer {FAKE_TOKEN}"),
                ("content-type", "application/json"),
                *extra,
            ],
            body=json.dumps(body).encode(),
        )
    )


def test_health_reply_is_prelude_delimiter_body(emulator: Emulator) -> None:
    prelude, body = emulator.invoke(function_url(HttpRequest("GET", "/health")))
    assert prelude["statusCode"] == 200
    assert prelude["headers"]["content-type"] == "application/json"  # type: ignore[index]
    assert json.loads(body) == {"status": "ok", "version": __version__}


def test_sse_stream_is_complete(emulator: Emulator) -> None:
    prelude, body = emulator.invoke(chat())
    assert prelude["statusCode"] == 200
    assert prelude["headers"]["content-type"].startswith("text/event-stream")  # type: ignore[index]
    events = [e for e in body.decode().split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    assert len(events) == 8 + 3


def test_a_rest_api_stream_event_is_answered_in_the_same_protocol(emulator: Emulator) -> None:
    """A REST API STREAM integration's proxy (v1) event through AWS's own emulator."""
    body = json.dumps({"model": "m", "stream": True, "messages": []}).encode()
    request = HttpRequest(
        "POST",
        "/v1/chat/completions",
        headers=[("Authorization", f"Bearer {FAKE_TOKEN}"), ("Content-Type", "application/json")],
        body=body,
    )
    prelude, reply = emulator.invoke(api_gateway_v1(request, stage="prod"))
    assert prelude["statusCode"] == 200
    assert prelude["headers"]["content-type"].startswith("text/event-stream")  # type: ignore[index]
    assert "multiValueHeaders" in prelude
    assert reply.decode().rstrip().endswith("data: [DONE]")


def test_mid_stream_failure_keeps_what_was_sent_and_the_instance(emulator: Emulator) -> None:
    prelude, body = emulator.invoke(chat(x_break_after="2"))
    assert prelude["statusCode"] == 200
    assert body == b'data: {"n":0}\n\ndata: {"n":1}\n\n'
    assert emulator.invoke(function_url(HttpRequest("GET", "/health")))[0]["statusCode"] == 200


def test_deadline_is_honoured_without_a_sandbox_reset(emulator: Emulator) -> None:
    started = time.monotonic()
    prelude, body = emulator.invoke(chat(x_mock_chunks="40", x_mock_delay_ms="100"))
    took = time.monotonic() - started
    assert took < 2.0, took  # the function's timeout is 2 s: we ended it first
    assert prelude["statusCode"] == 200
    assert 3 <= body.count(b"data: ") < 40
    assert emulator.invoke(function_url(HttpRequest("GET", "/health")))[0]["statusCode"] == 200
    log = emulator.output()
    assert log.count("INIT START") == 1, log[-2000:]  # one cold start for every invocation
    assert "Task timed out" not in log and "SandboxTimedout" not in log


def test_init_error_reaches_the_emulator(tmp_path: Path, upstream: RunningServer) -> None:
    (tmp_path / "httpx.py").write_text("raise ImportError('httpx is not in the package')\n")
    env = {**proxy_env(upstream.url), "PYTHONPATH": str(tmp_path)}
    with running_emulator(env) as broken:
        reply = httpx.post(broken.url + INVOKE_PATH, json=function_url(HttpRequest()), timeout=30)
        log = broken.output()
    # Lambda answers the invoker with the document the runtime posted to /init/error.
    assert reply.status_code == 502, log[-2000:]
    assert reply.json()["errorType"] == "Runtime.InitError"
    assert "ImportError" in reply.json()["errorMessage"]
