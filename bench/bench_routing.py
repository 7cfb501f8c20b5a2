"""What MODEL_ROUTES and MODEL_FALLBACKS cost a plain OpenAI request (issue 22).

Two `llm-proxy serve` processes in front of one mock upstream, with the same provider keys:
`plain` as today, and `routed` with routes (claude-*, gemini-*, deepseek-*) and a fallback
chain that this request's model is not part of. The load is the same on both: streams of a
gpt-* model, 40 SSE events each, from 16 concurrent clients; the two servers are measured in
alternate rounds, each first in turn, so drift in the machine's load hits both. Reported:
server CPU per stream and per event (utime + stime of the server process over the window)
and their difference; and, in process, the CPU the routing decision itself takes per request
(the router's choice of provider and the fallback lookup for a model in no chain), which the
relay of the events never pays again.

BENCH_ROUTING_STREAMS (default 400 per round) and BENCH_ROUTING_ROUNDS (default 3) shorten
or lengthen a run.
"""

from __future__ import annotations

import asyncio
import os
import time

import httpx
import psutil

from bench.harness import BENCH_TOKEN, median, mock_upstream, proxy_server, row

STREAMS = int(os.environ.get("BENCH_ROUTING_STREAMS", "400"))
ROUNDS = int(os.environ.get("BENCH_ROUTING_ROUNDS", "3"))
CONCURRENCY = 16
EVENTS = 40  # the mock's role event, 37 words, the stop event and [DONE]
BODY = b'{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}'
HEADERS = {
    "authorization": f"Bearer {BENCH_TOKEN}",
    "content-type": "application/json",
    "x-mock-chunks": str(EVENTS - 3),
}


def providers_env(upstream: str) -> dict[str, str]:
    """The same provider routes on both servers (a Gemini key alone switches on work of its
    own, resumable uploads), so the only difference is routing."""
    return {
        "ANTHROPIC_API_KEY": "fake-anthropic-key-bench",
        "ANTHROPIC_UPSTREAM": upstream,
        "GEMINI_API_KEY": "fake-gemini-key-bench",
        "GEMINI_UPSTREAM": upstream,
        "DEEPSEEK_API_KEY": "fake-deepseek-key-bench",
        "DEEPSEEK_UPSTREAM": upstream,
    }


def routed_env(upstream: str) -> dict[str, str]:
    return {
        **providers_env(upstream),
        "MODEL_ROUTES": "claude-*=anthropic,gemini-*=gemini,deepseek-*=deepseek",
        "MODEL_FALLBACKS": "gpt-4o>claude-sonnet-4-5>gemini-2.5-pro",
    }


async def _load(url: str, streams: int) -> int:
    """`streams` streamed requests, CONCURRENCY at a time; the events received."""
    received = 0
    queue = iter(range(streams))
    limits = httpx.Limits(max_connections=CONCURRENCY)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:

        async def worker() -> None:
            nonlocal received
            for _ in queue:
                async with client.stream(
                    "POST", f"{url}/v1/chat/completions", content=BODY, headers=HEADERS
                ) as reply:
                    assert reply.status_code == 200
                    async for line in reply.aiter_lines():
                        if line.startswith("data: "):
                            received += 1

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return received


def _cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def measure(url: str, pid: int, streams: int) -> tuple[float, int]:
    """Server CPU seconds spent on `streams` streams, and the events they carried."""
    before = _cpu_seconds(pid)
    events = asyncio.run(_load(url, streams))
    return _cpu_seconds(pid) - before, events


def decision_cost(requests: int = 20_000, repeats: int = 7) -> float:
    """CPU microseconds per request of the routing decision, in process (median of repeats)."""
    from core.app import ProxyApp
    from core.config import load_settings
    from core.request import build_request

    env = {
        "UPSTREAM_BASE_URL": "http://127.0.0.1:9/v1",
        "UPSTREAM_API_KEY": "fake-upstream-key-bench",
        "PROXY_ACCESS_TOKEN": BENCH_TOKEN,
        **routed_env("http://127.0.0.1:9"),
    }
    app = ProxyApp(load_settings(env))
    router = app.endpoint.model_router
    assert router is not None and router.fallbacks is not None
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json")],
    }
    provider, remainder = app.endpoint.route(scope)  # type: ignore[arg-type]
    request = build_request(scope, provider, remainder, None)  # type: ignore[arg-type]
    request.body = BODY

    async def measure_all() -> list[float]:
        await request.document()
        figures = []
        for _ in range(repeats):
            started = time.process_time()
            for _ in range(requests):
                await router.route(request, [], None, app.endpoint.scrubber)  # type: ignore[arg-type]
                router.fallbacks.after.get(await request.model() or "", ())  # type: ignore[union-attr]
            figures.append((time.process_time() - started) / requests * 1e6)
        return figures

    return median(asyncio.run(measure_all()))


def run() -> list[str]:
    lines = ["routing: CPU of a plain OpenAI stream with and without MODEL_ROUTES"]
    lines.append(row("routing decision per request (in process)", f"{decision_cost():.1f} us"))
    with (
        mock_upstream() as upstream,
        proxy_server(upstream, **providers_env(upstream)) as plain,
        proxy_server(upstream, **routed_env(upstream)) as routed,
    ):
        for url, pid in (plain, routed):
            measure(url, pid, 50)  # warm the pools
        per_event: dict[str, list[float]] = {"plain": [], "routed": []}
        per_stream: dict[str, list[float]] = {"plain": [], "routed": []}
        servers = [("plain", plain), ("routed", routed)]
        for _ in range(ROUNDS):
            servers.reverse()  # each goes first in turn: no order bias
            for name, (url, pid) in servers:
                seconds, events = measure(url, pid, STREAMS)
                assert events == STREAMS * EVENTS, (name, events)
                per_event[name].append(seconds / events * 1e6)
                per_stream[name].append(seconds / STREAMS * 1e6)
    for name in ("plain", "routed"):
        lines.append(
            row(
                f"server CPU, {name}: per stream / per event",
                f"{median(per_stream[name]):,.0f} / {median(per_event[name]):.1f} us",
            )
        )
    spread = max(per_event["plain"]) - min(per_event["plain"])
    added = median(per_event["routed"]) - median(per_event["plain"])
    lines.append(
        row(
            "added by routing, per event (plain spread)",
            f"{added:+.1f} us ({spread:.1f})",
            "within the spread",
            abs(added) <= max(spread, 0.5),
        )
    )
    added_stream = median(per_stream["routed"]) - median(per_stream["plain"])
    lines.append(row("added by routing, per stream", f"{added_stream:+,.0f} us"))
    return lines
