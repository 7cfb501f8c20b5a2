"""Shared pieces for benchmarks: processes on loopback, wrk runs, small statistics.

Every figure is measured beside a baseline in the same run (this machine is noisy), and
every process started here is stopped before the benchmark returns.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx

PYTHON = sys.executable
ROOT = Path(__file__).resolve().parent.parent
BENCH_TOKEN = "bench-token-0123456789abcdef"
BENCH_KEY = "sk-mock-upstream-key-not-real"
CHAT_BODY = '{"model":"mock-model","messages":[{"role":"user","content":"hi"}]}'


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def process(
    args: list[str], env: Mapping[str, str], ready_url: str, cwd: Path = ROOT
) -> Iterator[subprocess.Popen[bytes]]:
    # stderr to a file, not a pipe: a chatty server would block on a full pipe.
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        args, env={**os.environ, **env}, cwd=cwd, stdout=subprocess.DEVNULL, stderr=log
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"{args} exited: {log.read().decode()[-2000:]}")
            try:
                httpx.get(ready_url, timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{args} did not start") from None
                time.sleep(0.05)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@contextlib.contextmanager
def mock_upstream(delay_ms: float = 0) -> Iterator[str]:
    port = free_port()
    args = [
        PYTHON,
        "-m",
        "core.cli",
        "mock-upstream",
        "--port",
        str(port),
        "--delay-ms",
        str(delay_ms),
    ]
    url = f"http://127.0.0.1:{port}"
    with process(args, {}, f"{url}/_mock/requests"):
        yield url


def proxy_env(upstream: str, **extra: str) -> dict[str, str]:
    return {
        "UPSTREAM_BASE_URL": f"{upstream}/v1",
        "UPSTREAM_API_KEY": BENCH_KEY,
        "PROXY_ACCESS_TOKEN": BENCH_TOKEN,
        "ACCESS_LOG": "false",
        **extra,
    }


@contextlib.contextmanager
def proxy_server(upstream: str, **extra: str) -> Iterator[tuple[str, int]]:
    """The proxy as `llm-proxy serve` would run it; yields (url, pid)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = [PYTHON, "-m", "core.cli", "serve", "--port", str(port)]
    with process(args, proxy_env(upstream, **extra), f"{url}/health") as proc:
        yield url, proc.pid


@contextlib.contextmanager
def naive_proxy(upstream: str) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with process(
        [PYTHON, "-m", "bench.naive_proxy", str(port)], {"UPSTREAM": upstream}, f"{url}/health"
    ):
        yield url


def need_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise SystemExit("bench needs wrk (Debian package 'wrk'); `make bench` installs it")
    return path


def _wrk_script(body: str) -> str:
    handle = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
    handle.write(
        'wrk.method = "POST"\n'
        f"wrk.body = '{body}'\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {BENCH_TOKEN}"\n'
    )
    handle.close()
    return handle.name


def wrk(url: str, connections: int, seconds: float) -> dict[str, float]:
    """Requests/s and latency percentiles (ms) of a POST of a small chat request."""
    script = _wrk_script(CHAT_BODY)
    try:
        out = subprocess.run(
            [
                need_wrk(),
                "-t1",
                f"-c{connections}",
                f"-d{seconds}s",
                "--latency",
                "-s",
                script,
                url,
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=seconds + 30,
        ).stdout
    finally:
        os.unlink(script)
    if "Non-2xx" in out:
        raise RuntimeError(f"wrk saw errors:\n{out}")
    result = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}  # type: ignore[union-attr]
    for pct in ("50", "90", "99"):
        match = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)", out, re.M)
        if match:
            value, unit = float(match.group(1)), match.group(2)
            result[f"p{pct}_ms"] = (
                value / 1000 if unit == "us" else value * 1000 if unit == "s" else value
            )
    return result


def callgrind_instructions(command: list[str], cwd: Path, env: Mapping[str, str]) -> int:
    """The instructions `command` executes under valgrind's callgrind, with the same hashes
    every run (dict and set layouts, and with them the count)."""
    done = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *command],
        cwd=cwd,
        env={**env, "PYTHONHASHSEED": "0"},
        capture_output=True,
        text=True,
        check=False,
    )
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode or found is None:
        raise RuntimeError(f"callgrind failed in {cwd}: {done.stderr[-1500:]}")
    return int(found.group(1))


def median(values: list[float]) -> float:
    return statistics.median(values)


def rss_kib(pid: int) -> dict[str, int]:
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(rest.split()[0])
    return fields


def row(name: str, value: str, target: str = "", ok: bool | None = None) -> str:
    verdict = "" if ok is None else ("met" if ok else "MISSED")
    return f"  {name:<52} {value:>26}   {target:<18} {verdict}"
