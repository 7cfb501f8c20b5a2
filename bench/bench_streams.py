"""Many long streams at once (issue 9): the load a real LLM proxy carries.

100, 500 and 1000 keep-alive connections, each asking for one stream after another: 40 SSE
events 25 ms apart (one second a stream) from bench/sse_upstream.py, the mock upstream's chat
events from a lean server (BENCH_STREAMS_UPSTREAM=mock: the mock itself). Side by side in
one run:

- direct:      the upstream called directly (its own figures are the ceiling);
- bare relay:  bench/bare_relay.py, uvicorn + httptools + uvloop + aiohttp's ClientSession,
               forwarding the body and relaying chunks, no checks: the floor of our stack;
- proxy:       `llm-proxy serve`, one process;
- metered:     the same with a token limit on, so every stream is metered and settled;
- express:     the seed recipe's Express proxy (bench/express: express + fetch + reader loop);
- portkey:     Portkey's open-source gateway (bench/portkey, @portkey-ai/gateway pinned),
               configured per request by headers; a preload re-wraps each fetch() response
               so it streams on Node 20 (its issue #1389, "TypeError: immutable").

Each point gets a fresh upstream and a fresh server. The load generator
(bench/stream_load.py) runs in its own processes; the server under test has a core of its
own, the upstream and the load generator the others (BENCH_STREAMS_PIN=0: not pinned). Server CPU is the server process and its
children (utime + stime over the measured window); peak RSS is the server process's VmHWM.
Columns beside the figures say how far to trust them: `load CPU` and `load lag` (the load
generator's CPU in % of one core, and the p99 lag of its event loop: if that grows, the
load generator is the bottleneck), `others` (CPU everything else on the machine took meanwhile), `errors`
(non-200 answers, dropped connections, streams with the wrong number of events) and `drops`
(connections refused by a full accept queue, anywhere in this network namespace).

Lateness counts from the request, so it includes the mock's own drift: the mock sleeps 25 ms
before each event, counted from the one before, so any lag of its event loop adds up over a
stream. The `direct`
row shows that drift; what a relay adds is its row minus direct's. While a relay keeps up it
writes each event on its own; once it falls behind it reads several per chunk and writes them
at once, so its CPU per event drops: compare CPU per event only where lateness is low.

`python -m bench streams --profile` instead profiles the proxy at 500 streams with py-spy:
a flame graph in docs/proxy-streams.svg and the top functions by own time.

BENCH_STREAMS_SECONDS and BENCH_STREAMS_CONNECTIONS (e.g. "100,500") shorten a run;
BENCH_STREAMS_ROUNDS=3 takes every point three times and reports medians.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from array import array
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psutil

from bench.harness import PYTHON, ROOT, free_port, process, proxy_env, row

CONNECTIONS = tuple(
    int(n) for n in os.environ.get("BENCH_STREAMS_CONNECTIONS", "100,500,1000").split(",")
)
SECONDS = float(os.environ.get("BENCH_STREAMS_SECONDS", "8"))
ROUNDS = int(os.environ.get("BENCH_STREAMS_ROUNDS", "1"))  # figures are medians of the rounds
WARMUP = 2.0  # first requests spread over most of it, so the streams are out of phase
DELAY_MS = 25
EVENTS = int(
    os.environ.get("BENCH_STREAMS_EVENTS", "40")
)  # the mock sends a role event, `chunks` words, a stop event and [DONE]
# telemetry: the proxy exporting OpenTelemetry traces and metrics to a local sink
# (bench/otlp_sink.py).
TARGETS: tuple[str, ...] = (
    "direct",
    "bare relay",
    "proxy",
    "metered",
    "telemetry",
    "express",
    "portkey",
)
# BENCH_STREAMS_BEFORE=<a checkout of an earlier version> adds its proxy and metered proxy
# to the same run ("proxy before", "metered before"): a change's effect, side by side.
BEFORE = os.environ.get("BENCH_STREAMS_BEFORE", "")
if BEFORE:
    TARGETS = (*TARGETS[:4], "proxy before", "metered before", *TARGETS[4:])
# BENCH_STREAMS_TARGETS="direct,bare relay,proxy" takes only those.
if os.environ.get("BENCH_STREAMS_TARGETS"):
    TARGETS = tuple(
        t for t in TARGETS if t in os.environ["BENCH_STREAMS_TARGETS"].split(",") or "before" in t
    )
EXPRESS = ROOT / "bench" / "express"
PORTKEY = ROOT / "bench" / "portkey"
# The load generator's extra request headers (bench/stream_load.py), for a target that is
# configured per request: Portkey's gateway reads its provider and upstream from headers.
LOAD_HEADERS = "BENCH_LOAD_HEADERS"
DOCS = ROOT / "docs"


# The upstream every target relays: bench/sse_upstream.py, the mock's chat events at two
# thirds of the mock's CPU each, so the relay under test is less starved by its own
# upstream on a 2-core machine; BENCH_STREAMS_UPSTREAM=mock runs the full mock instead.
FULL_MOCK = os.environ.get("BENCH_STREAMS_UPSTREAM", "lean") == "mock"


@contextlib.contextmanager
def mock_upstream() -> Iterator[tuple[str, int]]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    chunks = str(EVENTS - 3)
    if FULL_MOCK:
        args = [PYTHON, "-m", "core.cli", "mock-upstream", "--port", str(port)]
        args += ["--chunks", chunks, "--delay-ms", str(DELAY_MS)]
        ready = f"{url}/_mock/requests"
    else:
        args = [PYTHON, "-m", "bench.sse_upstream", str(port), chunks, str(DELAY_MS)]
        ready = f"{url}/health"
    with process(args, {}, ready) as proc:
        favour(proc.pid)
        yield url, proc.pid


# With two cores or more, the server under test gets a core of its own and the upstream
# and the load generator share the others (BENCH_STREAMS_PIN=0: the scheduler decides).
# Unpinned on a 2-core machine they want more CPU than there is at 500 streams (upstream
# 0.7 of a core, load 0.3, relay 0.8): the relay waits for a core, falls behind, batches
# events, and its CPU per event measures the contention as much as its own work.
CPUS = sorted(os.sched_getaffinity(0))
PIN = os.environ.get("BENCH_STREAMS_PIN", "1") != "0" and len(CPUS) >= 2


def pin(pid: int, server: bool) -> None:
    """`pid` and its children on the server's core (the last one) or on the others."""
    if not PIN:
        return
    cpus = set(CPUS[-1:]) if server else set(CPUS[:-1])
    with contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError, PermissionError):
        root = psutil.Process(pid)
        for proc in [root, *root.children(recursive=True)]:
            proc.cpu_affinity(sorted(cpus))


