"""The usage readers (core/usage/meter.py, splice.py, prices.py): the include_usage splice
and its filter, the meter on each protocol, prices."""

from __future__ import annotations

import gzip
import itertools
import json
import re

import pytest

from core.protocols import WIRES, Usage
from core.usage.meter import UsageMeter
from core.usage.prices import PriceTable, parse_prices
from core.usage.splice import UsageChunkFilter, ask_for_stream_usage, event_ends


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            b'{"model":"m","stream":true}',
            b'{"stream_options":{"include_usage":true},"model":"m","stream":true}',
        ),
        (
            b'{"stream":true, "stream_options": {"include_usage": false}, "x":"\\u00e9"}',
            b'{"stream":true, "stream_options": {"include_usage": true}, "x":"\\u00e9"}',
        ),
        (
            b'{"stream":true,"stream_options":{}}',
            b'{"stream":true,"stream_options":{"include_usage":true}}',
        ),
        (
            b'{"stream":true,"stream_options":null,"tools":[{"stream_options":1}]}',
            b'{"stream":true,"stream_options":{"include_usage":true},"tools":[{"stream_options":1}]}',
        ),
    ],
)
def test_include_usage_is_spliced_into_the_bytes(body: bytes, expected: bytes) -> None:
    spliced = ask_for_stream_usage(body, json.loads(body))
    assert spliced == expected
    assert json.loads(spliced)["stream_options"]["include_usage"] is True


def test_the_filter_gives_back_the_unmetered_stream() -> None:
    plain = (
        b'data: {"id":"c","choices":[{"delta":{"content":"a"}}]}\n\n'
        b'data: {"id":"c","choices":[{"delta":{"content":"b"}}]}\n\n'
        b"data: [DONE]\n\n"
    )
    metered = (
        b'data: {"id":"c","choices":[{"delta":{"content":"a"}}],"usage":null}\n\n'
        b'data: {"id":"c","choices":[{"delta":{"content":"b"}}],"usage":null}\n\n'
        b'data: {"id":"c","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}\n\n'
        b"data: [DONE]\n\n"
    )
    for size in (1, 7, 64, len(metered)):
        chunk_filter = UsageChunkFilter()
        out = b"".join(chunk_filter(metered[i : i + size]) for i in range(0, len(metered), size))
        assert out + chunk_filter.flush() == plain


def _meter(
    shape: str, content_type: bytes, chunks: list[bytes], encoding: bytes = b""
) -> Usage | None:
    meter = UsageMeter(WIRES[shape])
    headers = [(b"content-type", content_type)]
    if encoding:
        headers.append((b"content-encoding", encoding))
    meter.start(headers)
    for chunk in chunks:
        meter.feed(chunk)
    return meter.finish()


def test_events_end_where_the_blank_line_pattern_says() -> None:
    # Every string of up to 9 bytes of `a`, CR and LF: the same spans as the regex.
    pattern = re.compile(rb"\r?\n\r?\n")
    for size in range(10):
        for letters in itertools.product(b"a\r\n", repeat=size):
            data = bytes(letters)
            assert event_ends(data) == [m.span() for m in pattern.finditer(data)], data


def test_the_meter_reads_each_protocol() -> None:
    openai = b'{"usage":{"prompt_tokens":3,"completion_tokens":4,"prompt_tokens_details":{"cached_tokens":2}}}'
    assert _meter("openai", b"application/json", [openai]) == Usage(3, 4, 2)
    responses = b'data: {"type":"response.completed","response":{"usage":{"input_tokens":5,"output_tokens":6}}}\n\n'
    assert _meter("openai", b"text/event-stream", [responses[:10], responses[10:]]) == Usage(5, 6)
    anthropic = [
        b'data: {"type":"message_start","message":{"usage":{"input_tokens":7,"cache_read_input_tokens":3,"output_tokens":1}}}\n\n',
        b'data: {"type":"message_delta","usage":{"output_tokens":9}}\n\n',
    ]
    assert _meter("anthropic", b"text/event-stream", anthropic) == Usage(10, 9, 3)
    gemini = b'[{"usageMetadata":{"promptTokenCount":2}},\r\n{"usageMetadata":{"promptTokenCount":2,"candidatesTokenCount":8,"thoughtsTokenCount":1}}]'
    assert _meter("gemini", b"application/json", [gemini]) == Usage(2, 9)
    assert _meter("openai", b"application/json", [gzip.compress(openai)], b"gzip") == Usage(3, 4, 2)
    assert _meter("openai", b"application/json", [b"xx"], b"br") is None
    assert _meter("openai", b"application/json", [b'{"error":{}}']) is None


def test_the_meter_keeps_a_bounded_tail_of_huge_replies() -> None:
    filler = b'{"choices":[{"text":"' + b"x" * (20 * 1024 * 1024) + b'"}],'
    usage = b'"usage":{"prompt_tokens":1,"completion_tokens":2}}'
    meter = UsageMeter(WIRES["openai"])
    meter.start([(b"content-type", b"application/json")])
    for i in range(0, len(filler), 1 << 20):
        meter.feed(filler[i : i + (1 << 20)])
        assert len(meter._buffer) <= 9 * 1024 * 1024
    meter.feed(usage)
    assert meter.finish() == Usage(1, 2)


