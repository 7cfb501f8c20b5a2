"""The meter and the usage-chunk filter on one pass (core/usage/usage_tap.py) read and pass
on exactly what the two do in a row: the same bytes to the caller, the same usage, the same
unfinished line held, whatever the stream and however it is cut."""

from __future__ import annotations

import gzip
import random

import pytest

from core.protocols import WIRES
from core.usage.meter import UsageMeter
from core.usage.splice import UsageChunkFilter
from core.usage.usage_tap import UsageTap

SSE = [(b"content-type", b"text/event-stream")]
USAGE = b'{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8}'


def _openai(*contents: bytes, usage_event: bytes | None = None) -> bytes:
    events = [
        b'data: {"id":"c","choices":[{"index":0,"delta":{"content":"' + text + b'"}}],'
        b'"usage":null}\n\n'
        for text in contents
    ]
    events.append(usage_event or b'data: {"id":"c","choices":[],"usage":' + USAGE + b"}\n\n")
    events.append(b"data: [DONE]\n\n")
    return b"".join(events)


STREAMS = {
    # Long enough that its gzip holds many newline bytes (see the compressed case below).
    "long": _openai(*(b"word%d " % i for i in range(300))),
    "asked for usage": _openai(b"a", b"b", b"c"),
    # Content that says "usage" or "sage", and escapes that are not `\u`.
    "content mentions usage": _openai(b"usage", b"mes sage", b'say \\"usage\\":null', b"x\\ny"),
    "spaced JSON": (
        b'data: {"id": "c", "choices": [{"delta": {"content": "a"}}], "usage": null}\n\n'
        b'data: {"id": "c", "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2}}'
        b"\n\ndata: [DONE]\n\n"
    ),
    "usage first": (
        b'data: {"usage":null,"id":"c","choices":[{"delta":{"content":"a"}}]}\n\n'
        b'data: {"usage":{"prompt_tokens":4,"completion_tokens":1},"choices":[]}\n\n'
    ),
    "names with escapes": (
        b'data: {"id":"c","choices":[{"delta":{"content":"a"}}],"\\u0075sage":null}\n\n'
        b'data: {"choices":[],"\\u0075sage":{"prompt_tokens":6,"completion_tokens":7}}\n\n'
    ),
    # No "sage" left to see: only the escapes say it is usage.
    "names all escapes": (
        b'data: {"id":"c","choices":[{"delta":{"content":"a"}}],"usage":null}\n\n'
        b'data: {"choices":[],"\\u0075\\u0073\\u0061\\u0067\\u0065":'
        b'{"prompt_tokens":6,"completion_tokens":7}}\n\n'
    ),
    # A plain `"usage":null` beside a name spelt with escapes, on one line.
    "null beside an escaped name": (
        b'data: {"id":"c","choices":[{"delta":{"content":"a"}}],"usage":null}\n\n'
        b'data: {"usage":null,"choices":[],"\\u0075\\u0073\\u0061\\u0067\\u0065":'
        b'{"prompt_tokens":2,"completion_tokens":9}}\n\n'
    ),
    "usage beside choices": _openai(
        b"a",
        usage_event=b'data: {"id":"c","choices":[{"delta":{}}],"usage":' + USAGE + b"}\n\n",
    ),
    "CRLF events": _openai(b"a", b"b").replace(b"\n\n", b"\r\n\r\n"),
    "not asked (no usage)": (
        b'data: {"id":"c","choices":[{"delta":{"content":"a"}}]}\n\ndata: [DONE]\n\n'
    ),
}


def _cuts(stream: bytes) -> list[list[bytes]]:
    events = [event + b"\n\n" for event in stream.split(b"\n\n") if event]
    rng = random.Random(len(stream))  # noqa: S311 (reproducible cuts, not secrets)
    ragged, at = [], 0
    while at < len(stream):
        step = rng.randint(1, 90)
        ragged.append(stream[at : at + step])
        at += step
    sevens = [stream[i : i + 7] for i in range(0, len(stream), 7)]
    pairs = [b"".join(events[i : i + 2]) for i in range(0, len(events), 2)]
    # Cut between an event's two newlines: the next chunk ends an event the filter holds.
    between = [events[0][:-1], b"\n" + events[1], *events[2:]] if len(events) > 2 else events
    return [events, ragged, sevens, pairs, between, [stream]]


