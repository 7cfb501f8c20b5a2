"""The routes the Python SDKs call by default beyond chat, through the proxy to the mock
upstream: each SDK parses the reply and reads the usage the mock reports (prompt words in,
8 chunks out), and the upstream sees the real key."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx
import openai
from google import genai
from google.genai import types as genai_types

from tests.sdk.conftest import KEYS, SDKStack
from tests.support.servers import reset_upstream, upstream_requests

CHUNKS = 8
TEXT = "Hello from the mock upstream, streamed token"
MESSAGES: Any = [{"role": "user", "content": "hi"}]


def oai(stack: SDKStack) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{stack.proxy.url}/openai/v1", api_key=stack.token, max_retries=0, timeout=20
    )


def upstream_paths(stack: SDKStack) -> list[str]:
    seen = upstream_requests(stack.upstream)
    for request in seen:
        assert stack.token not in str(request)
    return [str(request["path"]) for request in seen]


def test_openai_responses_whole_and_streamed(stack: SDKStack) -> None:
    reset_upstream(stack.upstream)
    reply = oai(stack).responses.create(model="gpt-test", input="two words")
    assert reply.output_text == TEXT
    assert reply.usage is not None
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (2, CHUNKS)
    with oai(stack).responses.stream(model="gpt-test", input="two words") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == TEXT
    assert final.usage is not None and final.usage.total_tokens == 2 + CHUNKS
    assert upstream_paths(stack) == ["/v1/responses", "/v1/responses"]


def test_openai_legacy_completions_stream_with_usage(stack: SDKStack) -> None:
    chunks = list(
        oai(stack).completions.create(
            model="gpt-test",
            prompt="one two three",
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == TEXT
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 3


def test_openai_audio_and_embeddings(stack: SDKStack) -> None:
    reset_upstream(stack.upstream)
    transcript = oai(stack).audio.transcriptions.create(
        model="gpt-4o-transcribe", file=("clip.wav", b"\0" * 3000, "audio/wav")
    )
    assert transcript.text == TEXT
    assert transcript.usage is not None and transcript.usage.type == "tokens"
    assert transcript.usage.input_tokens == 3
    speech = oai(stack).audio.speech.create(model="tts-1", voice="alloy", input="hello")
    assert speech.read()[:4] == b"RIFF"
    embedded = oai(stack).embeddings.create(model="text-embedding-3-small", input=["a b", "c"])
    assert len(embedded.data) == 2 and embedded.usage.prompt_tokens == 3
    assert upstream_paths(stack) == [
        "/v1/audio/transcriptions",
        "/v1/audio/speech",
        "/v1/embeddings",
    ]
    for request in upstream_requests(stack.upstream):
        assert request["headers"]["authorization"] == f"Bearer {KEYS['OPENAI']}"


def test_anthropic_count_tokens_and_tool_use_stream(stack: SDKStack) -> None:
    client = anthropic.Anthropic(
        base_url=f"{stack.proxy.url}/anthropic", api_key=stack.token, max_retries=0, timeout=20
    )
    assert client.messages.count_tokens(model="claude-test", messages=MESSAGES).input_tokens == 1
    tool: Any = {
        "name": "lookup",
        "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}},
    }
    with client.messages.stream(
        model="claude-test", max_tokens=50, messages=MESSAGES, tools=[tool]
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert final.content[0].type == "tool_use" and final.content[0].input == {"q": "mock"}
    assert final.usage.output_tokens == CHUNKS


def test_gemini_count_embed_and_json_array_stream(stack: SDKStack) -> None:
    options = genai_types.HttpOptions(base_url=f"{stack.proxy.url}/gemini", timeout=20_000)
    client = genai.Client(api_key=stack.token, http_options=options)
    assert client.models.count_tokens(model="gemini-2.0-flash", contents="a b c").total_tokens == 3
    embedded = client.models.embed_content(model="text-embedding-004", contents="hello")
    assert embedded.embeddings and len(embedded.embeddings[0].values or []) == 3

    # Without alt=sse the API streams one JSON array; the proxy passes it through as it comes.
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    with httpx.stream(
        "POST",
        f"{stack.proxy.url}/gemini/v1beta/models/gemini-2.0-flash:streamGenerateContent",
        json=body,
        headers={"x-goog-api-key": stack.token},
        timeout=20,
    ) as reply:
        assert reply.status_code == 200
        whole = reply.read()
    chunks = json.loads(whole)
    assert "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks) == TEXT
    assert chunks[-1]["usageMetadata"]["totalTokenCount"] == 1 + CHUNKS
