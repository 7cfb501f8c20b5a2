"""What the meter missed (issue: "the meter misses gzip replies"; what else does it miss?).

Each test runs a real proxy with RATE_LIMIT_TOKENS in front of a scripted upstream whose
reply is one a provider (or a gateway before one) plausibly sends, and checks what the
caller was charged: x-ratelimit-remaining-tokens on a free request that follows.
"""

from __future__ import annotations

import gzip
import json
import time
from typing import Any

import httpx
import pytest

from core.protocols import WIRES
from core.usage.meter import UsageMeter
from tests.support.metered import AUTH, JSON, metered, models_or, remaining
from tests.support.scripted_upstream import ScriptedUpstream

LIMIT = 100_000
# A tool whose JSON schema holds a `usage` member of the caller's choosing: a Responses
# reply echoes the tools, as objects.
PLANTED = {"input_tokens": 1, "output_tokens": 1}
TOOL = {
    "type": "function",
    "name": "lookup",
    "parameters": {"type": "object", "properties": {}, "usage": PLANTED},
}


def _background_response(usage: Any, *, spelt: str = "usage", tools_key: str = "usage") -> Any:
    """A Responses upstream answering a background request as OpenAI does: queued, its
    usage null (or left out, as a server that drops nulls does), the request's tools
    echoed."""

    def reply(request: dict[str, Any]) -> Any:
        sent = json.loads(request["body"])
        tools = json.dumps(sent["tools"]).replace('"usage"', f'"{tools_key}"')
        members = [
            '"id": "resp_1"',
            '"object": "response"',
            '"status": "queued"',
            '"background": true',
            '"output": []',
            f'"tools": {tools}',
        ]
        if usage is not ...:
            members.append(f'"{spelt}": {json.dumps(usage)}')
        members.append('"metadata": {}')
        return 200, JSON, [(0, ("{" + ", ".join(members) + "}").encode())]

    return reply


@pytest.mark.parametrize(
    ("usage", "spelt", "tools_key"),
    [
        (None, "usage", "usage"),  # OpenAI's own: "usage": null
        (..., "usage", "usage"),  # a gateway that leaves nulls out
        (None, "usage", "\\u0075sage"),  # the planted key spelt with an escape
        (None, "\\u0075sage", "usage"),  # the reply's own spelt with one
    ],
)
def test_a_usage_the_caller_planted_in_an_echo_is_never_the_bill(
    usage: Any, spelt: str, tools_key: str
) -> None:
    upstream = ScriptedUpstream(
        models_or(_background_response(usage, spelt=spelt, tools_key=tools_key))
    )
    with metered(upstream, RATE_LIMIT_TOKENS=str(LIMIT)) as proxy:
        before = remaining(proxy)
        body = {
            "model": "fake-model",
            "input": "write a long essay",
            "background": True,
            "max_output_tokens": 5000,
            "tools": [TOOL],
        }
        reply = httpx.post(f"{proxy.url}/v1/responses", json=body, headers=AUTH, timeout=10)
        assert reply.status_code == 200
        # The response runs upstream after this reply: its usage is unknown, so it is
        # charged its whole reservation (before: the 2 tokens the caller planted).
        assert before - remaining(proxy) > 5000


def test_a_usage_nested_after_the_replys_own_is_not_taken_for_it() -> None:
    """A gateway that breaks its usage down by model after the total (Groq's compound
    models: `usage_breakdown.models[].usage`): the total is the bill."""
    body = {
        "id": "c",
        "choices": [{"index": 0, "message": {"content": "hi"}}],
        "usage": {"prompt_tokens": 300, "completion_tokens": 700, "total_tokens": 1000},
        "usage_breakdown": {
            "models": [{"model": "small", "usage": {"prompt_tokens": 1, "completion_tokens": 1}}]
        },
    }
    upstream = ScriptedUpstream(models_or(lambda r: (200, JSON, [(0, json.dumps(body).encode())])))
    with metered(upstream, RATE_LIMIT_TOKENS=str(LIMIT)) as proxy:
        before = remaining(proxy)
        chat = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}
        reply = httpx.post(
            f"{proxy.url}/v1/chat/completions", json={**chat, "max_tokens": 2000}, headers=AUTH
        )
        assert reply.status_code == 200
        assert before - remaining(proxy) == 1000


