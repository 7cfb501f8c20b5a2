"""The key scrubber (core/proxy/scrub.py): keys found even split across chunks, and only
what could begin a key held back."""

from __future__ import annotations

import gzip

import httpx

from core.proxy.scrub import Scrubber
from tests.support.metered import AUTH, metered, models_or
from tests.support.scripted_upstream import ScriptedUpstream


def test_keys_are_scrubbed_even_split_across_chunks() -> None:
    scrubber = Scrubber(["sk-fake-key-0123456789"])
    body = b'{"error":"bad key sk-fake-key-0123456789 given"}'
    for size in (1, 5, 13, len(body)):
        stream = scrubber.stream()
        out = (
            b"".join(stream(body[i : i + size]) for i in range(0, len(body), size)) + stream.flush()
        )
        assert out == b'{"error":"bad key [redacted] given"}'
    assert scrubber.headers([(b"location", b"/x?key=sk-fake-key-0123456789")]) == [
        (b"location", b"/x?key=[redacted]")
    ]


def test_the_stream_scrubber_holds_back_only_what_could_begin_a_key() -> None:
    key = "sk-fake-key-0123456789wxyz"
    scrubber = Scrubber([key])
    stream = scrubber.stream(error=False)
    event = b'data: {"choices":[{"delta":{"content":"hello world"}}]}\n\n'
    assert stream(event) == event  # an event goes out whole, at once
    assert stream(b"a word ending the chunk") == b"a word ending the chunk"
    assert stream(b"quoted: sk-fa") == b"quoted: "  # held: it may be a key
    assert stream(b"ke-and-more") == b"sk-fake-and-more"  # it was not
    assert stream(b"masked: sk-f****") == b"masked: "
    assert stream(b"**wxyz, see") + stream.flush() == b"[redacted], see"
    # Cut anywhere, the stream comes out as the whole body scrubbed at once.
    text = f'{{"m":"{key} and sk-...wxyz and sk-fake-****wxyz."}}'.encode()
    for cut in range(len(text)):
        stream = scrubber.stream(error=False)
        assert stream(text[:cut]) + stream(text[cut:]) + stream.flush() == scrubber(text)
    assert key.encode() not in scrubber(text) and b"wxyz" not in scrubber(text)


def test_a_reply_compressed_member_by_member_reaches_the_caller_whole() -> None:
    """A server may compress each flush as a gzip member of its own (RFC 1952). The
    scrubber, which inflates such a reply to take the proxy's keys out, stopped at the first
    member's end: the caller got the first event and nothing after it, metered or not."""
    events = [f'data: {{"n": {n}}}\n\n'.encode() for n in range(5)]
    upstream = ScriptedUpstream(
        models_or(
            lambda r: (
                200,
                [("content-type", "text/event-stream"), ("content-encoding", "gzip")],
                [(0.01, gzip.compress(event)) for event in events],
            )
        )
    )
    for extra in ({}, {"RATE_LIMIT_TOKENS": "100000"}):
        with metered(upstream, **extra) as proxy:
            reply = httpx.post(
                f"{proxy.url}/v1/chat/completions",
                json={"model": "gpt-test", "stream": True, "messages": []},
                headers=AUTH,
                timeout=20,
            )
        assert reply.status_code == 200
        assert reply.content == b"".join(events)
