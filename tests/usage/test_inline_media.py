"""Media carried in the body reserve the context window: their tokens are not their bytes.

An image is billed by its pixels (a 1x1 PNG is 2,833 input tokens on gpt-4o-mini), audio
and video by their seconds, a PDF by its pages. The proxy reserved a body's prompt at a
token for every three bytes, so requests carrying a few tiny images each reserved a few
hundred tokens and used tens of thousands: sent at once, they all fitted a cap with room
for one. Each test sends them at once, over real sockets, to an upstream that reports
what such a request really reads.
"""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest

from core.usage.inline_media import inline_media
from tests.support.metered import AUTH, JSON, chat, chats_at_once, metered, models_or
from tests.support.scripted_upstream import ScriptedUpstream
from tests.support.servers import FAKE_TOKEN

PRICES = json.dumps({"fake-*": {"input": 10, "output": 100}})
# The smallest PNG (1x1), base64: 68 bytes, billed as a whole image.
PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJ"
    "RU5ErkJggg=="
)
DATA_URL = f"data:image/png;base64,{PNG}"
_BIG_INPUT = {"input_tokens": 100_000, "output_tokens": 10}
_OPENAI_BIG = {"usage": {"prompt_tokens": 100_000, "completion_tokens": 10}}


def _chat_parts(*parts: dict[str, Any]) -> dict[str, Any]:
    return chat(max_tokens=10, messages=[{"role": "user", "content": list(parts)}])


_INLINE = [
    pytest.param(
        "/v1/chat/completions",
        _chat_parts({"type": "image_url", "image_url": {"url": DATA_URL}}),
        AUTH,
        _OPENAI_BIG,
        id="chat-image-data-url",
    ),
    pytest.param(
        "/v1/chat/completions",
        _chat_parts({"type": "input_audio", "input_audio": {"data": PNG, "format": "wav"}}),
        AUTH,
        _OPENAI_BIG,
        id="chat-input-audio",
    ),
    pytest.param(
        "/v1/chat/completions",
        _chat_parts(
            {"type": "file", "file": {"filename": "a.pdf", "file_data": f"data:a/pdf;base64,{PNG}"}}
        ),
        AUTH,
        _OPENAI_BIG,
        id="chat-pdf-file-data",
    ),
    pytest.param(
        "/v1/responses",
        {
            "model": "fake-model",
            "max_output_tokens": 10,
            "input": [
                {"role": "user", "content": [{"type": "input_image", "image_url": DATA_URL}]}
            ],
        },
        AUTH,
        {"usage": _BIG_INPUT},
        id="responses-input-image",
    ),
    pytest.param(
        "/anthropic/v1/messages",
        {
            "model": "fake-model",
            "max_tokens": 10,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "document",
                            "source": {
                                "type": "base64",
                                "media_type": "application/pdf",
                                "data": PNG,
                            },
                        }
                    ],
                }
            ],
        },
        {"x-api-key": FAKE_TOKEN},
        {"usage": _BIG_INPUT},
        id="anthropic-base64-pdf",
    ),
    pytest.param(
        "/gemini/v1beta/models/fake-model:generateContent",
        {
            "contents": [{"parts": [{"inlineData": {"mimeType": "video/mp4", "data": PNG}}]}],
            "generationConfig": {"maxOutputTokens": 10},
        },
        {"x-goog-api-key": FAKE_TOKEN},
        {"usageMetadata": {"promptTokenCount": 100_000, "candidatesTokenCount": 10}},
        id="gemini-inline-video",
    ),
]


def _spent(proxy: Any) -> float:
    reply = httpx.get(f"{proxy.url}/proxy/usage", headers=AUTH, timeout=10)
    assert reply.status_code == 200, reply.text
    return float(reply.json()["spent_usd"])


@pytest.mark.parametrize(("path", "body", "headers", "reply"), _INLINE)
def test_inline_media_cannot_pass_a_budget_concurrently(
    path: str, body: dict[str, Any], headers: dict[str, str], reply: dict[str, Any]
) -> None:
    """Six requests of a few hundred bytes, each reading 100,000 tokens of media ($1.0001),
    all fitted a $1.50 budget at once and spent $6: passed by five requests, not one."""
    content = json.dumps(reply).encode()
    upstream = ScriptedUpstream(models_or(lambda r: (200, JSON, [(0.5, content)])))
    with metered(upstream, BUDGET_PER_CALLER_USD="1.5", MODEL_PRICES=PRICES) as proxy:
        headers = {**headers, "content-type": "application/json"}
        statuses = chats_at_once(proxy, 6, path=path, body=body, headers=headers)
        spent = _spent(proxy)
    assert spent <= 1.5 + 1.0002, (statuses, spent)
    assert statuses.count(200) <= 2, statuses
    assert statuses.count(429) == 6 - statuses.count(200), statuses


def test_inline_images_cannot_pass_a_token_limit_concurrently() -> None:
    """The same under RATE_LIMIT_TOKENS: each request reserved ~300 tokens and read 5,000."""
    body = _chat_parts(*[{"type": "image_url", "image_url": {"url": DATA_URL}}] * 2)
    usage = {"prompt_tokens": 5_000, "completion_tokens": 10, "total_tokens": 5_010}
    content = json.dumps({"choices": [], "usage": usage}).encode()
    upstream = ScriptedUpstream(models_or(lambda r: (200, JSON, [(0.5, content)])))
    with metered(upstream, RATE_LIMIT_TOKENS="6000") as proxy:
        statuses = chats_at_once(proxy, 6, body=body)
    # One request fits (holding the room left); the others find none.
    assert statuses.count(200) == 1, statuses


def test_which_members_carry_media_inline() -> None:
    assert inline_media({"messages": [{"content": [{"image_url": {"url": " DATA:x"}}]}]})
    assert inline_media({"contents": [{"parts": [{"inline_data": {"data": "x"}}]}]})
    assert inline_media({"input": [{"type": "input_file", "file_data": "JVBER"}]})
    # Media by URL, files by id or URI, text sources and function schemas carry none here
    # (those named elsewhere are core/protocols.py's to find).
    schema = {"type": "object", "properties": {"data": {"type": "string"}}}
    for document in (
        {"messages": [{"content": [{"image_url": {"url": "https://x.test/a.png"}}]}]},
        {"contents": [{"parts": [{"file_data": {"file_uri": "gs://x"}}]}]},
        {"messages": [{"content": [{"source": {"type": "text", "data": "plain words"}}]}]},
        {"tools": [{"type": "function", "function": {"name": "f", "parameters": schema}}]},
        {"messages": [{"role": "user", "content": "what is data:image/png?"}]},
    ):
        assert inline_media(document) is None, document
        assert inline_media(document, json.dumps(document).encode()) is None, document
    # The bytes only spare the walk: escaped, the member is still found.
    document = {"contents": [{"parts": [{"inlineData": {"data": "x"}}]}]}
    escaped = re.sub(r"[A-Za-z]", lambda m: f"\\u{ord(m.group()):04x}", json.dumps(document))
    assert json.loads(escaped) == document
    assert inline_media(document, escaped.encode()) == "inlineData"