GEMINI_STREAM = "/gemini/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse"
GEMINI_BODY = {
    "contents": [{"parts": [{"text": "hi"}]}],
    "generationConfig": {"maxOutputTokens": 900},
}


def _gemini_event(text: str, output: int) -> bytes:
    """One event of a Gemini stream: each reports the usage so far."""
    chunk = {
        "candidates": [{"content": {"parts": [{"text": text}], "role": "model"}}],
        "usageMetadata": {
            "promptTokenCount": 10,
            "candidatesTokenCount": output,
            "totalTokenCount": 10 + output,
        },
    }
    return b"data: " + json.dumps(chunk).encode() + b"\r\n\r\n"


def _spent_on_gemini_stream(upstream: ScriptedUpstream) -> tuple[int, httpx.Response]:
    """The tokens a Gemini stream from `upstream` was charged, and the caller's reply."""
    with metered(upstream, RATE_LIMIT_TOKENS=str(LIMIT)) as proxy:
        before = remaining(proxy)
        reply = httpx.post(
            f"{proxy.url}{GEMINI_STREAM}",
            json=GEMINI_BODY,
            headers={"x-goog-api-key": AUTH["Authorization"].split()[1]},
            timeout=60,
        )
        assert reply.status_code == 200
        return before - remaining(proxy), reply


def _charged_for_gemini_stream(parts: list[bytes]) -> int:
    upstream = ScriptedUpstream(
        models_or(
            lambda r: (
                200,
                [("content-type", "text/event-stream"), ("content-encoding", "gzip")],
                [(0.01, part) for part in parts],
            )
        )
    )
    return _spent_on_gemini_stream(upstream)[0]


def test_a_stream_compressed_member_by_member_is_charged_to_its_end() -> None:
    """A server that compresses each flush as a gzip member of its own (RFC 1952 allows
    members one after another): the meter stopped at the first member's end, and the
    first event's usage (11 tokens) was the bill."""
    events = [_gemini_event("a", 1), _gemini_event("b" * 100, 500)]
    assert _charged_for_gemini_stream([gzip.compress(event) for event in events]) == 510


def test_a_small_compressed_chunk_that_inflates_past_8_mib_is_read_whole() -> None:
    """A 30 KB chunk that inflates to 10 MB: the meter inflated at most 8 MiB of each
    chunk and dropped the rest, the final usage with it, and billed an early event's."""
    events = _gemini_event("a", 1) + _gemini_event("z" * 1000, 3) * 9000
    events += _gemini_event("b", 500)
    compressed = gzip.compress(events)
    assert len(compressed) < 64 * 1024
    assert _charged_for_gemini_stream([compressed]) == 510


def _gemini_image_event(size: int, output: int) -> bytes:
    """A Gemini event with an image (base64 of `size` bytes) beside the usage so far, as an
    image model streams its answer."""
    chunk = {
        "candidates": [
            {
                "content": {
                    "parts": [{"inlineData": {"mimeType": "image/png", "data": "A" * size}}]
                },
                "finishReason": "STOP",
            }
        ],
        "usageMetadata": {
            "promptTokenCount": 10,
            "candidatesTokenCount": output,
            "totalTokenCount": 10 + output,
        },
    }
    return b"data: " + json.dumps(chunk).encode() + b"\r\n\r\n"


def _charged_for_plain_gemini_stream(body: bytes) -> int:
    parts = [body[i : i + 65536] for i in range(0, len(body), 65536)]
    upstream = ScriptedUpstream(
        models_or(lambda r: (200, [("content-type", "text/event-stream")], [(0, p) for p in parts]))
    )
    spent, reply = _spent_on_gemini_stream(upstream)
    assert len(reply.content) == len(body)
    return spent