def favour(pid: int, niceness: int = -10) -> None:
    """Run the mock upstream and the load generator ahead of the server under test: a real
    upstream and real callers do not share the proxy's cores, so their pace should not
    depend on how much CPU the server takes (needs root; otherwise a no-op)."""
    with contextlib.suppress(PermissionError, ProcessLookupError):
        os.setpriority(os.PRIO_PROCESS, pid, niceness)


def express_missing() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed"
    if not (EXPRESS / "node_modules" / "express").is_dir():
        return "bench/express has no node_modules (`make bench` runs npm ci)"
    return None


def portkey_missing() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed"
    if not (PORTKEY / "node_modules" / "@portkey-ai" / "gateway").is_dir():
        return "bench/portkey has no node_modules (`make bench-portkey`)"
    return None


@contextlib.contextmanager
def target(name: str, upstream: str, upstream_pid: int) -> Iterator[tuple[str, int]]:
    """The server under test: (its chat completions URL, its pid)."""
    if name == "direct":
        favour(upstream_pid, 0)  # the mock is the server under test: no head start
        yield f"{upstream}/v1/chat/completions", upstream_pid
        return
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {"UPSTREAM": upstream}
    ready = f"{url}/health"
    if name == "portkey":
        gateway = PORTKEY / "node_modules" / "@portkey-ai" / "gateway" / "build"
        args = [shutil.which("node") or "node", "--import", str(PORTKEY / "preload.mjs")]
        args += [str(gateway / "start-server.js"), f"--port={port}", "--headless"]
        env = {"NODE_ENV": "production"}
        headers = f"x-portkey-provider: openai\r\nx-portkey-custom-host: {upstream}/v1\r\n"
        os.environ[LOAD_HEADERS] = headers  # the load processes inherit it
        try:
            with process(args, env, f"{url}/") as proc:
                yield f"{url}/v1/chat/completions", proc.pid
        finally:
            os.environ.pop(LOAD_HEADERS, None)
        return
    if name == "bare relay":
        args = [PYTHON, "-m", "bench.bare_relay", str(port)]
    elif name == "bare relay, our server":
        args = [PYTHON, "-m", "bench.bare_relay", str(port), "--our-server"]
    elif name == "telemetry":
        with otlp_sink() as collector:
            env = proxy_env(upstream, OTEL_EXPORTER_OTLP_ENDPOINT=collector)
            args = [PYTHON, "-m", "core.cli", "serve", "--port", str(port)]
            with process(args, env, f"{url}/health") as proc:
                yield f"{url}/v1/chat/completions", proc.pid
        return
    elif name.startswith(("proxy", "metered")):
        args = [PYTHON, "-m", "core.cli", "serve", "--port", str(port)]
        # metered: a token limit no one reaches, so every stream is metered (the usage
        # option spliced in and taken back out, the meter reading each event) and settled.
        extra = {"RATE_LIMIT_TOKENS": "1000000000000"} if name.startswith("metered") else {}
        env = proxy_env(upstream, **extra)
        if name.endswith(" before"):
            with process(args, env, ready, cwd=Path(BEFORE)) as proc:
                yield f"{url}/v1/chat/completions", proc.pid
            return
    else:
        args = [shutil.which("node") or "node", str(EXPRESS / "proxy.js"), str(port)]
    with process(args, env, ready) as proc:
        yield f"{url}/v1/chat/completions", proc.pid


