"""Issue 19, class 5: reply bytes read as if JSON were always compact.

An OpenAI-compatible server that writes JSON the way Python's json.dumps does
(`"choices": []`, a space after every colon and comma), puts `usage` first, or spells a
member name with a `\\u` escape is still an OpenAI stream: the usage-only chunk the proxy
asked for must still be taken back out (the real openai SDK's `chunk.choices[0]` raises
IndexError on it), and the meter must still count the tokens."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from tests.support.metered import AUTH, EVENTS, JSON, chat, metered, models_or, remaining
from tests.support.polling import wait_until
from tests.support.scripted_upstream import ScriptedUpstream
from tests.support.servers import FAKE_TOKEN

USAGE = {"prompt_tokens": 30, "completion_tokens": 70, "total_tokens": 100}
BASE = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}


def spaced(event: dict[str, Any] | str) -> bytes:
    data = event if isinstance(event, str) else json.dumps(event)  # ", " and ": "
    return f"data: {data}\n\n".encode()


def escaped(event: dict[str, Any]) -> bytes:
    """Every member name written with \\u escapes, as JSON allows."""
    text = json.dumps(event)
    for name in ("choices", "usage"):
        text = text.replace(f'"{name}"', '"' + "".join(f"\\u{ord(c):04x}" for c in name) + '"')
    return f"data: {text}\n\n".encode()


def usage_first(event: dict[str, Any]) -> bytes:
    reordered = {"usage": event.get("usage"), **{k: v for k, v in event.items() if k != "usage"}}
    return f"data: {json.dumps(reordered)}\n\n".encode()


def stream_of(write: Any) -> Any:
    def reply(request: dict[str, Any]) -> Any:
        events: list[bytes] = []
        for i in range(3):
            chunk = {**BASE, "choices": [{"index": 0, "delta": {"content": f"w{i} "}}]}
            chunk["usage"] = None
            events.append(write(chunk))
        last = {**BASE, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        last["usage"] = None
        events.append(write(last))
        events.append(write({**BASE, "choices": [], "usage": USAGE}))
        events.append(b"data: [DONE]\n\n")
        return 200, EVENTS, [(0, event) for event in events]

    return models_or(reply)


@pytest.mark.parametrize(
    "write", [spaced, escaped, usage_first], ids=["spaced", "escaped", "usage-first"]
)
def test_the_usage_chunk_is_taken_out_however_the_json_is_spelt(write: Any) -> None:
    with metered(ScriptedUpstream(stream_of(write)), RATE_LIMIT_TOKENS="100000") as proxy:
        before = remaining(proxy)
        client = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=FAKE_TOKEN, max_retries=0)
        stream = client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        # The README's loop: IndexError on main when the usage-only chunk got through.
        text = "".join(chunk.choices[0].delta.content or "" for chunk in stream)
        assert text == "w0 w1 w2 "
        # The tokens the hidden chunk reported were counted. The SDK stops at [DONE], and
        # the proxy settles once the upstream's body has ended, a moment later: polled,
        # bounded (an unread usage would charge the whole reservation, never 100).
        spent = wait_until(lambda: before - remaining(proxy), lambda spent: spent == 100)
        assert spent == 100
        raw = httpx.post(
            f"{proxy.url}/v1/chat/completions", json=chat(stream=True), headers=AUTH, timeout=10
        ).content
        # What include_usage added is gone: no usage-only chunk, no `"usage": null` member
        # (an escaped name's null member stays: harmless to every SDK).
        assert b"70" not in raw
        if write is not escaped:
            assert b"null" not in raw


def test_a_usage_key_spelt_with_escapes_is_counted_in_a_whole_reply() -> None:
    body = json.dumps(
        {"id": "x", "choices": [{"index": 0, "message": {"content": "hi"}}], "usage": USAGE}
    ).replace('"usage"', '"\\u0075sage"')
    upstream = ScriptedUpstream(models_or(lambda r: (200, JSON, [(0, body.encode())])))
    with metered(upstream, RATE_LIMIT_TOKENS="100000") as proxy:
        before = remaining(proxy)
        reply = httpx.post(f"{proxy.url}/v1/chat/completions", json=chat(), headers=AUTH)
        assert reply.status_code == 200
        # Charged what it used (100), not the whole reservation.
        assert before - remaining(proxy) == 100


def test_stream_options_spelt_with_an_escape_still_gets_usage_asked_for() -> None:
    """The caller set `stream_options` (written `stream\\u005foptions`, as JSON allows)
    without include_usage: the proxy must still send valid JSON asking for usage."""
    upstream = ScriptedUpstream(stream_of(spaced))
    body = (
        b'{"model": "m", "stream": true, "stream\\u005foptions": {"include_usage": false},'
        b' "messages": [{"role": "user", "content": "hi"}]}'
    )
    with metered(upstream, RATE_LIMIT_TOKENS="100000") as proxy:
        before = remaining(proxy)
        reply = httpx.post(
            f"{proxy.url}/v1/chat/completions",
            content=body,
            headers={**AUTH, "content-type": "application/json"},
            timeout=10,
        )
        assert reply.status_code == 200
        sent = json.loads(upstream.seen[-1].body)  # main sent broken JSON here
        assert sent["stream_options"] == {"include_usage": True}
        assert b"70" not in reply.content  # the usage chunk taken back out
        assert before - remaining(proxy) == 100
