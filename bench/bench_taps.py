"""The reply's taps in-process (issue 18): CPU per event of the chains a reply can get.

An OpenAI stream as the upstream sends it when the proxy asked for usage (every event with
`"usage":null`, then a usage-only event), one event a chunk as it arrives, through the chain
`build_taps` makes: the plain proxy's (the scrubber, for the upstream key), the metered
proxy's (meter, usage-chunk filter, scrubber), and an error reply's (scrubber). The access
log's byte count is the relay's own, not a tap. Process CPU time,
best of five, so the figures hold on a busy machine better than the streams bench's.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from bench.harness import row
from core.protocols import WIRES
from core.proxy.scrub import Scrubber
from core.proxy.taps import Taps, build_taps
from core.types import RequestLog
from core.usage.meter import UsageMeter
from core.usage.splice import UsageChunkFilter

SSE = [(b"content-type", b"text/event-stream")]
_BASE = {
    "id": "chatcmpl-bench",
    "object": "chat.completion.chunk",
    "created": 1,
    "model": "gpt-4o-mini",
    "service_tier": "default",
    "system_fingerprint": "fp_bench",
}


def metered_stream(words: int = 37) -> list[bytes]:
    def event(payload: object) -> bytes:
        return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"

    events = [
        event(
            {
                **_BASE,
                "choices": [{"index": 0, "delta": {"content": f"word{i} "}, "finish_reason": None}],
                "usage": None,
            }
        )
        for i in range(words)
    ]
    usage = {"prompt_tokens": 10, "completion_tokens": words, "total_tokens": 10 + words}
    events.append(event({**_BASE, "choices": [], "usage": usage}))
    events.append(b"data: [DONE]\n\n")
    return events


def _log() -> RequestLog:
    log = RequestLog(request_id="bench", method="POST", path="/v1/chat/completions")
    log.started = time.perf_counter()
    return log


SCRUBBER = Scrubber(["sk-bench-fake-key-0123456789"])


def plain() -> Taps:
    return build_taps(status=200, headers=SSE, scrubber=SCRUBBER, log=_log())


def metered() -> Taps:
    return build_taps(
        status=200,
        headers=SSE,
        meter=UsageMeter(WIRES["openai"]),
        usage_filter=UsageChunkFilter(),
        scrubber=SCRUBBER,
        log=_log(),
    )


def scrubbed() -> Taps:
    return build_taps(status=500, headers=SSE, scrubber=SCRUBBER)


def us_per_event(build: Callable[[], Taps], events: list[bytes], replies: int = 2000) -> float:
    best = float("inf")
    for _ in range(5):
        started = time.process_time()
        for _ in range(replies):
            taps = build()
            feed = taps.feed
            if feed is not None:
                for chunk in events:
                    feed(chunk)
                taps.flush()
            if taps.meter is not None:
                taps.meter.finish()
        best = min(best, (time.process_time() - started) / replies / len(events))
    return best * 1e6


def run() -> list[str]:
    events = metered_stream()
    lines = [f"reply taps in-process: {len(events)} events a reply, one event a chunk"]
    for name, build in (
        ("plain proxy (scrubber)", plain),
        ("metered (meter, usage filter, scrubber)", metered),
        ("error reply (scrubber)", scrubbed),
    ):
        lines.append(row(f"taps CPU per event, {name}", f"{us_per_event(build, events):.2f} us"))
    return lines
