"""The real openai, anthropic and google-genai SDKs streaming through a proxy that meters
every reply (a token limit is on): what each SDK receives is byte for byte what it would
receive unmetered, the README's own loop works, and the tokens are counted."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

import anthropic
import httpx
import openai
import pytest
from google import genai
from google.genai import types as genai_types

from core.app import create_app
from core.config import load_settings
from tests.support.servers import FAKE_TOKEN, RunningServer, proxy_env, serve_in_thread

CREATED = re.compile(rb'"created":\s*\d+')


@contextlib.contextmanager
def proxy(upstream: RunningServer, **extra: str) -> Iterator[RunningServer]:
    env = proxy_env(
        upstream.url,
        ANTHROPIC_API_KEY="sk-fake-anthropic-sdk-key",
        ANTHROPIC_UPSTREAM=upstream.url,
        GEMINI_API_KEY="fake-gemini-sdk-key-0000",
        GEMINI_UPSTREAM=upstream.url,
        **extra,
    )
    with serve_in_thread(create_app(load_settings(env))) as server:
        yield server


@pytest.fixture(scope="module")
def plain_and_metered(
    mock_upstream: RunningServer,
) -> Iterator[tuple[RunningServer, RunningServer]]:
    with proxy(mock_upstream) as plain, proxy(mock_upstream, RATE_LIMIT_TOKENS="100000") as metered:
        yield plain, metered


def raw_stream(server: RunningServer, path: str, body: dict[str, object], **headers: str) -> bytes:
    with httpx.stream(
        "POST", f"{server.url}{path}", json=body, headers=headers, timeout=10
    ) as reply:
        return CREATED.sub(b"", reply.read())


def remaining(server: RunningServer) -> int:
    reply = httpx.get(
        f"{server.url}/v1/models", headers={"Authorization": f"Bearer {FAKE_TOKEN}"}, timeout=10
    )
    return int(reply.headers["x-ratelimit-remaining-tokens"])


def test_openai_stream_is_unchanged_and_counted(
    plain_and_metered: tuple[RunningServer, RunningServer],
) -> None:
    plain, metered = plain_and_metered
    body = {"model": "mock-model", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    auth = {"Authorization": f"Bearer {FAKE_TOKEN}"}
    assert raw_stream(metered, "/v1/chat/completions", body, **auth) == raw_stream(
        plain, "/v1/chat/completions", body, **auth
    )
    before = remaining(metered)
    client = openai.OpenAI(base_url=f"{metered.url}/v1", api_key=FAKE_TOKEN, max_retries=0)
    stream = client.chat.completions.create(
        model="mock-model", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    # The README's Quickstart loop: no chunk without choices reaches it.
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream)
    assert text
    assert remaining(metered) < before


def test_anthropic_stream_is_unchanged_and_counted(
    plain_and_metered: tuple[RunningServer, RunningServer],
) -> None:
    plain, metered = plain_and_metered
    body = {
        "model": "claude-x",
        "max_tokens": 64,
        "stream": True,
        "messages": [{"role": "user", "content": "hi"}],
    }
    key = {"x-api-key": FAKE_TOKEN}
    assert raw_stream(metered, "/anthropic/v1/messages", body, **key) == raw_stream(
        plain, "/anthropic/v1/messages", body, **key
    )
    before = remaining(metered)
    client = anthropic.Anthropic(
        base_url=f"{metered.url}/anthropic", api_key=FAKE_TOKEN, max_retries=0
    )
    with client.messages.stream(
        model="claude-x", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        assert "".join(stream.text_stream)
    assert remaining(metered) < before


def test_gemini_stream_is_unchanged_and_counted(
    plain_and_metered: tuple[RunningServer, RunningServer],
) -> None:
    plain, metered = plain_and_metered
    path = "/gemini/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse"
    body = {"contents": [{"parts": [{"text": "hi"}]}]}
    key = {"x-goog-api-key": FAKE_TOKEN}
    assert raw_stream(metered, path, body, **key) == raw_stream(plain, path, body, **key)
    before = remaining(metered)
    client = genai.Client(
        api_key=FAKE_TOKEN,
        http_options=genai_types.HttpOptions(base_url=f"{metered.url}/gemini"),
    )
    chunks = list(client.models.generate_content_stream(model="gemini-2.0-flash", contents="hi"))
    assert "".join(chunk.text or "" for chunk in chunks)
    assert remaining(metered) < before
