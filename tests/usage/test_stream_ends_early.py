"""An Anthropic stream whose body ends cleanly before its answer's usage.

Anthropic reports the prompt and one output token in message_start, and the output in
message_delta at the end. A stream that wrote its answer and then ended with an `error`
event (overloaded_error mid-stream), or just ended, had read to the end of its body with
a usage in hand: it was charged 31 tokens for an answer of about 2,000. Such a stream is
now charged as one cut short: its reservation. Over real sockets.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.support.metered import EVENTS, metered, models_or, remaining
from tests.support.scripted_upstream import ScriptedUpstream
from tests.support.servers import FAKE_TOKEN

MAX_TOKENS = 2000


def _event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


_START = _event(
    "message_start",
    {
        "type": "message_start",
        "message": {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": "fake-model",
            "usage": {"input_tokens": 30, "output_tokens": 1},
        },
    },
)
_TEXT = b"".join(
    _event(
        "content_block_delta",
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "w "}},
    )
    for _ in range(50)
)
_ERROR = _event("error", {"type": "error", "error": {"type": "overloaded_error", "message": "x"}})
_END = _event(
    "message_delta",
    {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 70}},
) + _event("message_stop", {"type": "message_stop"})

_ENDINGS = {
    "error-event": [_START, _TEXT, _ERROR],
    "just-ends": [_START, _TEXT],
}


def _charged(parts: list[bytes]) -> int:
    upstream = ScriptedUpstream(models_or(lambda r: (200, EVENTS, [(0, p) for p in parts])))
    body = {
        "model": "fake-model",
        "max_tokens": MAX_TOKENS,
        "stream": True,
        "messages": [{"role": "user", "content": "hi"}],
    }
    with metered(upstream, RATE_LIMIT_TOKENS="100000") as proxy:
        before = remaining(proxy)
        reply = httpx.post(
            f"{proxy.url}/anthropic/v1/messages",
            json=body,
            headers={"x-api-key": FAKE_TOKEN},
            timeout=10,
        )
        assert reply.status_code == 200
        return before - remaining(proxy)


@pytest.mark.parametrize("ending", list(_ENDINGS))
def test_a_stream_ending_before_its_usage_is_charged_its_reservation(ending: str) -> None:
    assert _charged(_ENDINGS[ending]) > MAX_TOKENS  # the prompt's estimate and max_tokens


def test_a_whole_stream_is_charged_what_it_reports() -> None:
    assert _charged([_START, _TEXT, _END]) == 100
