"""Telemetry's cost in-process (issue 20): CPU per request and per event, same run.

Three proxies in this one process, in front of the mock upstream (its own process):
telemetry off (a function platform with no OTLP endpoint), Prometheus only (what `serve`
always counts), and OpenTelemetry on (as `serve` with OTEL_EXPORTER_OTLP_ENDPOINT, so
Prometheus too) exporting to bench/otlp_sink.py. Each round sends the same streams through
each in turn (httpx.ASGITransport, a few at a time), and flushes the OpenTelemetry export
inside its own round, so the batch thread's encoding and sending is counted where it
belongs. Process CPU time counts every thread.

The in-process client's own cost is measured too (the same reply bytes from a stub app)
and taken out, so the figures and ratios are the proxy's. The least of the rounds.
`python -m bench telemetry`; `python -m bench telemetry --profile` prints where
OpenTelemetry's per-request time goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import io
import os
import pstats
import time
from collections.abc import Iterator
from typing import Any

import httpx

from bench.harness import BENCH_TOKEN, PYTHON, free_port, mock_upstream, process, row
from core.app import create_app
from core.config import load_settings
from core.telemetry import serving
from core.types import Receive, Scope, Send

WORDS = 40  # a reply's words: with its first and last events, 42 SSE events
EVENTS = WORDS + 2
BODY = b'{"model":"mock-model","stream":true,"messages":[{"role":"user","content":"hi"}]}'
HEADERS = {
    "authorization": f"Bearer {BENCH_TOKEN}",
    "content-type": "application/json",
    "x-mock-chunks": str(WORDS),
    # A pause before each event, so each arrives as a chunk of its own, as from a model (a
    # reply read in one chunk takes the meter's line-by-line path: not what is measured).
    "x-mock-delay-ms": "10",
}
VARIANTS = ("off", "prometheus", "metered", "otel")
# The batch thread exports when the round ends (flushed), not in another variant's round.
OTEL_ENV = {
    "OTEL_BSP_SCHEDULE_DELAY": "600000",
    "OTEL_BSP_MAX_QUEUE_SIZE": "100000",
    "OTEL_METRIC_EXPORT_INTERVAL": "600000",
    "OTEL_SERVICE_NAME": "llm-proxy-bench",
}


@contextlib.contextmanager
def _collector() -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with process([PYTHON, "-m", "bench.otlp_sink", str(port)], {}, f"{url}/"):
        yield url


@contextlib.contextmanager
def _env(values: dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def build(upstream: str, variant: str, collector: str) -> Any:
    env = {
        "UPSTREAM_BASE_URL": f"{upstream}/v1",
        "UPSTREAM_API_KEY": "sk-bench-fake-upstream-key",
        "PROXY_ACCESS_TOKEN": BENCH_TOKEN,
        "ACCESS_LOG": "false",
    }
    if variant == "metered":
        # A token limit no one reaches: every stream metered, no telemetry but Prometheus.
        env["RATE_LIMIT_TOKENS"] = "1000000000000"
    serving.SERVER = variant != "off"
    otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector, **OTEL_ENV} if variant == "otel" else {}
    try:
        with _env(otel):
            return create_app(load_settings(env))
    finally:
        serving.SERVER = False


class Replay:
    """The client's side alone: the same reply bytes, from an app that does nothing."""

    def __init__(self, headers: list[tuple[bytes, bytes]], chunks: list[bytes]) -> None:
        self.headers = headers
        self.chunks = chunks

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": self.headers})
        for chunk in self.chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})


async def capture(app: Any) -> Replay:
    chunks: list[bytes] = []
    transport = httpx.ASGITransport(app=app)
    client = httpx.AsyncClient(transport=transport, base_url="http://proxy")
    async with (
        client,
        client.stream("POST", "/v1/chat/completions", content=BODY, headers=HEADERS) as reply,
    ):
        async for chunk in reply.aiter_raw():
            chunks.append(chunk)
        headers = [(k.lower(), v) for k, v in reply.headers.raw]
    return Replay(headers, chunks)


