"""Token counts an upstream writes in another form than a JSON integer.

The readers took any count that was not a positive JSON integer for 0, while the usage
still counted as read: a reply reporting `"completion_tokens": 70.0` (a lenient server's
float), `"70"` (protobuf JSON's int64), `-1` or `70.5` was metered as having used nothing,
and the caller charged nothing for what was generated. A count a lenient reader takes for
a whole number is now that number; any other makes the usage unread, charged the whole
reservation as a reply with no usage is. Over real sockets, whole replies and streams.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from core.protocols import WIRES, Usage
from core.realtime.wire import GeminiLiveMeter, OpenAIRealtimeMeter
from tests.support.metered import AUTH, EVENTS, JSON, chat, metered, models_or, remaining
from tests.support.scripted_upstream import ScriptedUpstream, openai_chunks

# What the upstream reports, by the case the request names in its `user` field (names of
# one length: every request's body, and so its reservation, is the same size).
_REPORTS: dict[str, dict[str, Any] | None] = {
    "none": None,
    "ints": {"prompt_tokens": 30, "completion_tokens": 70},
    "flts": {"prompt_tokens": 30.0, "completion_tokens": 70.0},
    "strs": {"prompt_tokens": "30", "completion_tokens": " 70 "},
    "negv": {"prompt_tokens": 30, "completion_tokens": -70},
    "frac": {"prompt_tokens": 30, "completion_tokens": 70.5},
    "text": {"prompt_tokens": 30, "completion_tokens": "many"},
    "bool": {"prompt_tokens": 30, "completion_tokens": True},
    "list": {"prompt_tokens": 30, "completion_tokens": [70]},
    "nans": {"prompt_tokens": 30, "completion_tokens": "NaN"},
}


def _reply(request: dict[str, Any]) -> Any:
    document = json.loads(request["body"])
    usage = _REPORTS[document["user"]]
    if document.get("stream"):
        return 200, EVENTS, [(0, b"".join(openai_chunks(2, usage)))]
    body: dict[str, Any] = {"id": "x", "choices": []}
    if usage is not None:
        body["usage"] = usage
    return 200, JSON, [(0, json.dumps(body).encode())]


def _charged(proxy: Any, case: str, stream: bool) -> int:
    before = remaining(proxy)
    reply = httpx.post(
        f"{proxy.url}/v1/chat/completions",
        json=chat(stream=stream, user=case),
        headers=AUTH,
        timeout=10,
    )
    assert reply.status_code == 200, reply.text
    reply.read()
    return before - remaining(proxy)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_counts_in_another_form_are_read_or_charged_in_full(stream: bool) -> None:
    upstream = ScriptedUpstream(models_or(_reply))
    with metered(upstream, RATE_LIMIT_TOKENS="100000") as proxy:
        unread = _charged(proxy, "none", stream)  # no usage: the whole reservation
        assert unread > 100
        assert _charged(proxy, "ints", stream) == 100
        for case in ("flts", "strs"):
            assert _charged(proxy, case, stream) == 100, case
        for case in ("negv", "frac", "text", "bool", "list", "nans"):
            assert _charged(proxy, case, stream) == unread, case


def test_every_protocols_reader_refuses_a_count_that_is_no_count() -> None:
    from core.protocols import UnreadableUsage

    anthropic, gemini = WIRES["anthropic"], WIRES["gemini"]
    assert anthropic.read_usage({"input_tokens": "5", "output_tokens": 7.0}, Usage()) == Usage(5, 7)
    assert gemini.read_usage({"promptTokenCount": "5", "candidatesTokenCount": 7}, Usage())
    for reader, usage in (
        (anthropic, {"input_tokens": 5, "output_tokens": -7}),
        (anthropic, {"input_tokens": 5, "cache_read_input_tokens": 0.5}),
        (gemini, {"promptTokenCount": 5, "candidatesTokenCount": "7.5"}),
        (gemini, {"promptTokenCount": 5, "thoughtsTokenCount": -1}),
    ):
        with pytest.raises(UnreadableUsage):
            reader.read_usage(usage, Usage())


def test_a_realtime_turn_whose_counts_are_no_counts_is_charged_as_unread() -> None:
    openai = OpenAIRealtimeMeter()
    done = {"type": "response.done", "response": {"usage": {"input_tokens": 5}}}
    openai.feed(json.dumps(done))
    done["response"]["usage"] = {"input_tokens": 5, "output_tokens": -50}  # type: ignore[index]
    openai.feed(json.dumps(done))
    assert (openai.finish(), openai.unread_turns()) == (Usage(5, 0), 1)

    gemini = GeminiLiveMeter()
    gemini.feed(json.dumps({"serverContent": {"modelTurn": {"parts": [{"text": "hi"}]}}}))
    gemini.feed(json.dumps({"usageMetadata": {"promptTokenCount": 5, "responseTokenCount": -9}}))
    gemini.feed(json.dumps({"serverContent": {"turnComplete": True}}))
    assert gemini.unread_turns() == 1


@pytest.mark.parametrize(
    ("metadata", "charged"),
    [
        # Thinking or tool-use tokens reported in the total only: billed, so charged.
        ({"promptTokenCount": 30, "candidatesTokenCount": 20, "totalTokenCount": 100}, 100),
        # A count under protobuf JSON's other spelling of its name.
        ({"promptTokenCount": 30, "candidates_token_count": 70}, 100),
        ({"prompt_token_count": 30, "candidatesTokenCount": 70, "thoughts_token_count": 5}, 105),
    ],
)
def test_a_gemini_usage_is_charged_every_token_it_counts(
    metadata: dict[str, Any], charged: int
) -> None:
    """The Gemini reader read each count under its camelCase name only, and left what the
    total held beyond the parts it named uncharged: 50 of 100 tokens, or the prompt alone."""
    content = json.dumps({"candidates": [], "usageMetadata": metadata}).encode()
    upstream = ScriptedUpstream(models_or(lambda r: (200, JSON, [(0, content)])))
    body = {"contents": [{"parts": [{"text": "hi"}]}], "generationConfig": {"maxOutputTokens": 9}}
    with metered(upstream, RATE_LIMIT_TOKENS="100000") as proxy:
        before = remaining(proxy)
        reply = httpx.post(
            f"{proxy.url}/gemini/v1beta/models/fake-model:generateContent",
            json=body,
            headers={"x-goog-api-key": AUTH["Authorization"].removeprefix("Bearer ")},
            timeout=10,
        )
        assert reply.status_code == 200, reply.text
        assert before - remaining(proxy) == charged