def test_prices_match_the_most_specific_pattern_and_overrides_win() -> None:
    table = PriceTable(
        parse_prices(
            '{"gpt-4o-mini*": {"input": 1, "output": 2}, "fake-*": {"input": 10, "output": 100}}'
        )
    )
    assert (
        table.find("gpt-4o-2024-08-06") is not None and table.find("gpt-4o-2024-08-06").input == 2.5
    )  # type: ignore[union-attr]
    assert table.find("gpt-4o-mini-2024-07-18").input == 1  # type: ignore[union-attr]
    assert table.find("fake-model").output == 100  # type: ignore[union-attr]
    assert table.find("unknown-model") is None
    price = table.find("fake-model")
    assert price is not None and price.cost_usd(Usage(1_000_000, 0)) == 10


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            b'{"model": "m", "stream": true, "stream_options": {"include_usage": false}, "n": 1}',
            b'{"model": "m", "stream": true, "stream_options": {"include_usage": true}, "n": 1}',
        ),
        (
            b'{"stream": true, "stream_options" : { "include_usage" :  null }, "n": 1}',
            b'{"stream": true, "stream_options" : { "include_usage" :  true }, "n": 1}',
        ),
        (
            b'{"stream": true, "stream_options": { "other": 1 }, "n": 2}',
            b'{"stream": true, "stream_options": {"include_usage":true, "other": 1 }, "n": 2}',
        ),
        (
            b'{"stream": true, "stream_options": {  }, "n": 2}',
            b'{"stream": true, "stream_options": {"include_usage":true  }, "n": 2}',
        ),
        (
            b'{"stream": true, "stream_options" :  null , "n": 2}',
            b'{"stream": true, "stream_options" :  {"include_usage":true} , "n": 2}',
        ),
        # The member is found at the top level only: not inside a string (escaped quotes
        # and brackets included) nor in a nested object or list.
        (
            b'{"messages": [{"content": "a \\" \\"stream_options\\": {[", '
            b'"x": {"stream_options": {"include_usage": false}}}], '
            b'"stream_options": {"include_usage": false}, "stream": true}',
            b'{"messages": [{"content": "a \\" \\"stream_options\\": {[", '
            b'"x": {"stream_options": {"include_usage": false}}}], '
            b'"stream_options": {"include_usage": true}, "stream": true}',
        ),
        (
            b'{"stream": true, "stream_options":{"include_usage": false}, "n": 1}',
            b'{"stream": true, "stream_options":{"include_usage": true}, "n": 1}',
        ),
        # A nested object closed before a nested lookalike: the depth is counted back down.
        (
            b'{"messages": [{"a": {}, "stream_options": {"include_usage": false}}], '
            b'"stream_options": {"include_usage": false}}',
            b'{"messages": [{"a": {}, "stream_options": {"include_usage": false}}], '
            b'"stream_options": {"include_usage": true}}',
        ),
    ],
    ids=[
        "false",
        "null-spaced",
        "other-option",
        "empty",
        "null",
        "nested-lookalikes",
        "no-space",
        "closed-then-nested",
    ],
)
def test_the_splice_keeps_the_callers_bytes_however_they_are_spaced(
    body: bytes, expected: bytes
) -> None:
    """Only include_usage changes: the rest reaches the upstream as the caller wrote it
    (rewriting the document would respace it, and reorder nothing a test could see)."""
    assert ask_for_stream_usage(body, json.loads(body)) == expected


def test_a_name_spelt_with_an_escape_keeps_the_callers_other_stream_options() -> None:
    """The bytes cannot be spliced there, so the body is written again: with every option
    the caller set, and include_usage on."""
    body = b'{"stream": true, "stream\\u005foptions": {"include_obfuscation": false}}'
    sent = json.loads(ask_for_stream_usage(body, json.loads(body)))
    assert sent["stream_options"] == {"include_obfuscation": False, "include_usage": True}


@pytest.mark.parametrize(
    ("event", "usage_only"),
    [
        (b'data: {"choices":[],"usage":{"prompt_tokens":1}}', True),
        (b'data: {"usage": {"prompt_tokens":1}, "choices": [ ]}', True),
        (b'data: {"id":"c","usage":{"prompt_tokens":1}}', True),
        (b'data: {"\\u0075sage":{"prompt_tokens":1},"choices":[]}', True),
        # Content beside the usage (some providers put both in the last chunk): the
        # caller must get it.
        (b'data: {"choices":[{"delta":{"content":"x"}}],"usage":{"prompt_tokens":1}}', False),
        (b'data: {"usage":{"prompt_tokens":1},"ch\\u006fices":[{"delta":{"content":"x"}}]}', False),
        (b'data: {"choices":[{"delta":{"content":"x"}}],"usage":null}', False),
        (b'data: {"choices":[{"delta":{"content":"usage"}}]}', False),
    ],
    ids=["empty", "spaced", "no-choices", "escaped-usage", "content", "escaped", "null", "word"],
)
def test_only_the_chunk_that_carries_nothing_but_usage_is_taken_out(
    event: bytes, usage_only: bool
) -> None:
    from core.usage.splice import is_usage_only

    assert is_usage_only(event) is usage_only


def test_usage_is_read_from_data_lines_written_without_a_space() -> None:
    """`data:{...}` is as valid an event-stream line as `data: {...}`: the caller is charged
    what the reply used, not its whole reservation."""
    meter = UsageMeter(WIRES["openai"])
    meter.start([(b"content-type", b"text/event-stream")])
    meter.feed(b'data:{"choices":[{"delta":{"content":"hi"}}]}\n\n')
    meter.feed(b'data:{"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3}}\n\n')
    meter.feed(b"data:[DONE]\n\n")
    assert meter.finish() == Usage(7, 3)


def test_an_event_over_the_filters_bound_reaches_the_caller_unchanged() -> None:
    """Past 1 MiB without an event boundary the filter stops holding the bytes back and
    passes them on as they came, and what follows too."""
    chunks = [b"data: " + b"x" * (1024 * 1024 + 1), b"\n\n", b"data: [DONE]\n\n"]
    usage_filter = UsageChunkFilter()
    sent = b"".join(usage_filter(chunk) for chunk in chunks) + usage_filter.flush()
    assert sent == b"".join(chunks)
