"""The proxy settles before it relays a stream's last event (core/proxy/stream_end.py).

The openai SDK stops reading at `data: [DONE]` and can send its next request at once; the
upstream's end of body may come later. Settled only at that end, the next request found
this one's reservation still held. The unit tests pin which chunk counts as the last event,
and that nothing a caller can make a model write passes for one (settling early on a fake
end would charge a stream before its usage event arrived)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import openai
import pytest

from core.app import create_app
from core.config import load_settings
from core.protocols import AnthropicWire, GeminiWire, OpenAIWire
from core.proxy.stream_end import StreamEnd, stream_end
from tests.support.metered import AUTH, EVENTS, metered, models_or, remaining
from tests.support.polling import wait_until
from tests.support.raw_upstream import raw_upstream
from tests.support.scripted_upstream import ScriptedUpstream, openai_chunks, sse
from tests.support.servers import FAKE_TOKEN, proxy_env, serve_in_thread

SSE_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8")]
USAGE = {"prompt_tokens": 30, "completion_tokens": 70, "total_tokens": 100}


def chunks_ending(wire: Any, chunks: list[bytes]) -> list[int]:
    """The indices of the chunks the relay takes for the stream's end (its own test, then
    the detector's)."""
    end = StreamEnd(wire)
    found = []
    previous = b""
    for index, chunk in enumerate(chunks):
        if chunk.endswith(end.tail) and end(chunk, previous):
            found.append(index)
        previous = chunk
    return found


def text_event(text: str) -> bytes:
    data = {"choices": [{"index": 0, "delta": {"content": text}}]}
    return f"data: {json.dumps(data)}\n\n".encode()


def test_done_is_found_alone_or_after_other_events() -> None:
    events = sse({"choices": []}, "[DONE]")
    assert chunks_ending(OpenAIWire(), events) == [1]
    assert chunks_ending(OpenAIWire(), [b"".join(events)]) == [0]
    assert chunks_ending(OpenAIWire(), [b"data:[DONE]\n\n"]) == [0]


def test_the_end_is_found_in_a_chunk_of_any_size() -> None:
    """A search window counted from the chunk's end once started past the mark in chunks
    of 81 to 95 bytes (a ping and message_stop in one 87-byte chunk went unseen)."""
    chunk = (
        b'event: ping\ndata: {"type": "ping"}\n\n'
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    )
    assert chunks_ending(AnthropicWire(), [chunk]) == [0]
    for size in range(0, 200):
        padded = b"data: " + b"x" * size + b"\n\ndata: [DONE]\n\n"
        assert chunks_ending(OpenAIWire(), [padded]) == [0], len(padded)


def test_only_the_first_end_counts() -> None:
    assert chunks_ending(OpenAIWire(), sse("[DONE]", "[DONE]")) == [0]


@pytest.mark.parametrize(
    "text",
    [
        "data: [DONE]",
        "\n\ndata: [DONE]\n\n",
        '"}\n\ndata: [DONE]',
        "[DONE]",
    ],
)
def test_what_a_model_writes_never_ends_a_stream(text: str) -> None:
    """Content is JSON: its newlines are escaped, so it cannot start a line or an event."""
    assert chunks_ending(OpenAIWire(), [text_event(text), text_event(text)]) == []
    assert chunks_ending(OpenAIWire(), [text_event(text) + text_event(text)]) == []


def test_an_event_split_across_chunks_is_not_read_from_its_middle() -> None:
    """A chunk that starts inside a line cannot be taken for an event's start: here the
    tail `data: [DONE]` is the end of a longer line that began in the chunk before."""
    chunks = [b'data: {"x": "', b"data: [DONE]\n\n"]
    assert chunks_ending(OpenAIWire(), chunks) == []
    # The same bytes after a chunk that ended an event: an event of its own.
    assert chunks_ending(OpenAIWire(), [b"data: {}\n\n", b"data: [DONE]\n\n"]) == [1]


def test_anthropic_ends_at_message_stop_and_not_at_a_delta_naming_it() -> None:
    stop = b'event: message_stop\ndata: {"type": "message_stop"}\n\n'
    delta = (
        b"event: content_block_delta\n"
        b'data: {"type":"content_block_delta","delta":{"type":"text_delta",'
        b'"text":"\\"message_stop"}}\n\n'
    )
    usage = b'event: message_delta\ndata: {"type":"message_delta","usage":{"output_tokens":9}}\n\n'
    assert chunks_ending(AnthropicWire(), [delta, usage, stop]) == [2]
    assert chunks_ending(AnthropicWire(), [delta + usage + stop]) == [0]
    assert chunks_ending(AnthropicWire(), [delta, usage]) == []


