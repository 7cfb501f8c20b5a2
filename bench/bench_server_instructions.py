"""The whole server's instructions per relayed event, beside the bare relay (issue 18).

bench/bench_instructions.py counts the app alone, in-process, with the upstream answering
from memory: it leaves out the upstream client (aiohttp's request and reply), the sockets,
the server and the collector. Here each server runs as the streams bench runs it
(`llm-proxy serve`, bench/bare_relay.py), under valgrind's callgrind with counting off until
it is warm; then a fixed load goes through it (connections each asking for streams one
after another, from outside valgrind) and the instructions it executed are divided by the
events it relayed. The same load and the same code give the same count whatever else the
machine does, so the ratio against the bare relay is the proxy's whole cost, repeatably.

Callgrind runs the server about fifty times slower, so the mock upstream waits 150 ms
between events (each event still travels on its own, as at 25 ms without valgrind) and a
few streams run at once. Fewer streams in one loop turn mean more of the loop's fixed cost
per event than at 500 streams: the figures are of the servers' own work, comparable with
each other, not with the streams bench's microseconds. About three minutes; needs valgrind
(`make bench-tools`).

A second load of longer streams (240 events) splits each figure in two: what a request
costs once (its head, the checks, the upstream call, settling) and what each further event
costs. A ratio at 40 events is mostly the first, at 240 mostly the second.

`python -m bench server_instructions`; BENCH_SERVER_INSTRUCTIONS_TARGETS="bare relay,proxy"
takes only those; BENCH_SERVER_INSTRUCTIONS_LONG=0 skips the longer streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx

from bench.harness import BENCH_TOKEN, PYTHON, ROOT, free_port, process, proxy_env, row

TARGETS = tuple(
    os.environ.get("BENCH_SERVER_INSTRUCTIONS_TARGETS", "bare relay,proxy,metered").split(",")
)
DELAY_MS = 150
WORDS = 37  # the mock's role event, 37 words, a stop event and [DONE]: 40 events
LONG_WORDS = 237  # 240 events
LONG = os.environ.get("BENCH_SERVER_INSTRUCTIONS_LONG", "1") != "0"
CONNECTIONS = 8
STREAMS_EACH = 3
BODY = b'{"model":"mock-model","stream":true,"messages":[{"role":"user","content":"hi"}]}'


@contextlib.contextmanager
def mock_upstream(words: int = WORDS) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = [PYTHON, "-m", "core.cli", "mock-upstream", "--port", str(port)]
    args += ["--chunks", str(words), "--delay-ms", str(DELAY_MS)]
    with process(args, {}, f"{url}/_mock/requests"):
        yield url


@contextlib.contextmanager
def under_callgrind(name: str, upstream: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    port = free_port()
    if name == "bare relay":
        command = ["-m", "bench.bare_relay", str(port)]
        env = {"UPSTREAM": upstream}
    else:
        command = ["-m", "core.cli", "serve", "--port", str(port)]
        extra = {"RATE_LIMIT_TOKENS": "1000000000000"} if name == "metered" else {}
        env = proxy_env(upstream, **extra)
    args = ["valgrind", "--tool=callgrind", "--instr-atstart=no"]
    args += ["--callgrind-out-file=/dev/null", PYTHON, *command]
    # The same hashes every run: dict and set layouts, and with them the counts.
    environment = {**os.environ, **env, "PYTHONHASHSEED": "0"}
    with tempfile.TemporaryFile(mode="w+") as log:
        proc = subprocess.Popen(
            args, env=environment, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log, text=True
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 300
            while True:
                if proc.poll() is not None:
                    log.seek(0)
                    raise RuntimeError(f"{name} exited: {log.read()[-2000:]}")
                try:
                    httpx.get(f"{url}/health", timeout=5)
                    break
                except httpx.HTTPError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{name} did not start under valgrind") from None
                    time.sleep(0.5)
            yield url, proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=120)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            log.seek(0)
            proc.stderr_text = log.read()  # type: ignore[attr-defined]


async def load(url: str, connections: int, streams_each: int) -> int:
    """Streams through `url`; the events relayed."""
    headers = {"authorization": f"Bearer {BENCH_TOKEN}", "content-type": "application/json"}
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    events = 0
    async with httpx.AsyncClient(limits=limits, timeout=120) as client:

        async def one_connection() -> None:
            nonlocal events
            for _ in range(streams_each):
                async with client.stream(
                    "POST", f"{url}/v1/chat/completions", content=BODY, headers=headers
                ) as response:
                    body = b"".join([chunk async for chunk in response.aiter_raw()])
                if response.status_code != 200:
                    raise RuntimeError(f"{response.status_code}: {body[:300]!r}")
                events += body.count(b"\n\n")

        await asyncio.gather(*(one_connection() for _ in range(connections)))
    return events


def callgrind_control(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, capture_output=True)


def measure(name: str, words: int = WORDS) -> tuple[float, int]:
    """Instructions per relayed event, and the events counted."""
    with mock_upstream(words) as upstream, under_callgrind(name, upstream) as (url, proc):
        asyncio.run(load(url, CONNECTIONS, 1))  # warm: imports, pools, caches
        callgrind_control(proc.pid, "--instr=on")
        events = asyncio.run(load(url, CONNECTIONS, STREAMS_EACH))
        callgrind_control(proc.pid, "--instr=off")
    found = re.search(r"Collected : (\d+)", proc.stderr_text)  # type: ignore[attr-defined]
    if found is None:
        raise RuntimeError(f"no count from callgrind for {name}: {proc.stderr_text[-1500:]}")  # type: ignore[attr-defined]
    return int(found.group(1)) / events, events


def run() -> list[str]:
    if shutil.which("valgrind") is None:
        return ["server instructions skipped: valgrind is not installed (`make bench-tools`)"]
    with ThreadPoolExecutor(max_workers=2) as pool:  # two cores: two valgrinds at once
        figures = dict(zip(TARGETS, pool.map(measure, TARGETS), strict=True))
        long = (
            dict(zip(TARGETS, pool.map(measure, TARGETS, [LONG_WORDS] * len(TARGETS)), strict=True))
            if LONG
            else {}
        )
    lines = [
        f"whole-server instructions under callgrind, {CONNECTIONS} connections x {STREAMS_EACH}"
        f" streams of {WORDS + 3} events ({DELAY_MS} ms apart); repeatable on a busy machine"
    ]
    lines += _rows(figures, f"{WORDS + 3}-event streams")
    if long:
        lines += _rows(long, f"{LONG_WORDS + 3}-event streams")
        lines += _split(figures, long)
    return lines


def _rows(figures: dict[str, tuple[float, int]], streams: str) -> list[str]:
    floor = figures.get("bare relay", (0.0, 0))[0]
    lines = []
    for name, (per_event, events) in figures.items():
        ratio = f", {per_event / floor:.3f}x the bare relay" if floor else ""
        lines.append(
            row(
                f"instructions an event, {name}, {streams}",
                f"{per_event:,.0f}{ratio} ({events} events)",
            )
        )
    return lines


def _split(short: dict[str, tuple[float, int]], long: dict[str, tuple[float, int]]) -> list[str]:
    """Each target's cost as a request's own and each event's, from the two lengths:
    per_event(n) = fixed / n + marginal, at n = 40 and n = 240."""
    n_short, n_long = WORDS + 3, LONG_WORDS + 3
    parts = {}
    for name in short:
        a, b = short[name][0], long[name][0]
        fixed = (a - b) / (1 / n_short - 1 / n_long)
        parts[name] = (fixed, a - fixed / n_short)
    floor = parts.get("bare relay")
    lines = []
    for name, (fixed, marginal) in parts.items():
        ratio = f", {marginal / floor[1]:.3f}x the bare relay's" if floor else ""
        extra = f"; {fixed - floor[0]:+,.0f} on the bare relay's" if floor else ""
        lines.append(
            row(
                f"split, {name}",
                f"a request's own {fixed:,.0f}{extra}; each further event {marginal:,.0f}{ratio}",
            )
        )
    return lines


if __name__ == "__main__":
    for line in run():
        print(line)
