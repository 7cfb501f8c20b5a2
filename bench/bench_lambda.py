"""AWS Lambda benchmarks (issue 3): cold start of the streaming entry beside the Mangum
handler's import, and the warm per-invocation overhead of the streaming runtime over the
core app alone.

- Cold start: a fresh process from exec of the wrapper to its first `GET /next` on a
  loopback Runtime API (no secret configured, so no boto3). Measured twice: in this venv,
  and as Lambda runs it, from the package `sam build` makes (tools/lambda/requirements.txt
  plus core/ and handlers/) on a Python 3.12 that has nothing installed.
- Warm overhead: the same chat completion (mock upstream, its own process) handled by the
  core app called in-process, and by the runtime process answering Runtime API
  invocations; p50 of each and the difference.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.harness import BENCH_TOKEN, PYTHON, ROOT, median, mock_upstream, proxy_env, row
from tests.support import lambda_events as events

# The test suite's fake Runtime API and Lambda event shapes.
from tests.support import lambda_runtime_api as fake

WRAPPER = ROOT / "handlers" / "aws" / "exec_wrapper"
CHAT = {"model": "mock-model", "messages": [{"role": "user", "content": "hi"}]}


def chat_event() -> dict[str, Any]:
    request = events.HttpRequest(
        "POST",
        "/v1/chat/completions",
        headers=[("authorization", f"Bearer {BENCH_TOKEN}"), ("content-type", "application/json")],
        body=json.dumps(CHAT).encode(),
    )
    return dict(events.function_url(request))


def _env(api_address: str, python_bin: str, task_root: Path, upstream: str) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("UPSTREAM_", "PROXY_"))},
        "PATH": f"{python_bin}:/usr/bin:/bin",
        "AWS_LAMBDA_RUNTIME_API": api_address,
        "LAMBDA_TASK_ROOT": str(task_root),
        **proxy_env(upstream),
    }


@contextlib.contextmanager
def runtime(api: Any, python_bin: str, task_root: Path, upstream: str) -> Iterator[float]:
    """Start the wrapper from `task_root`; yields seconds from exec to the first GET /next."""
    started = time.monotonic()
    proc = subprocess.Popen(
        [str(task_root / "handlers" / "aws" / "exec_wrapper"), "/var/runtime/bootstrap"],
        env=_env(api.address, python_bin, task_root, upstream),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while api.first_next_at is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the streaming runtime did not start")
            time.sleep(0.001)
        yield api.first_next_at - started
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def cold_start_s(python_bin: str, task_root: Path, runs: int) -> float:
    times = []
    for _ in range(runs):
        with (
            fake.fake_runtime_api() as api,
            runtime(api, python_bin, task_root, "http://127.0.0.1:9") as took,
        ):
            times.append(took)
    return median(times)


def _wall_s(code: str, runs: int, python: str = PYTHON, cwd: Path = ROOT) -> float:
    env = {**os.environ, **proxy_env("http://127.0.0.1:9")}
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([python, "-c", code], env=env, cwd=cwd, check=True)
        times.append(time.perf_counter() - started)
    return median(times)


@contextlib.contextmanager
def lambda_package(root: Path = ROOT) -> Iterator[tuple[str, Path] | None]:
    """(bin dir of a bare Python 3.12, task root built by `sam build`'s make target in the
    checkout `root`), or None when there is no python3.12 here. The bench's own environment
    may forbid writing bytecode (PYTHONDONTWRITEBYTECODE), as Lambda's read-only /var/task
    does."""
    python312 = shutil.which("python3.12")
    if python312 is None:
        yield None
        return
    with tempfile.TemporaryDirectory() as folder:
        task = Path(folder) / "task"
        built = subprocess.run(
            ["make", "-s", "build-StreamFunction", f"ARTIFACTS_DIR={task}", f"PYTHON={PYTHON}"],
            cwd=root,
            capture_output=True,
            check=False,
        )
        if built.returncode != 0:
            yield None
            return
        venv = Path(folder) / "py"
        subprocess.run([python312, "-m", "venv", "--without-pip", str(venv)], check=True)
        yield str(venv / "bin"), task


def cold_start(runs: int = 10) -> list[str]:
    venv_bin = str(Path(PYTHON).parent)
    bare = _wall_s("pass", runs)
    mangum = _wall_s("import handlers.aws.buffered", runs)
    stream = cold_start_s(venv_bin, ROOT, runs)
    lines = [
        row("bare python process (venv)", f"{bare * 1000:.0f} ms"),
        row("Mangum handler: import handlers.aws.buffered (wall)", f"{mangum * 1000:.0f} ms"),
        row(
            "streaming entry: exec -> first GET /next (venv)",
            f"{stream * 1000:.0f} ms",
            "<= 300 ms",
            stream <= 0.3,
        ),
    ]
    with lambda_package() as package:
        if package is None:
            lines.append(
                row(
                    "... from the Lambda package on bare python3.12", "not measured (no python3.12)"
                )
            )
            return lines
        python_bin, task = package
        python = str(Path(python_bin) / "python3")
        with_pyc = cold_start_s(python_bin, task, runs)
        mangum_pyc = _wall_s("import handlers.aws.buffered", runs, python, task)
        for cache in list(task.rglob("__pycache__")):
            shutil.rmtree(cache)  # as serverless-python-requirements (slim) ships it
        without_pyc = cold_start_s(python_bin, task, runs)
        mangum_plain = _wall_s("import handlers.aws.buffered", runs, python, task)
    lines += [
        row(
            "streaming entry, sam build package (pyc), python3.12",
            f"{with_pyc * 1000:.0f} ms",
            "<= 300 ms",
            with_pyc <= 0.3,
        ),
        row("Mangum handler import, same package", f"{mangum_pyc * 1000:.0f} ms"),
        row(
            "streaming entry, package without pyc, python3.12",
            f"{without_pyc * 1000:.0f} ms",
            "<= 300 ms",
            without_pyc <= 0.3,
        ),
        row("Mangum handler import, same package", f"{mangum_plain * 1000:.0f} ms"),
    ]
    return lines


def app_alone_p50_ms(upstream: str, samples: int) -> float:
    """The core app called in-process, as the runtime calls it, in a fresh process."""
    code = f"""
