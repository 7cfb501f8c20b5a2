"""Load generator of bench/bench_streams.py: many keep-alive connections, each asking for one
SSE stream after another, timing every event against its schedule.

Plain asyncio protocols on uvloop, no coroutine per event and no HTTP library: a connection
is a callback that counts `\\n\\n` (one SSE event each) in what arrives, so one process carries
a thousand streams for a small share of a core. Lateness of event i (0-based) is its arrival
time minus (request sent + (i + 1) * delay): the mock upstream sleeps `delay` before each
event, so a perfect relay is 0 ms late plus loopback. TTFB is the first byte (the response
head). Only what happens inside the window [start + warmup, start + warmup + duration]
counts; the warmup spreads the connections' first requests over time.

Run: python -m bench.stream_load URL CONNECTIONS START WARMUP DURATION DELAY_MS EVENTS OUT
(START is a time.monotonic() value, shared by processes on one machine.) Writes OUT.json
(counts) and OUT.lateness / OUT.ttfb (float32 milliseconds).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import resource
import sys
import time
from array import array
from collections.abc import Callable
from typing import cast
from urllib.parse import urlsplit

from bench.harness import BENCH_TOKEN

BODY = b'{"model":"mock-model","stream":true,"messages":[{"role":"user","content":"hi"}]}'
END_OF_BODY = b"\r\n0\r\n\r\n"  # the last chunk of a chunked response


class Load:
    def __init__(self, window: tuple[float, float], delay: float, events: int) -> None:
        self.window_start, self.window_end = window
        self.delay = delay
        self.events = events
        self.lateness = array("f")
        self.ttfb = array("f")
        self.counts: dict[str, float] = {
            "events": 0,  # events that arrived inside the window
            "streams": 0,  # streams that ended inside the window
            "short_streams": 0,  # of those, with fewer or more events than asked for
            "errors": 0,  # non-200 answers and connections the server dropped
        }
        self.stopping = False


class Stream(asyncio.Protocol):
    """One keep-alive connection asking for one stream after another. Every target here
    answers with a chunked body, so `0\r\n\r\n` at the end of a read ends a stream."""

    def __init__(self, load: Load, request: bytes, reconnect: Callable[[], None]) -> None:
        self.load = load
        self.request = request
        self.reconnect = reconnect
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.ask()

    def ask(self) -> None:
        self.sent = time.monotonic()
        self.first = 0.0
        self.index = 0
        self.tail = b""
        assert self.transport is not None
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        load = self.load
        if not self.first:
            self.first = now
            if not data.startswith(b"HTTP/1.1 200"):
                load.counts["errors"] += 1
                assert self.transport is not None
                self.transport.close()
                return
            if load.window_start <= self.sent <= load.window_end:
                load.ttfb.append((now - self.sent) * 1000)
        # One byte of the last read is enough to see a "\n\n" split across two reads.
        arrived = (self.tail[-1:] + data).count(b"\n\n")
        if arrived and load.window_start <= now <= load.window_end:
            load.counts["events"] += arrived
            late = load.lateness
            base, delay = now - self.sent, load.delay
            for i in range(self.index + 1, self.index + arrived + 1):
                late.append((base - i * delay) * 1000)
        self.index += arrived
        tail = (self.tail + data)[-len(END_OF_BODY) :]
        if tail == END_OF_BODY:
            if load.window_start <= now <= load.window_end:
                load.counts["streams"] += 1
                if self.index != load.events:
                    load.counts["short_streams"] += 1
            if not load.stopping:
                self.ask()
            return
        self.tail = tail

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.load.stopping:
            self.load.counts["errors"] += 1
            self.reconnect()


async def run(
    url: str,
    connections: int,
    start: float,
    warmup: float,
    duration: float,
    delay_ms: float,
    events: int,
) -> tuple[Load, float]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    request = (
        f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Authorization: Bearer {BENCH_TOKEN}\r\nContent-Type: application/json\r\n"
        f"{os.environ.get('BENCH_LOAD_HEADERS', '')}"
        f"Content-Length: {len(BODY)}\r\n\r\n"
    ).encode() + BODY
    load = Load((start + warmup, start + warmup + duration), delay_ms / 1000, events)
    loop = asyncio.get_running_loop()
    transports: list[asyncio.Transport] = []
    connecting: set[asyncio.Task[None]] = set()

    def connect() -> None:
        async def go() -> None:
            try:
                transport, _ = await loop.create_connection(
                    lambda: Stream(load, request, connect), host, port
                )
                transports.append(cast(asyncio.Transport, transport))
            except OSError:
                load.counts["errors"] += 1
                if not load.stopping:
                    loop.call_later(0.1, connect)

        if not load.stopping:
            task = loop.create_task(go())
            connecting.add(task)
            task.add_done_callback(connecting.discard)

    # This process's own event-loop lag: if it grows, the load generator is the bottleneck.
    lags = array("f")

    def tick(due: float) -> None:
        now = time.monotonic()
        if load.window_start <= now <= load.window_end:
            lags.append((now - due) * 1000)
        if not load.stopping:
            loop.call_later(0.01, tick, now + 0.01)

    loop.call_soon(tick, time.monotonic())
    # Spread the first requests over most of the warmup, so streams are out of phase.
    for _ in range(connections):
        loop.call_at(
            loop.time() + max(0.0, start - time.monotonic()) + random.uniform(0, warmup * 0.8),
            connect,
        )
    await asyncio.sleep(max(0.0, load.window_start - time.monotonic()))
    cpu_before = _cpu_seconds()
    await asyncio.sleep(max(0.0, load.window_end - time.monotonic()))
    cpu = _cpu_seconds() - cpu_before
    load.stopping = True
    for transport in transports:
        transport.abort()
    ordered = sorted(lags)
    load.counts["lag_p99_ms"] = ordered[int(len(ordered) * 0.99)] if ordered else 0.0
    return load, cpu


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str]) -> None:
    url, connections, start, warmup, duration, delay_ms, events, out = argv
    loop_factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        pass
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        load, cpu = runner.run(
            run(
                url,
                int(connections),
                float(start),
                float(warmup),
                float(duration),
                float(delay_ms),
                int(events),
            )
        )
    with open(out + ".lateness", "wb") as handle:
        load.lateness.tofile(handle)
    with open(out + ".ttfb", "wb") as handle:
        load.ttfb.tofile(handle)
    with open(out + ".json", "w") as handle:
        json.dump({**load.counts, "cpu_seconds": cpu}, handle)


if __name__ == "__main__":
    main(sys.argv[1:])
