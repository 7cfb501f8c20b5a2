"""What MODEL_ROUTES and MODEL_FALLBACKS cost a plain OpenAI request (issue 22).

Two `llm-proxy serve` processes in front of one mock upstream: `plain` as today, and
`routed` with routes (claude-*, gemini-*, deepseek-*) and a fallback chain that this
request's model is not part of. The load is the same on both: streams of a gpt-* model, 40
SSE events each, from 16 concurrent clients, the two servers measured in alternate rounds so
drift in the machine's load hits both. Reported: server CPU per stream and per event
(utime + stime of the server process over the window), and their difference.

BENCH_ROUTING_STREAMS (default 400 per round) and BENCH_ROUTING_ROUNDS (default 3) shorten
or lengthen a run.
"""

from __future__ import annotations

import asyncio
import os

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


def routed_env(upstream: str) -> dict[str, str]:
    return {
        "ANTHROPIC_API_KEY": "fake-anthropic-key-bench",
        "ANTHROPIC_UPSTREAM": upstream,
        "GEMINI_API_KEY": "fake-gemini-key-bench",
        "GEMINI_UPSTREAM": upstream,
        "DEEPSEEK_API_KEY": "fake-deepseek-key-bench",
        "DEEPSEEK_UPSTREAM": upstream,
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


def run() -> list[str]:
    lines = ["routing: CPU of a plain OpenAI stream with and without MODEL_ROUTES"]
    with (
        mock_upstream() as upstream,
        proxy_server(upstream) as plain,
        proxy_server(upstream, **routed_env(upstream)) as routed,
    ):
        for url, pid in (plain, routed):
            measure(url, pid, 50)  # warm the pools
        per_event: dict[str, list[float]] = {"plain": [], "routed": []}
        per_stream: dict[str, list[float]] = {"plain": [], "routed": []}
        for _ in range(ROUNDS):
            for name, (url, pid) in (("plain", plain), ("routed", routed)):
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