@contextlib.contextmanager
def otlp_sink() -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with process([PYTHON, "-m", "bench.otlp_sink", str(port)], {}, f"{url}/"):
        yield url


def cpu_seconds(pid: int) -> float:
    root = psutil.Process(pid)
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(len(values) * pct / 100))]


@contextlib.contextmanager
def loading(
    url: str, connections: int, start: float, seconds: float, out: str
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """The load generator's processes; the caller waits for them, or they are killed."""
    loaders = start_load(url, connections, start, seconds, out)
    try:
        yield loaders
    finally:
        for loader in loaders:
            if loader.poll() is None:
                loader.kill()
                loader.wait()


def start_load(
    url: str, connections: int, start: float, seconds: float, out: str
) -> list[subprocess.Popen[bytes]]:
    """The load generator's processes (two from 500 connections: one loop per core)."""
    procs = 1 if connections < 500 else 2
    shares = [connections // procs + (i < connections % procs) for i in range(procs)]
    fixed = [str(start), str(WARMUP), str(seconds), str(DELAY_MS), str(EVENTS)]
    loaders = [
        subprocess.Popen(
            [PYTHON, "-m", "bench.stream_load", url, str(share), *fixed, f"{out}.{i}"], cwd=ROOT
        )
        for i, share in enumerate(shares)
    ]
    for loader in loaders:
        favour(loader.pid)
        pin(loader.pid, server=False)
    return loaders


def machine_busy_seconds() -> float:
    """CPU time the whole machine spent busy (all processes, all cores), from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def listen_overflows() -> int:
    """Connections dropped because an accept queue was full (this network namespace)."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            counters = dict(zip(names.split(), values.split(), strict=False))
            return int(counters.get("ListenOverflows", 0))
    return 0


def measure(url: str, pid: int, upstream_pid: int, connections: int) -> dict[str, float]:
    ours = {pid, upstream_pid}
    if upstream_pid != pid:  # direct: the upstream is the server under test
        pin(upstream_pid, server=False)
    pin(pid, server=True)
    start = time.monotonic() + 0.5  # the load processes' import time
    with (
        tempfile.TemporaryDirectory() as tmp,
        loading(url, connections, start, SECONDS, f"{tmp}/load") as loaders,
    ):
        out = f"{tmp}/load"
        overflows = listen_overflows()
        time.sleep(max(0.0, start + WARMUP - time.monotonic()))
        cpu_before = cpu_seconds(pid)
        ours_before = sum(cpu_seconds(p) for p in ours)
        busy_before = machine_busy_seconds()
        time.sleep(max(0.0, start + WARMUP + SECONDS - time.monotonic()))
        cpu = cpu_seconds(pid) - cpu_before
        ours_cpu = sum(cpu_seconds(p) for p in ours) - ours_before
        busy = machine_busy_seconds() - busy_before
        rss = peak_rss_mb(pid)
        for loader in loaders:
            loader.wait(timeout=60)
        counts: Counter[str] = Counter()
        lateness, ttfb = array("f"), array("f")
        client_cpu = client_lag = 0.0
        for i in range(len(loaders)):
            figures = json.loads(Path(f"{out}.{i}.json").read_text())
            client_cpu += figures.pop("cpu_seconds")
            client_lag = max(client_lag, figures.pop("lag_p99_ms"))
            counts.update(figures)
            lateness.frombytes(Path(f"{out}.{i}.lateness").read_bytes())
            ttfb.frombytes(Path(f"{out}.{i}.ttfb").read_bytes())
        overflows = listen_overflows() - overflows
    late, first = sorted(lateness), sorted(ttfb)
    events = counts["events"]
    return {
        "events_per_s": events / SECONDS,
        "late_p50_ms": percentile(late, 50),
        "late_p99_ms": percentile(late, 99),
        "ttfb_p99_ms": percentile(first, 99),
        "cpu_us_per_event": cpu / events * 1e6 if events else float("nan"),
        "cpu_percent": 100 * cpu / SECONDS,
        "peak_rss_mb": rss,
        "client_cpu_percent": 100 * client_cpu / SECONDS,
        "client_lag_p99_ms": client_lag,
        # Everything else on the machine (other jobs), in % of one core: the noise gauge.
        "other_cpu_percent": max(0.0, 100 * (busy - ours_cpu - client_cpu) / SECONDS),
        "listen_overflows": overflows,
        "streams": counts["streams"],
        "short_streams": counts["short_streams"],
        "errors": counts["errors"],
    }


def allow_many_sockets() -> list[str]:
    """1000 streams through a relay hold 2000 sockets in it: lift the soft open-file limit
    (the servers and the load generator inherit it), or say why the figures will show errors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 16384 if hard == resource.RLIM_INFINITY else min(hard, 16384)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    needed = 2 * max(CONNECTIONS) + 100
    if wanted < needed:
        return [f"  open-file limit {wanted} < {needed}: the larger points will show errors"]
    return []


def collect() -> tuple[dict[str, dict[int, dict[str, float]]], list[str]]:
    notes = allow_many_sockets()
    results: dict[str, dict[int, dict[str, float]]] = {name: {} for name in TARGETS}
    missing = {"express": express_missing(), "portkey": portkey_missing()}
    for skipped, why in missing.items():
        if why:
            notes.append(f"  {skipped} skipped: {why}")
    rounds: dict[tuple[str, int], list[dict[str, float]]] = {}
    for _ in range(ROUNDS):  # each round takes every point once, so drift hits them all
        for connections in CONNECTIONS:
            for name in TARGETS:
                if missing.get(name):
                    continue
                with (
                    mock_upstream() as (upstream, mock_pid),
                    target(name, upstream, mock_pid) as (url, pid),
                ):
                    figures = measure(url, pid, mock_pid, connections)
                rounds.setdefault((name, connections), []).append(figures)
    for (name, connections), taken in rounds.items():
        results[name][connections] = {
            key: statistics.median(figures[key] for figures in taken) for key in taken[0]
        }
    return results, notes


def table(results: dict[str, dict[int, dict[str, float]]]) -> list[str]:
    lines = [
        f"  {'target':<11} {'conns':>5} {'events/s':>9} {'vs direct':>9} {'late p50':>9}"
        f" {'late p99':>9} {'TTFB p99':>9} {'CPU/event':>10} {'CPU':>5} {'peak RSS':>9}"
        f" {'load CPU':>8} {'load lag':>8} {'others':>6} {'errors':>6} {'drops':>5}"
    ]
    for name, points in results.items():
        for connections, r in points.items():
            direct = results.get("direct", {}).get(connections, {}).get("events_per_s") or float(
                "nan"
            )
            lines.append(
                f"  {name:<11} {connections:>5} {r['events_per_s']:>9,.0f}"
                f" {r['events_per_s'] / direct:>8.2f}x {r['late_p50_ms']:>6.1f} ms"
                f" {r['late_p99_ms']:>6.1f} ms {r['ttfb_p99_ms']:>6.1f} ms"
                f" {r['cpu_us_per_event']:>7.1f} us {r['cpu_percent']:>4.0f}%"
                f" {r['peak_rss_mb']:>6.0f} MB {r['client_cpu_percent']:>7.0f}%"
                f" {r['client_lag_p99_ms']:>5.1f} ms"
                f" {r['other_cpu_percent']:>5.0f}%"
                f" {r['errors'] + r['short_streams']:>6.0f} {r['listen_overflows']:>5.0f}"
            )
    return lines


# Issue 18's targets: CPU per event against the bare relay, at 500 streams for the verdict.
CPU_TARGETS = {"proxy": 1.15, "metered": 1.25, "proxy before": 1.15, "metered before": 1.25}


def verdicts(results: dict[str, dict[int, dict[str, float]]]) -> list[str]:
    bare, direct = results["bare relay"], results["direct"]
    proxy = results.get("proxy", {})
    lines = []
    for name, target_ratio in CPU_TARGETS.items():
        points = results.get(name, {})
        for connections in CONNECTIONS:
            if connections in points and connections in bare:
                ratio = (
                    points[connections]["cpu_us_per_event"] / bare[connections]["cpu_us_per_event"]
                )
                lines.append(
                    row(
                        f"CPU per event, {name} / bare relay, {connections} streams",
                        f"{ratio:.2f}x",
                        f"<= {target_ratio}x" if connections == 500 else "",
                        ratio <= target_ratio if connections == 500 else None,
                    )
                )
        if 500 in points and 500 in direct:
            share = points[500]["events_per_s"] / direct[500]["events_per_s"]
            lines.append(
                row(
                    f"events/s, {name} / direct, 500 streams",
                    f"{share:.2f}x",
                    ">= 0.9x",
                    share >= 0.9,
                )
            )
        if 1000 in points:
            rss = points[1000]["peak_rss_mb"]
            lines.append(
                row(f"{name} peak RSS, 1000 streams", f"{rss:.0f} MB", "<= 80 MB", rss <= 80)
            )
    proxy, metered = results.get("proxy", {}), results.get("metered", {})
    if 500 in metered and 500 in proxy:
        cost = metered[500]["cpu_us_per_event"] - proxy[500]["cpu_us_per_event"]
        lines.append(
            row("metering cost per relayed event, 500 streams", f"{cost:+.1f} us", "", None)
        )
    traced = results.get("telemetry", {})
    if 500 in traced and 500 in proxy:
        ratio = traced[500]["cpu_us_per_event"] / proxy[500]["cpu_us_per_event"]
        lines.append(
            row(
                "CPU per event, telemetry on / off, 500 streams",
                f"{ratio:.2f}x",
                "<= 1.1x",
                ratio <= 1.1,
            )
        )
    return lines


def plot(results: dict[str, dict[int, dict[str, float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (
        ("events_per_s", "events relayed per second", "events/s (higher is better)"),
        ("cpu_us_per_event", "server CPU per event", "CPU µs per event (lower is better)"),
        ("late_p99_ms", "event lateness p99", "ms behind schedule (lower is better)"),
    )
    labels = {"direct": "direct (the upstream itself)"}
    fig, axes = plt.subplots(1, len(panels), figsize=(15, 4.6))
    for ax, (key, title, label) in zip(axes, panels, strict=True):
        if key == "events_per_s":
            xs = list(CONNECTIONS)
            ax.plot(
                xs,
                [x * EVENTS / (EVENTS * DELAY_MS / 1000) for x in xs],
                linestyle=":",
                color="grey",
                label="schedule (every stream on time)",
            )
        for name, points in results.items():
            if points:
                xs = sorted(points)
                ax.plot(xs, [points[x][key] for x in xs], marker="o", label=labels.get(name, name))
        ax.set_title(title)
        ax.set_xlabel("concurrent streams (40 events, 25 ms apart)")
        ax.set_ylabel(label)
        ax.set_xticks(list(CONNECTIONS))
        if key == "late_p99_ms":
            ax.set_yscale("log")  # from tens of ms to seconds
        else:
            ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3, which="both")
    axes[0].legend()
    others = [r["other_cpu_percent"] for points in results.values() for r in points.values()]
    busy = (
        f"; other jobs on the machine took {min(others):.0f} to {max(others):.0f} % of a core"
        " meanwhile"
        if others and max(others) >= 20
        else ""
    )
    fig.suptitle(
        f"Many long streams at once: {os.cpu_count()} cores"
        f"{', the server on one of its own' if PIN else ''}, loopback, {SECONDS:g} s per point"
        f"{f', medians of {ROUNDS} rounds' if ROUNDS > 1 else ''}, {time.strftime('%Y-%m-%d')}"
        f"{busy}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run() -> list[str]:
    results, notes = collect()
    DOCS.mkdir(exist_ok=True)
    (DOCS / "streams.json").write_text(json.dumps(results, indent=1) + "\n")
    plot(results, DOCS / "streams.png")
    return [
        f"many long streams at once (issue 9): {EVENTS} events {DELAY_MS} ms apart,"
        f" keep-alive, {SECONDS:g} s per point",
        *notes,
        *table(results),
        *verdicts(results),
        "  figure: docs/streams.png (data: docs/streams.json)",
    ]


# --- profile ------------------------------------------------------------------------------

PROFILE_CONNECTIONS = int(os.environ.get("BENCH_PROFILE_CONNECTIONS", "500"))
PROFILE_SECONDS = int(os.environ.get("BENCH_PROFILE_SECONDS", "5"))
NATIVE = os.environ.get("BENCH_PROFILE_NATIVE", "1") != "0"


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(PYTHON).parent / "py-spy")
    if not Path(found).exists():
        raise SystemExit("--profile needs py-spy (pip install py-spy)")
    return found


def _frame(frame: str) -> tuple[str, str]:
    """py-spy's "function (path:line)" as (function (short path), path)."""
    match = re.match(r"(.*) \((.*?)(?::\d+)?\)$", frame)
    if not match:
        return frame, ""
    function, path = match.groups()
    short = re.sub(r".*/(site-packages|lib/python3\.\d+)/", "", path)
    short = short.removeprefix(str(ROOT) + "/")
    return f"{function} ({short})", path


# Where a frame's time belongs, by the first part of its path (py-spy's short paths) or, for
# C frames (--native), by its source file.
_PACKAGES = {
    "llm-proxy (core/)": {"core", "handlers"},
    "aiohttp client": {"aiohttp", "yarl", "multidict", "propcache", "_http_parser.c"},
    "uvicorn + httptools server": {"uvicorn", "httptools", "parser.c", "llhttp.c", "api.c"},
    "httpx API": {"httpx", "httpcore"},
    "event loop (uvloop, asyncio)": {
        "asyncio",
        "uvloop",
        "loop.c",
        "core.c",
        "stream.c",
        "uv-common.c",
        "epoll.c",
        "linux.c",
        "_asynciomodule.c",
    },
}
_BY_PART = {part: name for name, parts in _PACKAGES.items() for part in parts}
_WRITES = {"write", "writev", "send", "sendmsg", "__libc_write"}
_READS = {"read", "readv", "recv", "recvmsg", "__libc_read"}


def _category(frames: list[tuple[str, str]]) -> str:
    """What a sample was doing: a socket syscall, the garbage collector, or the package of
    the innermost frame that belongs to one."""
    leaf, leaf_path = frames[-1]
    name = leaf.split(" (")[0]
    if any(frame.startswith("gc_collect") for frame, _ in frames):
        return "CPython garbage collector"
    if leaf_path.startswith("libc") and name in _WRITES:
        to_caller = any("RequestResponseCycle.send" in frame for frame, _ in frames)
        return f"write syscall to the {'caller' if to_caller else 'upstream'}"
    if leaf_path.startswith("libc") and name in _READS:
        return "read syscall"
    if "epoll" in name:
        return "epoll syscall"
    for _, path in reversed(frames):
        part = path.split("/")[0]
        if part in _BY_PART:
            return _BY_PART[part]
    return "other (interpreter, stdlib)"


def summarise(raw: str, top: int = 15) -> list[str]:
    own: Counter[str] = Counter()
    categories: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, number = line.rpartition(" ")
        if not stack or not number.isdigit():
            continue
        frames = [_frame(frame) for frame in stack.split(";")]
        own[frames[-1][0]] += int(number)
        categories[_category(frames)] += int(number)
        total += int(number)
    lines = [f"  top {top} functions by own time ({total} samples while busy):"]
    for name, samples in own.most_common(top):
        lines.append(f"    {100 * samples / total:5.1f} %  {name}")
    lines.append("  by what it was doing (innermost frame that says):")
    for name, samples in categories.most_common():
        lines.append(f"    {100 * samples / total:5.1f} %  {name}")
    return lines


def profile() -> list[str]:
    spy = py_spy()
    DOCS.mkdir(exist_ok=True)
    # BENCH_PROFILE_TARGET=metered profiles the metered proxy instead.
    name = os.environ.get("BENCH_PROFILE_TARGET", "proxy")
    svg = DOCS / ("proxy-streams.svg" if name == "proxy" else f"{name}-streams.svg")
    seconds = WARMUP + 2 * PROFILE_SECONDS + 2
    allow_many_sockets()
    start = time.monotonic() + 0.5
    with (
        mock_upstream() as (upstream, mock_pid),
        target(name, upstream, mock_pid) as (url, pid),
        tempfile.TemporaryDirectory() as tmp,
        loading(url, PROFILE_CONNECTIONS, start, seconds, f"{tmp}/load") as loaders,
    ):
        time.sleep(max(0.0, start + WARMUP - time.monotonic()))
        record = [spy, "record", "--pid", str(pid), "--duration", str(PROFILE_SECONDS)]
        # --native (C frames of uvloop, httptools, aiohttp's parser) cannot sample without
        # pausing the process; Python frames alone can.
        record += ["--rate", "200", *(["--native"] if NATIVE else ["--nonblocking"])]
        raw = Path(tmp) / "proxy.raw"
        for output in (["-o", str(svg)], ["--format", "raw", "-o", str(raw)]):
            done = subprocess.run([*record, *output], capture_output=True, text=True)
            if done.returncode:
                raise RuntimeError(f"py-spy failed: {done.stderr[-2000:]}")
        text = raw.read_text()
        if os.environ.get("BENCH_PROFILE_RAW"):  # the collapsed stacks, for speedscope etc.
            shutil.copy(raw, os.environ["BENCH_PROFILE_RAW"])
        for loader in loaders:
            loader.wait(timeout=60)
    return [
        f"{name} profile, {PROFILE_CONNECTIONS} streams ({EVENTS} events {DELAY_MS} ms apart),"
        f" py-spy {PROFILE_SECONDS} s",
        *summarise(text),
        f"  flame graph: {svg.relative_to(ROOT)}",
    ]