def test_an_event_of_megabytes_that_carries_the_usage_is_read() -> None:
    """A 2 MB image in the stream's last event, beside its final usage: a line past 1 MiB
    was dropped unread, and the first event's 11 tokens were the bill."""
    body = _gemini_event("a", 1) + _gemini_image_event(2_000_000, 1300)
    assert _charged_for_plain_gemini_stream(body) == 1310


def test_an_event_too_long_to_keep_leaves_the_stream_unread() -> None:
    """Past 8 MiB an event is not kept: the usage it may hold is unknown, so the stream is
    charged its whole reservation, never the figures of the events before it."""
    body = _gemini_event("a", 1) + _gemini_image_event(9_000_000, 1300)
    charged = _charged_for_plain_gemini_stream(body)
    # The reservation: the prompt's upper estimate and the 900 tokens maxOutputTokens asks.
    assert charged > 900


def test_an_echo_full_of_usage_strings_costs_the_meter_no_quadratic_scan() -> None:
    """A tool schema's enum of 300,000 `"usage"` strings, echoed by a background reply
    whose own usage is null: for each, the meter looked for the next colon, past all the
    others (about 20 s of one process's event loop, for every caller, on a 2 MB body)."""
    enum = ",".join(['"usage"'] * 300_000)
    tools = '[{"type":"function","name":"f","parameters":{"enum":[' + enum + "]}}]"
    reply = ('{"id":"resp_1","status":"queued","tools":' + tools + ',"usage":null}').encode()
    meter = UsageMeter(WIRES["openai"])
    meter.start([(b"content-type", b"application/json")])
    started = time.perf_counter()
    meter.feed(reply)
    assert meter.finish() is None  # unread: charged its reservation
    assert time.perf_counter() - started < 2


def _anthropic_stream(start_usage: dict[str, int] | None) -> list[bytes]:
    message: dict[str, Any] = {"id": "m", "type": "message", "role": "assistant", "content": []}
    if start_usage is not None:
        message["usage"] = start_usage
    events: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"type": "message_start", "message": message}),
        ("content_block_start", {"type": "content_block_start", "index": 0}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn"},
                "usage": {"output_tokens": 7},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    return [f"event: {name}\ndata: {json.dumps(data)}\n\n".encode() for name, data in events]


@pytest.mark.parametrize(
    ("start_usage", "charged"),
    [
        ({"input_tokens": 1200, "output_tokens": 1}, 1207),  # Anthropic's own: the figures
        (None, "reservation"),  # a gateway that leaves the input out: not output alone
        ({"output_tokens": 1}, "reservation"),
    ],
)
def test_a_usage_with_no_input_token_is_charged_as_a_reply_cut_short(
    start_usage: dict[str, int] | None, charged: Any
) -> None:
    """Every model call reads at least one token. An Anthropic stream whose message_start
    carries no input figures (a gateway in front of the provider) was charged its 7 output
    tokens alone; now as a reply cut short: the larger of its figures and its reservation.
    Failed before for the two gateways."""
    events = _anthropic_stream(start_usage)
    upstream = ScriptedUpstream(
        models_or(
            lambda r: (200, [("content-type", "text/event-stream")], [(0, e) for e in events])
        )
    )
    with metered(upstream, RATE_LIMIT_TOKENS=str(LIMIT)) as proxy:
        before = remaining(proxy)
        reply = httpx.post(
            f"{proxy.url}/anthropic/v1/messages",
            json={
                "model": "claude-test",
                "max_tokens": 2000,
                "stream": True,
                "messages": [{"role": "user", "content": "hi"}],
            },
            headers={"x-api-key": AUTH["Authorization"].split()[1]},
            timeout=20,
        )
        assert reply.status_code == 200
        spent = before - remaining(proxy)
    if charged == "reservation":
        assert spent > 2000  # the whole output cap and the prompt's estimate
    else:
        assert spent == charged
