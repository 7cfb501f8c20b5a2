"""One streamed exchange in-process (issue 18): the proxy's own CPU per request, no sockets.

The streams bench (bench/bench_streams.py) measures the whole server on loopback, where the
server, the event loop and the sockets take most of the time and a busy machine moves the
figures by a third. This one runs the app `llm-proxy serve` builds, with the upstream client
answering from memory with what the mock upstream sends (40 SSE events, one a chunk; with
the usage option asked, `"usage":null` in each and a usage-only event), so only the
proxy's own work is left: routing, identify, the stages, forward, the taps, the relay and
settle. Plain and metered (a token limit on) alternate, process CPU time, best of five
rounds, in one run: the difference is what metering costs a request, and per event it is
comparable with the streams bench's "metering cost per relayed event".

`python -m bench exchange`; BENCH_EXCHANGE_PROFILE=metered (or plain) prints a cProfile
of that configuration instead.
"""

from __future__ import annotations

import asyncio
import cProfile
import json
import os
import pstats
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from bench.harness import BENCH_TOKEN, proxy_env, row
from core.app import create_app
from core.config import load_settings
from core.telemetry import serving
from core.types import DIRECT_BODY, DISCONNECT_WATCH, ASGIApp, DisconnectWatch, Message

BODY = b'{"model":"mock-model","stream":true,"messages":[{"role":"user","content":"hi"}]}'
WORDS = 37  # the mock's role event, 37 words, a stop event and [DONE]: 40 events
UPSTREAM = "http://upstream.invalid"
# name: (built as `llm-proxy serve` builds it, extra settings). A server exposes /metrics,
# whose token counters meter every reply (core/telemetry); a function instance does not.
CONFIGURATIONS: dict[str, tuple[bool, dict[str, str]]] = {
    "proxy": (True, {}),
    # A token limit no one reaches: every stream is also reserved and settled.
    "metered": (True, {"RATE_LIMIT_TOKENS": "1000000000000"}),
    # Nothing reads usage: the relay alone, the floor of the two above.
    "function": (False, {}),
}


def upstream_events(body: bytes) -> list[bytes]:
    """The stream the mock upstream sends for `body` (core/devtools/mock_upstream/openai.py),
    without its obfuscation padding (the proxy never reads it)."""
    request = json.loads(body)
    options = request.get("stream_options")
    with_usage = isinstance(options, dict) and options.get("include_usage") is True
    base = {
        "id": "chatcmpl-mock",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": request.get("model"),
        "service_tier": "default",
        "system_fingerprint": "fp_mock",
    }
    events = []

    def event(choices: list[Any], usage: Any = None) -> None:
        payload = {**base, "choices": choices, **({"usage": usage} if with_usage else {})}
        events.append(b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n")

    def choice(delta: dict[str, Any], finish: str | None = None) -> list[Any]:
        return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]

    event(choice({"role": "assistant", "content": "", "refusal": None}))
    for i in range(WORDS):
        event(choice({"content": f"word{i} "}))
    event(choice({}, "stop"))
    if with_usage:
        usage = {"prompt_tokens": 3, "completion_tokens": WORDS, "total_tokens": 3 + WORDS}
        event([], usage)
    events.append(b"data: [DONE]\n\n")
    return events


class MemoryReply:
    """An upstream reply from memory, shaped as core/upstream/client.py's UpstreamReply."""

    status_code = 200
    stream_errors: tuple[type[BaseException], ...] = (OSError,)

    def __init__(self, events: list[bytes]) -> None:
        self.raw_headers = [
            (b"date", b"Thu, 01 Jan 2026 00:00:00 GMT"),
            (b"server", b"uvicorn"),
            (b"content-type", b"text/event-stream"),
            (b"cache-control", b"no-cache"),
            (b"transfer-encoding", b"chunked"),
        ]
        self.stream = self._events(events)

    @staticmethod
    async def _events(events: list[bytes]) -> AsyncIterator[bytes]:
        for event in events:
            yield event

    async def aclose(self) -> None:
        return None


def build(server: bool, extra: dict[str, str]) -> ASGIApp:
    saved = dict(os.environ)
    os.environ.update(proxy_env(UPSTREAM, **extra))
    serving.SERVER = server
    try:
        app = create_app(load_settings(), concurrent=server)
    finally:
        serving.SERVER = False
        os.environ.clear()
        os.environ.update(saved)
    replies: dict[bytes, list[bytes]] = {}

    async def send(method: str, url: str, headers: Any, body: bytes) -> MemoryReply:
        if body not in replies:
            replies[body] = upstream_events(body)
        return MemoryReply(replies[body])

    app.proxy.upstream.send = send  # type: ignore[attr-defined]
    return app


