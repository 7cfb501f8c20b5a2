"""Each platform adapter started the way its platform starts it: time to ready, and the
per-request cost it adds over the plain server (handlers.http), measured in one run.

Requests go one at a time over a fresh connection each (as a function's front end does),
so figures compare adapters with each other, not with the throughput figures of bench_core.
"""

from __future__ import annotations

import functools
import json
import statistics
import time
from collections.abc import Callable

from bench.harness import BENCH_TOKEN, CHAT_BODY, median, mock_upstream, proxy_env, row
from tests.conformance.adapters import (
    Adapter,
    GoogleFunctionsFramework,
    PlainHttpServer,
    Reply,
    Request,
    TencentScfBootstrap,
    VercelFluid,
)

PLATFORMS: list[type[Adapter]] = [
    PlainHttpServer,
    TencentScfBootstrap,
    GoogleFunctionsFramework,
    VercelFluid,
]
HEADERS = {"authorization": f"Bearer {BENCH_TOKEN}", "content-type": "application/json"}


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _timed(send: Callable[[], Reply], samples: int) -> tuple[list[float], list[float]]:
    """(whole-response seconds, first-byte seconds) for `samples` requests."""
    totals, firsts = [], []
    for _ in range(samples):
        reply = send()
        if reply.status != 200:
            raise RuntimeError(f"status {reply.status}: {reply.body[:200]!r}")
        totals.append(reply.chunks[-1][0] - reply.sent_at)
        firsts.append(reply.chunks[0][0] - reply.sent_at)
    return totals, firsts


def measure(platform: type[Adapter], upstream: str, starts: int, samples: int) -> dict[str, float]:
    env = proxy_env(upstream)
    ready: list[float] = []
    chat = Request("POST", "/v1/chat/completions", HEADERS, CHAT_BODY.encode())
    stream_body = json.dumps({**json.loads(CHAT_BODY), "stream": True}).encode()
    stream = Request("POST", "/v1/chat/completions", HEADERS, stream_body)
    figures: dict[str, float] = {}
    for attempt in range(starts):
        adapter = platform()
        began = time.monotonic()
        with adapter.start(env):
            ready.append(time.monotonic() - began)
            if attempt == starts - 1:
                adapter.send(chat)  # the first request builds the upstream pool
                totals, _ = _timed(functools.partial(adapter.send, chat), samples)
                _, firsts = _timed(functools.partial(adapter.send, stream), samples)
                figures["chat_p50"] = median(totals)
                figures["chat_p90"] = statistics.quantiles(totals, n=10)[-1]
                figures["stream_first_byte_p50"] = median(firsts)
    figures["ready"] = median(ready)
    return figures


def run(starts: int = 3, samples: int = 60) -> list[str]:
    from tests.support.vercel_output import materialized_function

    materialized_function()  # `vercel build` once, outside the timings
    lines = [
        "Platform adapters (one request at a time, fresh connection; "
        f"ready = median of {starts} starts)"
    ]
    with mock_upstream() as upstream:
        results = {p.name: measure(p, upstream, starts, samples) for p in PLATFORMS}
    base = results[PlainHttpServer.name]
    for name, figures in results.items():
        lines.append(row(f"{name}: process start to ready", _ms(figures["ready"])))
        extra = figures["chat_p50"] - base["chat_p50"]
        lines.append(
            row(
                f"{name}: chat p50 / p90 (vs handlers.http)",
                f"{_ms(figures['chat_p50'])} / {_ms(figures['chat_p90'])} ({extra * 1000:+.1f})",
            )
        )
        lines.append(row(f"{name}: stream first byte p50", _ms(figures["stream_first_byte_p50"])))
    return lines
