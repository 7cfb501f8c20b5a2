"""The response cache (issue 14): what a hit costs against an upstream call, measured in
the same run.

- wrk, one request repeated: p50 latency on one connection and throughput on 32, for the
  mock upstream called directly, the proxy without a cache (every request an upstream call)
  and the proxy answering from its cache (memory and SQLite). The mock answers at once, so
  this is the proxy's own cost; a real provider takes hundreds of milliseconds to seconds.
- a streamed reply of 20 chunks 10 ms apart (a model generating): time to the whole reply
  on a miss and on a hit.
- a miss with the cache on (a new prompt each time: lookup, copy, store write) against
  the proxy without a cache.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import tempfile
import time
from collections.abc import Iterator

import httpx

from bench.harness import BENCH_TOKEN, median, mock_upstream, proxy_server, row, wrk

AUTH = {"Authorization": f"Bearer {BENCH_TOKEN}", "content-type": "application/json"}
# harness.wrk sends a chat request without `temperature`: such a request is cached only
# with CACHE_NONDETERMINISTIC=true, set here so the repeated request is a hit.
CACHED = {"CACHE_NONDETERMINISTIC": "true"}


@contextlib.contextmanager
def _proxies(upstream: str) -> Iterator[dict[str, str]]:
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        configs = {
            "no cache (upstream call)": {},
            "cache hit, memory": {**CACHED, "CACHE_URL": "memory"},
            "cache hit, SQLite": {**CACHED, "CACHE_URL": f"sqlite:///{tmp}/cache.db"},
        }
        urls = {}
        for name, env in configs.items():
            proxy, _ = stack.enter_context(proxy_server(upstream, **env))
            urls[name] = proxy
        yield urls


def hit_against_upstream(rounds: int = 3, seconds: float = 3) -> list[str]:
    lines = []
    with mock_upstream() as upstream, _proxies(upstream) as proxies:
        urls = {"mock upstream, direct": upstream, **proxies}
        for url in urls.values():
            wrk(f"{url}/v1/chat/completions", 8, 1)  # warm the pool, fill the cache
        p50: dict[str, list[float]] = {name: [] for name in urls}
        rps: dict[str, list[float]] = {name: [] for name in urls}
        for _ in range(rounds):  # round-robin: drift in machine load hits every one alike
            for name, url in urls.items():
                p50[name].append(wrk(f"{url}/v1/chat/completions", 1, seconds)["p50_ms"])
                rps[name].append(wrk(f"{url}/v1/chat/completions", 32, seconds)["rps"])
    for name in urls:
        lines.append(
            row(
                f"{name}: p50 1 conn / 32 conns",
                f"{median(p50[name]):.3f} ms / {median(rps[name]):,.0f} req/s",
            )
        )
    return lines


def _whole_stream_s(client: httpx.Client, url: str, body: bytes, headers: dict[str, str]) -> float:
    started = time.perf_counter()
    with client.stream("POST", url, content=body, headers=headers) as response:
        for _ in response.iter_raw():
            pass
        assert response.status_code == 200
    return time.perf_counter() - started


def streamed_generation(samples: int = 10) -> list[str]:
    headers = {**AUTH, "x-mock-chunks": "20", "x-mock-delay-ms": "10"}
    misses, hits = [], []
    with (
        mock_upstream() as upstream,
        proxy_server(upstream, CACHE_URL="memory") as (proxy, _),
        httpx.Client(timeout=30) as client,
    ):
        url = f"{proxy}/v1/chat/completions"
        for index in range(samples):
            body = json.dumps(
                {
                    "model": "mock-model",
                    "stream": True,
                    "temperature": 0,
                    "messages": [{"role": "user", "content": f"prompt {index}"}],
                }
            ).encode()
            misses.append(_whole_stream_s(client, url, body, headers))
            hits.append(_whole_stream_s(client, url, body, headers))
    return [
        row(
            "stream of 20 chunks 10 ms apart: miss / hit",
            f"{median(misses) * 1000:.1f} / {median(hits) * 1000:.2f} ms",
        )
    ]


def miss_cost(samples: int = 300) -> list[str]:
    counter = itertools.count()
    lines = []
    with tempfile.TemporaryDirectory() as tmp, mock_upstream() as upstream:
        for name, env in (
            ("no cache", {}),
            ("cache miss, memory", {"CACHE_URL": "memory"}),
            ("cache miss, SQLite", {"CACHE_URL": f"sqlite:///{tmp}/miss.db"}),
        ):
            with proxy_server(upstream, **env) as (proxy, _), httpx.Client(timeout=30) as client:
                url = f"{proxy}/v1/chat/completions"
                times = []
                for index in range(samples + 20):
                    body = json.dumps(
                        {
                            "model": "mock-model",
                            "temperature": 0,
                            "messages": [{"role": "user", "content": f"new {next(counter)}"}],
                        }
                    )
                    started = time.perf_counter()
                    reply = client.post(url, content=body, headers=AUTH)
                    elapsed = time.perf_counter() - started
                    assert reply.status_code == 200
                    if index >= 20:  # after warm-up
                        times.append(elapsed)
                lines.append(
                    row(f"{name}: p50 of a new prompt, 1 conn", f"{median(times) * 1000:.3f} ms")
                )
    return lines


def run() -> list[str]:
    return [
        "response cache (issue 14): a hit against an upstream call",
        *hit_against_upstream(),
        *streamed_generation(),
        *miss_cost(),
    ]


if __name__ == "__main__":
    for line in run():
        print(line, flush=True)
