"""The answered model and finish reasons as the reply tap reads them, however the upstream
splits its bytes and spaces its JSON (the OTLP tests read them end to end)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from core.telemetry.record import RequestRecord
from core.telemetry.reply import ReplyFacts


def read(body: bytes, wire: str, *, stream: bool, responses: bool = False, size: int = 0) -> Any:
    record = RequestRecord(kind="http", method="POST", path="/v1/x")
    tap = ReplyFacts(record, wire, stream, responses=responses)
    pieces = [body[i : i + size] for i in range(0, len(body), size)] if size else [body]
    assert b"".join(tap.feed(piece) for piece in pieces) + tap.flush() == body
    return record.response_model, list(record.finish_reasons)


def sse(*events: Any, spaced: bool = False) -> bytes:
    separators = (", ", ": ") if spaced else (",", ":")
    return b"".join(
        b"data: " + json.dumps(event, separators=separators).encode() + b"\n\n" for event in events
    )


@pytest.mark.parametrize("size", [0, 1, 7])
@pytest.mark.parametrize("spaced", [False, True])
def test_openai_chat_stream_with_two_choices(size: int, spaced: bool) -> None:
    def chunk(index: int, finish: str | None) -> dict[str, Any]:
        choice = {"index": index, "delta": {"content": "x"}, "finish_reason": finish}
        return {"model": "gpt-4o-2024-08-06", "choices": [choice]}

    body = sse(chunk(0, None), chunk(1, None), chunk(0, "stop"), chunk(1, "length"), spaced=spaced)
    body += b"data: [DONE]\n\n"
    assert read(body, "openai", stream=True, size=size) == ("gpt-4o-2024-08-06", ["stop", "length"])


def test_anthropic_stream_ends_without_a_trailing_newline() -> None:
    start = {"type": "message_start", "message": {"model": "claude-x", "stop_reason": None}}
    delta = {"type": "message_delta", "delta": {"stop_reason": "max_tokens"}}
    body = sse(start, delta).rstrip(b"\n")
    assert read(body, "anthropic", stream=True, size=5) == ("claude-x", ["max_tokens"])


def test_responses_incomplete_names_its_reason() -> None:
    created = {"type": "response.created", "response": {"model": "o3", "status": "in_progress"}}
    text = {"type": "response.output_text.delta", "delta": "words"}
    ended = {
        "type": "response.incomplete",
        "response": {
            "object": "response",
            "model": "o3",
            "status": "incomplete",
            "incomplete_details": {"reason": "max_output_tokens"},
        },
    }
    body = sse(created, text, ended)
    assert read(body, "openai", stream=True, responses=True) == ("o3", ["max_output_tokens"])


def test_gemini_streamed_json_array_is_read_whole() -> None:
    parts = [
        {"candidates": [{"content": {}}], "modelVersion": "gemini-2.5-flash-001"},
        {"candidates": [{"content": {}, "finishReason": "SAFETY"}]},
    ]
    body = json.dumps(parts).encode()
    assert read(body, "gemini", stream=False, size=10) == ("gemini-2.5-flash-001", ["SAFETY"])


def test_a_whole_reply_too_long_is_not_kept() -> None:
    body = json.dumps({"model": "big", "choices": [{"text": "x" * 2_000_000}]}).encode()
    assert read(body, "openai", stream=False, size=65536) == (None, [])


def test_an_error_reply_says_nothing() -> None:
    body = json.dumps({"error": {"message": "no", "type": "invalid_request_error"}}).encode()
    assert read(body, "openai", stream=False) == (None, [])


@pytest.mark.parametrize("spaced", [False, True])
def test_a_reason_after_a_null_one_in_the_same_event(spaced: bool) -> None:
    """Both choices in one event, the first still going: the second's reason is read."""
    choices = [
        {"index": 0, "delta": {"content": "x"}, "finish_reason": None},
        {"index": 1, "delta": {}, "finish_reason": "length"},
    ]
    first = {"model": "gpt-x", "choices": [{"index": 0, "delta": {}, "finish_reason": None}]}
    body = sse(first, {"model": "gpt-x", "choices": choices}, spaced=spaced)
    assert read(body, "openai", stream=True, size=0) == ("gpt-x", ["length"])
    # Event by event, as a model sends them.
    events = body.split(b"\n\n")
    record = RequestRecord(kind="http", method="POST", path="/v1/x")
    tap = ReplyFacts(record, "openai", True, responses=False)
    for event in events[:-1]:
        tap.feed(event + b"\n\n")
    tap.flush()
    assert list(record.finish_reasons) == ["length"]
