"""The reply's tap chain (core/proxy/taps.py): each tap sees what the taps before it
passed on, and what they held back comes out, in order, at the end."""

from __future__ import annotations

import gc
import weakref

from core.protocols import WIRES, Usage
from core.proxy.scrub import Scrubber
from core.proxy.taps import build_taps, scrubs_body
from core.stages import ReplyTicket
from core.types import RequestLog
from core.usage.meter import UsageMeter
from core.usage.splice import UsageChunkFilter

KEY = b"sk-fake-key-0123456789"
SSE = [(b"content-type", b"text/event-stream")]

# An OpenAI stream as the upstream sends it when the proxy asked for usage, event by event.
METERED_EVENTS = [
    b'data: {"id":"c","choices":[{"delta":{"content":"a"}}],"usage":null}\n\n',
    b'data: {"id":"c","choices":[{"delta":{"content":"b"}}],"usage":null}\n\n',
    b'data: {"id":"c","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}\n\n',
    b"data: [DONE]\n\n",
]
PLAIN = (
    b'data: {"id":"c","choices":[{"delta":{"content":"a"}}]}\n\n'
    b'data: {"id":"c","choices":[{"delta":{"content":"b"}}]}\n\n'
    b"data: [DONE]\n\n"
)


class Copy(ReplyTicket):
    def __init__(self) -> None:
        self.headers = []
        self.started: tuple[int, list[tuple[bytes, bytes]]] | None = None
        self.chunks: list[bytes] = []

    def start(self, status: int, headers: list[tuple[bytes, bytes]], upstream: object) -> None:
        self.started = (status, headers)

    def feed(self, chunk: bytes) -> None:
        assert self.started is not None, "the copy is fed only once it knows its headers"
        self.chunks.append(chunk)


def _log() -> RequestLog:
    log = RequestLog(request_id="r", method="POST", path="/v1/chat/completions")
    log.started = 0.0
    return log


def test_the_meter_reads_what_the_upstream_sent_and_the_caller_gets_it_without_the_option() -> None:
    meter = UsageMeter(WIRES["openai"])
    copy, log = Copy(), _log()
    taps = build_taps(
        status=200,
        headers=SSE,
        meter=meter,
        usage_filter=UsageChunkFilter(),
        copy=copy,
        log=log,
    )
    assert taps.changes_length
    assert taps.copy is not None
    taps.copy.start(200, SSE, SSE)
    out = b"".join(taps.feed(event) for event in METERED_EVENTS) + taps.flush()  # type: ignore[misc]
    assert out == PLAIN
    # The usage-only event the filter takes out was still read by the meter before it.
    assert meter.finish() == Usage(1, 2)
    assert b"".join(copy.chunks) == PLAIN
    assert taps.log is log  # the relay counts what it sends (tests/proxy/test_relay.py)


def test_an_error_body_is_scrubbed_before_the_cache_copy() -> None:
    body = b'{"error":"bad key ' + KEY + b' given"}'
    copy, log = Copy(), _log()
    taps = build_taps(
        status=401,
        headers=[(b"content-type", b"application/json")],
        scrubber=Scrubber([KEY.decode()]),
        copy=copy,
        log=log,
    )
    assert taps.feed is not None
    # Fed in pieces that split the key; the copy waits for its headers (a whole body's
    # length is known only once the chain ran).
    out = b"".join(taps.feed(body[i : i + 5]) for i in range(0, len(body), 5)) + taps.flush()
    assert out == b'{"error":"bad key [redacted] given"}'
    assert taps.copy is not None
    taps.copy.start(401, [], [])
    assert b"".join(copy.chunks) == out


def test_every_reply_is_scrubbed_and_a_proxy_without_keys_has_no_taps() -> None:
    # Issue 19: an upstream may echo the key in a 200 body too.
    assert all(scrubs_body(status) for status in (200, 302, 401, 500))
    scrubbed = build_taps(status=200, headers=SSE, scrubber=Scrubber([KEY.decode()]))
    assert scrubbed.feed is not None
    echoed = scrubbed.feed(b"data: " + KEY + b"\n\n") + scrubbed.flush()
    assert KEY not in echoed and b"[redacted]" in echoed
    plain = build_taps(status=200, headers=SSE, scrubber=Scrubber([]))
    assert plain.feed is None and not plain.changes_length and not plain.inflates