async def drive(app: Any, requests: int, at_once: int = 100) -> int:
    """Sends `requests` streams, `at_once` at a time; returns the events received."""
    transport = httpx.ASGITransport(app=app)
    events = 0
    async with httpx.AsyncClient(transport=transport, base_url="http://proxy") as client:
        gate = asyncio.Semaphore(at_once)

        async def one() -> None:
            nonlocal events
            async with gate:
                reply = await client.post("/v1/chat/completions", content=BODY, headers=HEADERS)
                events += reply.content.count(b"data: {")

        await asyncio.gather(*(one() for _ in range(requests)))
    return events


async def flush(app: Any) -> None:
    telemetry = app.proxy.telemetry if hasattr(app, "proxy") else None
    if telemetry is not None:
        for sink in telemetry.sinks:
            flushing = getattr(sink, "_flush", None)
            if flushing is not None:
                await asyncio.to_thread(flushing)


async def rounds(apps: dict[str, Any], requests: int, count: int) -> dict[str, list[float]]:
    cpu: dict[str, list[float]] = {name: [] for name in apps}
    for app in apps.values():  # warm: pools, first-use imports, code paths
        await drive(app, 50)
        await flush(app)
    for _ in range(count):
        for name, app in apps.items():
            started = time.process_time()
            events = await drive(app, requests)
            await flush(app)
            spent = time.process_time() - started
            assert events == requests * EVENTS or name == "client", (name, events)
            cpu[name].append(spent / requests)
    return cpu


def measure(requests: int = 200, count: int = 7) -> dict[str, float]:
    """CPU seconds per request of each variant, the client's own taken out: the least of
    the rounds, as other work on the machine only ever adds to a round's CPU time."""
    with mock_upstream() as upstream, _collector() as collector:
        apps = {name: build(upstream, name, collector) for name in VARIANTS}

        async def run() -> dict[str, list[float]]:
            try:
                replay = await capture(apps["off"])
                return await rounds({"client": replay, **apps}, requests, count)
            finally:
                # In the loop the pools were used in (aiohttp's are bound to it), as the
                # lifespan's shutdown closes them.
                for app in apps.values():
                    await app.proxy.upstream.aclose()
                    if app.proxy.telemetry is not None:
                        await app.proxy.telemetry.close()

        cpu = asyncio.run(run())
    client = min(cpu.pop("client"))
    return {name: min(values) - client for name, values in cpu.items()} | {"client": client}


def run() -> list[str]:
    figures = measure()
    off = figures["off"]
    lines = [
        f"telemetry in-process: {EVENTS} events a stream, CPU per request with the in-process "
        f"client's own ({figures['client'] * 1e6:.0f} us) taken out"
    ]
    for name, label in (
        ("off", "telemetry off"),
        ("prometheus", "Prometheus only (serve)"),
        ("metered", "Prometheus, every reply metered (a limit)"),
        ("otel", "OpenTelemetry on (serve + OTLP)"),
    ):
        value = figures[name]
        lines.append(
            row(
                f"CPU per request / per event, {label}",
                f"{value * 1e6:.0f} / {value / EVENTS * 1e6:.2f} us",
            )
        )
    prometheus = figures["prometheus"] / off
    otel = figures["otel"] / off
    lines.append(row("CPU, Prometheus only / off", f"{prometheus:.2f}x", "indistinguishable", None))
    lines.append(row("CPU, OpenTelemetry on / off", f"{otel:.2f}x", "<= 1.10x", otel <= 1.10))
    lines.append(
        row(
            "OpenTelemetry's cost per request over Prometheus only",
            f"{(figures['otel'] - figures['prometheus']) * 1e6:.0f} us",
        )
    )
    return lines


def profile() -> list[str]:
    """cProfile of the OpenTelemetry proxy's rounds, by own time."""
    with mock_upstream() as upstream, _collector() as collector:
        app = build(upstream, "otel", collector)
        profiler = cProfile.Profile()

        async def go() -> None:
            await drive(app, 50)
            profiler.enable()
            await drive(app, 500)
            await flush(app)
            profiler.disable()
            await app.proxy.upstream.aclose()
            await app.proxy.telemetry.close()

        asyncio.run(go())
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(40)
    return out.getvalue().splitlines()