def scope() -> dict[str, Any]:
    # As `llm-proxy serve`'s server gives it: with the watch it fires on a hang-up.
    return {
        DISCONNECT_WATCH: DisconnectWatch(),
        "type": "http",
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "root_path": "",
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8080),
        "headers": [
            (b"host", b"127.0.0.1:8080"),
            (b"authorization", b"Bearer " + BENCH_TOKEN.encode()),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(BODY)).encode()),
        ],
    }


class MemoryBody:
    """The server's writer of a streamed body's chunks (core/server/direct_body.py), as
    `llm-proxy serve` puts it in the scope: each chunk's length goes to the sink."""

    def __init__(self, sink: list[int]) -> None:
        self.sink = sink

    def writer(self) -> Callable[[bytes], bool]:
        append = self.sink.append

        def write(chunk: bytes) -> bool:
            append(len(chunk))
            return False  # the caller's socket is never full here

        return write

    async def drain(self) -> None:
        return None


async def exchange(app: ASGIApp, sink: list[int]) -> None:
    """One request through the app; `sink` gets each body message's length."""
    messages = [{"type": "http.request", "body": BODY, "more_body": False}]
    parked = asyncio.get_running_loop().create_future()

    async def receive() -> Message:
        if messages:
            return messages.pop()
        return await parked  # the caller stays: the disconnect listener waits

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            assert message["status"] == 200, message
        else:
            sink.append(len(message.get("body", b"")))

    request = scope()
    request[DIRECT_BODY] = MemoryBody(sink)
    await app(request, receive, send)


async def requests(app: ASGIApp, count: int) -> list[int]:
    sink: list[int] = []
    for _ in range(count):
        await exchange(app, sink)
    return sink


def cpu_per_request(apps: dict[str, ASGIApp], count: int, rounds: int) -> dict[str, float]:
    """Best process CPU seconds per request of each app, the apps alternating each round."""
    best = dict.fromkeys(apps, float("inf"))

    async def go() -> None:
        for app in apps.values():
            await requests(app, 50)  # warm: imports, pools, caches
        for _ in range(rounds):
            for name, app in apps.items():
                started = time.process_time()
                await requests(app, count)
                best[name] = min(best[name], (time.process_time() - started) / count)

    asyncio.run(go())
    return best


def events_per_stream(app: ASGIApp) -> int:
    """The events the caller gets in one stream (the same for both: metering is unseen)."""

    async def go() -> int:
        sink: list[int] = []
        await exchange(app, sink)
        return len([size for size in sink if size])

    return asyncio.run(go())


def run() -> list[str]:
    apps = {name: build(*configuration) for name, configuration in CONFIGURATIONS.items()}
    events = events_per_stream(apps["proxy"])
    best = cpu_per_request(apps, count=400, rounds=5)
    lines = [
        f"one streamed exchange in-process, no sockets: {events} events a stream;"
        " proxy and metered as `llm-proxy serve` builds them, function with nothing metered"
    ]
    for name, seconds in best.items():
        lines.append(
            row(
                f"CPU per request, {name}",
                f"{seconds * 1e6:.0f} us ({seconds * 1e6 / events:.1f} us/event)",
            )
        )
    floor = best["function"]
    for name in ("proxy", "metered"):
        lines.append(
            row(
                f"{name} / function, and cost per relayed event",
                f"{best[name] / floor:.2f}x, {(best[name] - floor) * 1e6 / events:+.1f} us",
            )
        )
    return lines


def profile(name: str = "", count: int = 2000, top: int = 40) -> list[str]:
    name = name or os.environ.get("BENCH_EXCHANGE_PROFILE", "metered")
    app = build(*CONFIGURATIONS[name])
    profiler = cProfile.Profile()

    async def go() -> None:
        await requests(app, 50)
        profiler.enable()
        await requests(app, count)
        profiler.disable()

    asyncio.run(go())
    stats = pstats.Stats(profiler)
    stats.sort_stats("tottime")
    lines = [f"{name}: cProfile of {count} streamed exchanges, by own time"]
    entries: list[tuple[float, float, int, str]] = []
    for (path, line, function), (_, calls, own, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        entries.append((own, cumulative, calls, f"{function} ({_short(path)}:{line})"))
    entries.sort(reverse=True)
    for own, cumulative, calls, where in entries[:top]:
        lines.append(
            f"  {own / count * 1e6:7.1f} us own {cumulative / count * 1e6:7.1f} us cum"
            f" {calls / count:6.1f} calls  {where}"
        )
    return lines


def _short(path: str) -> str:
    for marker in ("site-packages/", "lib/python3.12/", "/work/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path