import asyncio, json, statistics, time, sys
from handlers.aws.secrets import create_app_with_secrets
app = create_app_with_secrets()
body = {json.dumps(json.dumps(CHAT))}.encode()
scope = {{"type": "http", "asgi": {{"version": "3.0"}}, "http_version": "1.1", "method": "POST",
    "scheme": "https", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
    "query_string": b"", "root_path": "", "client": ("203.0.113.7", 0), "server": ("x", 443),
    "headers": [(b"authorization", b"Bearer {BENCH_TOKEN}"), (b"content-type", b"application/json")]}}
async def once():
    done = asyncio.Event()
    sent = [{{"type": "http.request", "body": body, "more_body": False}}]
    async def receive():
        if sent: return sent.pop()
        await done.wait(); return {{"type": "http.disconnect"}}
    async def send(message):
        if message["type"] == "http.response.body" and not message.get("more_body"): done.set()
    started = time.perf_counter()
    await app(dict(scope), receive, send)
    return time.perf_counter() - started
async def main():
    times = [await once() for _ in range({samples + 20})][20:]
    print(statistics.median(times) * 1000)
asyncio.run(main())
"""
    env = {**os.environ, **proxy_env(upstream)}
    out = subprocess.run(
        [PYTHON, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip().splitlines()[-1])


def invocation_p50_ms(upstream: str, samples: int) -> float:
    venv_bin = str(Path(PYTHON).parent)
    with fake.fake_runtime_api() as api, runtime(api, venv_bin, ROOT, upstream):
        durations = []
        for index in range(samples + 20):
            reply = api.invoke(chat_event())
            if reply.status != 200:
                raise RuntimeError(f"invocation failed: {reply.body[:200]!r}")
            if index >= 20:  # the first ones open the pool and warm the caches
                durations.append((reply.finished_at - reply.sent_at) * 1000)
    return statistics.median(durations)


def warm_overhead(samples: int = 300, rounds: int = 3) -> list[str]:
    """Rounds alternate the two sides; the figure is the median round's difference."""
    alone, through = [], []
    with mock_upstream() as upstream:
        for _ in range(rounds):
            alone.append(app_alone_p50_ms(upstream, samples))
            through.append(invocation_p50_ms(upstream, samples))
    overheads = [b - a for a, b in zip(alone, through, strict=True)]
    overhead = median(overheads)
    return [
        row("chat completion, core app alone (p50)", f"{median(alone):.2f} ms"),
        row("same, as a streamed Lambda invocation (p50)", f"{median(through):.2f} ms"),
        row(
            "warm invocation overhead of the runtime (p50)",
            f"{overhead:.2f} ms",
            "<= 1 ms",
            overhead <= 1.0,
        ),
        row("... per round", ", ".join(f"{o:.2f}" for o in overheads) + " ms"),
    ]


def run() -> list[str]:
    lines = ["AWS Lambda (issue 3)"]
    for section in (cold_start, warm_overhead):
        lines.extend(section())
    return lines


if __name__ == "__main__":
    print("\n".join(run()), file=sys.stdout)