def _two_taps(
    wire: str, headers: list[tuple[bytes, bytes]], chunks: list[bytes], filtered: bool
) -> tuple[bytes, object, bytes]:
    meter = UsageMeter(WIRES[wire])
    meter.start(headers)
    chunk_filter = UsageChunkFilter() if filtered else None
    out = b""
    for chunk in chunks:
        meter.feed(chunk)
        out += chunk_filter(chunk) if chunk_filter is not None else chunk
    out += chunk_filter.flush() if chunk_filter is not None else b""
    return out, meter.finish(), meter._pending


def _one_tap(
    wire: str,
    headers: list[tuple[bytes, bytes]],
    chunks: list[bytes],
    filtered: bool,
    built_first: bool = False,
) -> tuple[bytes, object, bytes]:
    meter = UsageMeter(WIRES[wire])
    if built_first:  # a tap built before its meter started: the long way, the same result
        tap = UsageTap(meter, UsageChunkFilter() if filtered else None)
        meter.start(headers)
    else:
        meter.start(headers)
        tap = UsageTap(meter, UsageChunkFilter() if filtered else None)
    out = b"".join(tap.feed(chunk) for chunk in chunks) + tap.flush()
    return out, meter.finish(), meter._pending


@pytest.mark.parametrize("filtered", [True, False], ids=["filtered", "meter only"])
@pytest.mark.parametrize("name", sorted(STREAMS))
def test_one_pass_reads_and_passes_on_what_the_two_taps_do(name: str, filtered: bool) -> None:
    for chunks in _cuts(STREAMS[name]):
        two = _two_taps("openai", SSE, chunks, filtered)
        assert _one_tap("openai", SSE, chunks, filtered) == two
        assert _one_tap("openai", SSE, chunks, filtered, built_first=True) == two


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_the_meter_reads_the_same_usage_however_the_stream_is_cut(name: str) -> None:
    """One event a chunk (each chunk tested whole), or several a chunk, as a relay that
    fell behind reads them (each line tested on its own): the same usage, and some usage
    wherever the stream reports it."""
    stream = STREAMS[name]
    readings = set()
    for chunks in _cuts(stream):
        meter = UsageMeter(WIRES["openai"])
        meter.start(SSE)
        for chunk in chunks:
            meter.feed(chunk)
        readings.add(meter.finish())
    assert len(readings) == 1
    [usage] = readings
    assert (usage is None) == (name == "not asked (no usage)")


def test_anthropic_events_and_a_compressed_or_whole_reply_read_alike() -> None:
    anthropic = (
        b'event: message_start\ndata: {"type":"message_start","message":{"usage":'
        b'{"input_tokens":9,"output_tokens":1}}}\n\n'
        b'event: content_block_delta\ndata: {"type":"content_block_delta","delta":'
        b'{"type":"text_delta","text":"hi"}}\n\n'
        b'event: message_delta\ndata: {"type":"message_delta","usage":{"output_tokens":4}}\n\n'
    )
    for chunks in _cuts(anthropic):
        assert _one_tap("anthropic", SSE, chunks, False) == _two_taps(
            "anthropic", SSE, chunks, False
        )
    packed = gzip.compress(STREAMS["long"], mtime=0)
    gzipped = [*SSE, (b"content-encoding", b"gzip")]
    # Cut after each newline byte of the compressed body: chunks that look like whole lines.
    chunks = [piece + b"\n" for piece in packed.split(b"\n")]
    chunks[-1] = chunks[-1][:-1]
    assert _one_tap("openai", gzipped, chunks, False) == _two_taps("openai", gzipped, chunks, False)
    whole = [(b"content-type", b"application/json")]
    body = [b'{"id":"c","choices":[],"usage":' + USAGE + b"}\n"]
    assert _one_tap("openai", whole, body, False) == _two_taps("openai", whole, body, False)
