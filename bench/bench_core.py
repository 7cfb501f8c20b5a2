"""Core proxy benchmarks (issue 2): overhead, throughput, streaming, cold start, memory.

Each figure is printed beside its baseline from the same run: the mock upstream called
directly, or a bare Python process.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx

from bench.harness import (
    BENCH_TOKEN,
    PYTHON,
    ROOT,
    callgrind_instructions,
    median,
    mock_upstream,
    naive_proxy,
    proxy_env,
    proxy_server,
    row,
    rss_kib,
    wrk,
)

AUTH = {"Authorization": f"Bearer {BENCH_TOKEN}", "content-type": "application/json"}
STREAM_BODY = b'{"model":"mock-model","stream":true,"messages":[{"role":"user","content":"hi"}]}'


def throughput_and_latency(rounds: int = 3) -> list[str]:
    lines = []
    with mock_upstream() as upstream, proxy_server(upstream) as (proxy, _):
        direct_url = f"{upstream}/v1/chat/completions"
        proxy_url = f"{proxy}/v1/chat/completions"
        wrk(proxy_url, 32, 1)  # warm the pool
        direct_rps, proxied_rps, direct_p50, proxied_p50 = [], [], [], []
        for _ in range(rounds):  # alternate, so drift in machine load hits both sides
            direct_rps.append(wrk(direct_url, 32, 4)["rps"])
            proxied_rps.append(wrk(proxy_url, 32, 4)["rps"])
            direct_p50.append(wrk(direct_url, 1, 3)["p50_ms"])
            proxied_p50.append(wrk(proxy_url, 1, 3)["p50_ms"])
        d, p = median(direct_rps), median(proxied_rps)
        added = median(proxied_p50) - median(direct_p50)
        lines.append(
            row(
                "latency p50, 1 conn: direct / via proxy",
                f"{median(direct_p50):.3f} / {median(proxied_p50):.3f} ms",
            )
        )
        lines.append(row("added latency p50, 1 conn", f"{added:.3f} ms", "<= 1 ms", added <= 1.0))
        lines.append(row("throughput, 32 conns: direct / via proxy", f"{d:,.0f} / {p:,.0f} req/s"))
        lines.append(
            row(
                "proxy throughput as share of direct",
                f"{100 * p / d:.1f} %",
                ">= 25 %",
                p / d >= 0.25,
            )
        )
    for label, extra in (
        ("via proxy, access log on (stderr to a file)", {"ACCESS_LOG": "true"}),
        ("via proxy, --workers 2", {"WORKERS": "2"}),
        ("via proxy, httpx's own transport", {"UPSTREAM_TRANSPORT": "httpx"}),
    ):
        with mock_upstream() as upstream, proxy_server(upstream, **extra) as (proxy, _):
            wrk(f"{proxy}/v1/chat/completions", 32, 1)
            rps = median([wrk(f"{proxy}/v1/chat/completions", 32, 4)["rps"] for _ in range(rounds)])
            lines.append(row(label, f"{rps:,.0f} req/s"))
    with mock_upstream() as upstream, naive_proxy(upstream) as naive:
        wrk(f"{naive}/v1/chat/completions", 32, 1)
        rps = median([wrk(f"{naive}/v1/chat/completions", 32, 4)["rps"] for _ in range(rounds)])
        lines.append(row("baseline: naive Starlette + httpx proxy", f"{rps:,.0f} req/s"))
    return lines


def _first_byte_s(client: httpx.Client, url: str, headers: dict[str, str]) -> float:
    started = time.perf_counter()
    with client.stream("POST", url, content=STREAM_BODY, headers=headers) as response:
        next(response.iter_raw())
        return time.perf_counter() - started


def streaming(samples: int = 100) -> list[str]:
    lines = []
    with mock_upstream() as upstream, proxy_server(upstream) as (proxy, _):
        headers = {**AUTH, "x-mock-chunks": "1"}
        with httpx.Client(timeout=30) as client:
            for url in (upstream, proxy):
                _first_byte_s(client, f"{url}/v1/chat/completions", headers)
            direct, proxied = [], []
            for _ in range(samples):
                direct.append(_first_byte_s(client, f"{upstream}/v1/chat/completions", headers))
                proxied.append(_first_byte_s(client, f"{proxy}/v1/chat/completions", headers))
            added_ms = (median(proxied) - median(direct)) * 1000
            lines.append(
                row(
                    "time to first byte: direct / via proxy",
                    f"{median(direct) * 1000:.2f} / {median(proxied) * 1000:.2f} ms",
                )
            )
            lines.append(
                row("added time to first byte", f"{added_ms:.2f} ms", "<= 2 ms", added_ms <= 2)
            )

            gap_headers = {**AUTH, "x-mock-chunks": "100", "x-mock-delay-ms": "20"}
            arrivals: list[float] = []
            with client.stream(
                "POST", f"{proxy}/v1/chat/completions", content=STREAM_BODY, headers=gap_headers
            ) as response:
                for line in response.iter_lines():
                    if line.startswith("data:"):
                        arrivals.append(time.perf_counter())
    gaps = [(b - a) * 1000 for a, b in itertools.pairwise(arrivals[1:])]
    gaps.sort()
    p50, p5, p95 = gaps[len(gaps) // 2], gaps[len(gaps) // 20], gaps[len(gaps) * 19 // 20]
    lines.append(
        row(
            "100 chunks sent 20 ms apart: gaps p5/p50/p95",
            f"{p5:.1f} / {p50:.1f} / {p95:.1f} ms",
            "~20 ms",
            15 <= p50 <= 25 and p5 > 5,
        )
    )
    return lines


def _wall_s(
    code: str, env: dict[str, str], runs: int, python: str = PYTHON, cwd: Path = ROOT
) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(
            [python, "-c", code],
            env={**os.environ, **env},
            cwd=cwd,
            check=True,
            stderr=subprocess.DEVNULL,  # the package has no prometheus_client: one warning a run
        )
        times.append(time.perf_counter() - started)
    return median(times)


def cold_start(runs: int = 10) -> list[str]:
    env = proxy_env("http://127.0.0.1:9")
    bare = _wall_s("pass", env, runs)
    handler = _wall_s("import handlers.http", env, runs)
    # In the dev venv the app is a server's (aiohttp installed: its client, which builds its
    # TLS contexts at import, is most of the figure above), and httpx imports its command
    # line (click, rich, pygments) whenever they are installed. A function's deploy package
    # has none of them: the figure functions get is measured there too, below.
    httpx_alone = _wall_s("import httpx", env, runs)
    first = _wall_s(
        "import asyncio, handlers.http as h\n"
        "async def go():\n"
        "    sent = []\n"
        "    async def receive(): return {'type': 'http.request', 'body': b''}\n"
        "    async def send(m): sent.append(m)\n"
        "    scope = {'type': 'http', 'method': 'GET', 'path': '/health', 'headers': [], 'query_string': b''}\n"
        "    await h.app(scope, receive, send)\n"
        "asyncio.run(go())",
        env,
        runs,
    )
    lines = [
        row("bare python process", f"{bare * 1000:.0f} ms"),
        row(
            "import handlers.http + build app (process wall, dev venv)",
            f"{handler * 1000:.0f} ms",
            "<= 250 ms",
            handler <= 0.25,
        ),
        row("... of which import httpx alone (dev venv)", f"{httpx_alone * 1000:.0f} ms"),
        row("... and answer one request in-process", f"{first * 1000:.0f} ms"),
    ]
    from bench.bench_lambda import lambda_package

    # BENCH_COLD_START_BEFORE=<another checkout>: its package is built too and measured in
    # turn with this one, so the two figures share the machine's state (issue 18).
    before_root = os.environ.get("BENCH_COLD_START_BEFORE")
    with contextlib.ExitStack() as stack:
        package = stack.enter_context(lambda_package())
        if package is None:
            return [*lines, row("... from the sam build package", "not measured (no python3.12)")]
        python_bin, task = package
        python = str(Path(python_bin) / "python3")
        tasks = [task]
        if before_root:
            before = stack.enter_context(lambda_package(Path(before_root)))
            if before is not None:
                tasks.append(before[1])
        packaged_bare = _wall_s("pass", env, runs, python, task)
        packaged, *before_figure = _walls_in_turn("import handlers.http", env, runs, python, tasks)
        counted = _cold_start_instructions(env, python, tasks)
    lines += [
        row("bare python3.12 process (no packages)", f"{packaged_bare * 1000:.0f} ms"),
        row(
            "import handlers.http + build app, sam build package (what ships)",
            f"{packaged * 1000:.0f} ms",
            "<= 150 ms",
            packaged <= 0.15,
        ),
    ]
    if before_figure:
        lines.append(
            row(
                f"... the same from {Path(before_root or '').name}, measured in turn",
                f"{before_figure[0] * 1000:.0f} ms ({packaged / before_figure[0]:.2f}x)",
                "no worse",
                packaged <= before_figure[0] * 1.02,
            )
        )
    return lines + counted


# What a function's cold start imports whatever the proxy's own code does: the event loop,
# the upstream client and the standard library modules both pull in.
_FLOOR = "import asyncio, httpx, json, logging, hmac, urllib.parse, zlib"


def _cold_start_instructions(env: dict[str, str], python: str, tasks: list[Path]) -> list[str]:
    """The same cold starts counted in instructions (valgrind's callgrind): this machine's
    speed moves by a third from one minute to the next, and a median of wall times moves
    with it; the count does not. Beside it, the floor no change to the proxy can go under.
    Nothing when valgrind is missing (`make bench-tools`)."""
    if shutil.which("valgrind") is None:
        return [row("cold start in instructions", "not measured (no valgrind)")]
    now, *before = (_instructions("import handlers.http", env, python, task) for task in tasks)
    floor = _instructions(_FLOOR, env, python, tasks[0])
    lines = [
        row(
            "import handlers.http + build app, sam build package, instructions",
            f"{now / 1e6:.1f}M ({(now - floor) / 1e6:.1f}M over the floor)",
        ),
        row("... the floor: asyncio, httpx and the stdlib they use", f"{floor / 1e6:.1f}M"),
    ]
    if before:
        lines.append(
            row(
                "... the same from before, instructions",
                f"{before[0] / 1e6:.1f}M ({now / before[0]:.3f}x)",
                "no worse",
                now <= before[0] * 1.02,
            )
        )
    return lines


def _instructions(code: str, env: dict[str, str], python: str, cwd: Path) -> int:
    return callgrind_instructions([python, "-c", code], cwd, {**os.environ, **env})


def _walls_in_turn(
    code: str, env: dict[str, str], runs: int, python: str, roots: list[Path]
) -> list[float]:
    """The median wall time of `code` run in each of `roots`, the roots taking turns."""
    times: list[list[float]] = [[] for _ in roots]
    for _ in range(runs):
        for root, kept in zip(roots, times, strict=True):
            kept.append(_wall_s(code, env, 1, python, root))
    return [median(kept) for kept in times]


def memory(total_mb: int = 200) -> list[str]:
    with mock_upstream() as upstream, proxy_server(upstream) as (proxy, pid):
        before = rss_kib(pid)
        size = total_mb * 1024 * 1024
        received = 0
        started = time.perf_counter()
        with httpx.stream(
            "GET", f"{proxy}/v1/bytes?n={size}&chunk=65536", headers=AUTH, timeout=120
        ) as response:
            for chunk in response.iter_raw():
                received += len(chunk)
        elapsed = time.perf_counter() - started
        after = rss_kib(pid)
    grew_mb = (after["VmHWM"] - before["VmRSS"]) / 1024
    return [
        row(
            f"{total_mb} MB streamed through the proxy",
            f"{received / 2**20:.0f} MB in {elapsed:.1f} s",
        ),
        row(
            "proxy RSS before / peak during",
            f"{before['VmRSS'] / 1024:.0f} / {after['VmHWM'] / 1024:.0f} MB",
            "flat (< +32 MB)",
            grew_mb < 32,
        ),
    ]


def run() -> list[str]:
    lines = ["core proxy (issue 2)"]
    for section in (throughput_and_latency, streaming, cold_start, memory):
        lines.extend(section())
    return lines