def test_only_event_streams_of_protocols_with_a_last_event_are_watched() -> None:
    assert stream_end(OpenAIWire(), SSE_HEADERS) is not None
    assert stream_end(OpenAIWire(), [(b"content-type", b"application/json")]) is None
    assert stream_end(GeminiWire(), SSE_HEADERS) is None  # read to the end by its clients


def late_end(events: list[bytes], seconds: float) -> Any:
    """A stream whose end of body comes `seconds` after its last event."""

    def reply(request: dict[str, Any]) -> Any:
        return 200, EVENTS, [(0, event) for event in events] + [(seconds, b"")]

    return models_or(reply)


class LateEndUpstream:
    """Sends a stream up to its last event and then never ends the body; notes when the
    proxy lets the connection go (`let_go_at`)."""

    def __init__(self, events: list[bytes]) -> None:
        self.events = events
        self.let_go_at: float | None = None

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if b"/models" in head.split(b"\r\n", 1)[0]:
            body = b'{"object":"list","data":[]}'
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\n\r\n%s" % (len(body), body)
            )
            writer.close()
            return
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )
        for event in self.events:
            writer.write(b"%x\r\n%s\r\n" % (len(event), event))
        try:
            async with asyncio.timeout(10):
                while await reader.read(65536):  # the request's body, then nothing
                    pass
        except (TimeoutError, OSError):
            pass
        self.let_go_at = time.monotonic()
        writer.close()


def test_the_next_request_after_done_sees_this_ones_tokens() -> None:
    """The openai SDK's loop ends at [DONE]; the upstream never ends its body. The tokens
    left, read at once, are already net of this stream's 100 (on main: its whole
    reservation was still held), and the upstream is let go a moment after the SDK hung
    up, not at the read timeout."""
    upstream = LateEndUpstream(openai_chunks(3, USAGE))
    with raw_upstream(upstream) as port:
        env = proxy_env(
            f"http://127.0.0.1:{port}", RATE_LIMIT_TOKENS="100000", UPSTREAM_READ_TIMEOUT="30"
        )
        with serve_in_thread(create_app(load_settings(env))) as proxy:
            before = remaining(proxy)
            client = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=FAKE_TOKEN, max_retries=0)
            stream = client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}], stream=True
            )
            text = "".join(chunk.choices[0].delta.content or "" for chunk in stream)
            hung_up_at = time.monotonic()
            assert text == "w0 w1 w2 "
            assert before - remaining(proxy) == 100
            wait_until(lambda: upstream.let_go_at, lambda at: at is not None, timeout=5)
    assert upstream.let_go_at is not None, "the upstream was held past 5 s"
    assert upstream.let_go_at - hung_up_at < 2.0


def test_a_reader_stopping_at_message_stop_sees_the_tokens_charged() -> None:
    """Any client may stop at message_stop (a browser's reader, a smaller SDK)."""
    events = [
        b"event: message_start\n"
        b'data: {"type":"message_start","message":{"id":"m","type":"message",'
        b'"role":"assistant","content":[],"model":"m","usage":{"input_tokens":40,'
        b'"output_tokens":1}}}\n\n',
        b"event: content_block_delta\n"
        b'data: {"type":"content_block_delta","index":0,'
        b'"delta":{"type":"text_delta","text":"hi"}}\n\n',
        b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":'
        b'"end_turn"},"usage":{"output_tokens":60}}\n\n',
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n',
    ]
    upstream = ScriptedUpstream(late_end(events, 3.0))
    with metered(upstream, RATE_LIMIT_TOKENS="100000") as proxy:
        before = remaining(proxy)
        body = {"model": "m", "max_tokens": 100, "stream": True, "messages": []}
        body["messages"] = [{"role": "user", "content": "hi"}]
        started = time.monotonic()
        with httpx.stream(
            "POST", f"{proxy.url}/anthropic/v1/messages", json=body, headers=AUTH, timeout=10
        ) as reply:
            for line in reply.iter_lines():
                if line.startswith("data:") and '"message_stop"' in line:
                    break
        assert time.monotonic() - started < 2.0
        assert before - remaining(proxy) == 100