def test_the_filter_and_the_meter_agree_whatever_the_chunking() -> None:
    """Whole events (the usual case, read without splitting) and events cut anywhere give
    the same stream and the same usage."""
    stream = b"".join(METERED_EVENTS)
    cuts = [METERED_EVENTS, [stream[i : i + 7] for i in range(0, len(stream), 7)], [stream]]
    for chunks in cuts:
        meter = UsageMeter(WIRES["openai"])
        meter.start(SSE)
        chunk_filter = UsageChunkFilter()
        out = b""
        for chunk in chunks:
            meter.feed(chunk)
            out += chunk_filter(chunk)
        assert out + chunk_filter.flush() == PLAIN
        assert meter.finish() == Usage(1, 2)


def test_a_replys_taps_are_freed_when_it_ends_not_left_to_the_garbage_collector() -> None:
    """At 500 streams a chain kept alive by a reference cycle lives on until a full
    collection: memory, and collector time walking every open stream."""
    gc.disable()
    try:
        meter = UsageMeter(WIRES["openai"])
        freed = weakref.ref(meter)
        taps = build_taps(
            status=200,
            headers=SSE,
            meter=meter,
            usage_filter=UsageChunkFilter(),
            scrubber=Scrubber([KEY.decode()]),
            log=_log(),
        )
        assert taps.feed is not None
        for event in METERED_EVENTS:
            taps.feed(event)
        taps.flush()
        del taps, meter
        assert freed() is None
    finally:
        gc.enable()


def _fused_and_in_turn(metered: bool, chunks: list[bytes], key: bytes = KEY) -> list[object]:
    """What the caller gets and the meter reads with the fused feed build_taps makes, and
    with the same taps run one after another."""
    results: list[object] = []
    for fused in (True, False):
        meter = UsageMeter(WIRES["openai"]) if metered else None
        taps = build_taps(
            status=200,
            headers=SSE,
            meter=meter,
            usage_filter=UsageChunkFilter() if metered else None,
            scrubber=Scrubber([key.decode()]),
        )
        assert taps.feed is not None
        if fused:
            # The chain is the usage tap and the scrubber, or the scrubber alone: one
            # function, not the taps' own feeds.
            assert taps.feed not in [tap.feed for tap in taps.chain]
            out = b"".join(taps.feed(chunk) for chunk in chunks)
        else:
            out = b""
            for chunk in chunks:
                for tap in taps.chain:
                    chunk = tap.feed(chunk)
                out += chunk
        out += taps.flush()
        results.append((out, meter.finish() if meter is not None else None))
    return results


def _cuts(stream: bytes) -> list[list[bytes]]:
    events = [event + b"\n\n" for event in stream.split(b"\n\n") if event]
    return [
        events,
        [b"".join(events[i : i + 3]) for i in range(0, len(events), 3)],
        [stream[i : i + 11] for i in range(0, len(stream), 11)],
        [stream],
    ]


def test_the_fused_feed_passes_on_and_meters_what_the_taps_in_turn_do() -> None:
    """The common case inlined (core/proxy/taps.py): the same bytes to the caller and the
    same usage as the two taps one after another, for streams with the key whole, split
    over two chunks or masked, content that says usage, escapes, and a last byte that may
    begin the key, however the stream is cut."""
    content = [
        b"plain",
        b"key " + KEY + b" inside",
        b"masked sk-...6789",
        b"says usage and sage",
        b"escaped \\u0041 and \\\\",
        b"ends in sk-fa",
    ]
    for metered in (True, False):
        events = [
            b'data: {"id":"c","choices":[{"delta":{"content":"'
            + text
            + b'"}}]'
            + (b',"usage":null' if metered else b"")
            + b"}\n\n"
            for text in content
        ]
        if metered:
            events.append(
                b'data: {"id":"c","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}\n\n'
            )
        events.append(b"data: [DONE]\n\n")
        stream = b"".join(events)
        for chunks in [*_cuts(stream), [events[0], events[-1][:3] + KEY[:6], KEY[6:]]]:
            fused, in_turn = _fused_and_in_turn(metered, chunks)
            assert fused == in_turn
            assert KEY not in fused[0]  # type: ignore[index]
