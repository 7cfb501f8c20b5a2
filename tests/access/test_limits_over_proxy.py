"""Rate limits through the real proxy on loopback: 429 in each caller's own error shape
with Retry-After and x-ratelimit-*, token limits from reported usage, one limit shared by
several instances through a store, and fail-open / fail-closed when the store is gone."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator

import anthropic
import httpx
import openai
import pytest

from core.app import create_app
from core.config import load_settings
from tests.support.servers import (
    FAKE_TOKEN,
    LONG_WINDOW,
    RunningServer,
    free_port,
    proxy_env,
    reset_upstream,
    serve_in_thread,
    upstream_requests,
)

AUTH = {"authorization": f"Bearer {FAKE_TOKEN}", "content-type": "application/json"}
CHAT = {"model": "mock-model", "messages": [{"role": "user", "content": "hi"}]}


@contextlib.contextmanager
def limited_proxy(upstream: RunningServer, **extra: str) -> Iterator[RunningServer]:
    env = proxy_env(
        upstream.url,
        ANTHROPIC_API_KEY="sk-mock-anthropic-key-not-real",
        ANTHROPIC_UPSTREAM=upstream.url,
        GEMINI_API_KEY="sk-mock-gemini-key-not-real",
        GEMINI_UPSTREAM=upstream.url,
        RATE_LIMIT_WINDOW=LONG_WINDOW,
        **extra,
    )
    with serve_in_thread(create_app(load_settings(env))) as server:
        yield server


def post(
    proxy: RunningServer, path: str, body: dict[str, object], **headers: str
) -> httpx.Response:
    return httpx.post(f"{proxy.url}{path}", json=body, headers={**AUTH, **headers}, timeout=10)


def test_the_request_over_the_limit_is_a_429_and_never_reaches_upstream(
    mock_upstream: RunningServer,
) -> None:
    with limited_proxy(mock_upstream, RATE_LIMIT_REQUESTS="2") as proxy:
        reset_upstream(mock_upstream)
        first = post(proxy, "/v1/chat/completions", CHAT)
        assert first.status_code == 200
        assert first.headers["x-ratelimit-limit-requests"] == "2"
        assert first.headers["x-ratelimit-remaining-requests"] == "1"
        assert (
            post(proxy, "/v1/chat/completions", CHAT).headers["x-ratelimit-remaining-requests"]
            == "0"
        )
        refused = post(proxy, "/v1/chat/completions", CHAT)
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["retry-after"]) <= int(LONG_WINDOW)
        assert refused.headers["x-ratelimit-remaining-requests"] == "0"
        error = refused.json()["error"]
        assert error["code"] == "rate_limit_exceeded" and error["type"] == "rate_limit_error"
        assert "2 requests per 44640m0s" in error["message"]  # 31 days
        assert len(upstream_requests(mock_upstream)) == 2


def test_the_openai_sdk_sees_a_rate_limit_error(mock_upstream: RunningServer) -> None:
    with limited_proxy(mock_upstream, RATE_LIMIT_REQUESTS="1") as proxy:
        sdk = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=FAKE_TOKEN, max_retries=0)
        sdk.chat.completions.create(**CHAT)  # type: ignore[call-overload]
        with pytest.raises(openai.RateLimitError) as caught:
            sdk.chat.completions.create(**CHAT)  # type: ignore[call-overload]
        assert "Rate limit reached" in str(caught.value)


def test_anthropic_callers_get_anthropics_shape(mock_upstream: RunningServer) -> None:
    with limited_proxy(mock_upstream, RATE_LIMIT_REQUESTS="1") as proxy:
        sdk = anthropic.Anthropic(
            base_url=f"{proxy.url}/anthropic", api_key=FAKE_TOKEN, max_retries=0
        )
        ask = {
            "model": "mock-model",
            "max_tokens": 16,
            "messages": [{"role": "user", "content": "hi"}],
        }
        sdk.messages.create(**ask)  # type: ignore[arg-type]
        with pytest.raises(anthropic.RateLimitError) as caught:
            sdk.messages.create(**ask)  # type: ignore[arg-type]
        assert caught.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
        assert caught.value.response.headers["retry-after"]


def test_gemini_callers_get_googles_shape(mock_upstream: RunningServer) -> None:
    with limited_proxy(mock_upstream, RATE_LIMIT_REQUESTS="1") as proxy:
        path = "/gemini/v1beta/models/gemini-2.0-flash:generateContent"
        body = {"contents": [{"parts": [{"text": "hi"}]}]}
        assert post(proxy, path, body).status_code == 200
        refused = post(proxy, path, body)
        assert refused.status_code == 429
        assert refused.json()["error"]["status"] == "RESOURCE_EXHAUSTED"
        assert refused.json()["error"]["code"] == 429


def _stream_text(response: httpx.Response) -> str:
    return response.text


@pytest.mark.parametrize(
    ("path", "body", "tokens_per_call"),
    [
        # OpenAI stream without include_usage: the proxy asks for usage itself.
        ("/v1/chat/completions", {**CHAT, "stream": True}, 9),
        ("/v1/chat/completions", CHAT, 9),
        ("/anthropic/v1/messages", {**CHAT, "max_tokens": 16, "stream": True}, 9),
        ("/gemini/v1beta/models/gemini-2.0-flash:generateContent", {"contents": []}, 9),
    ],
)
def test_token_limit_counts_reported_usage(
    mock_upstream: RunningServer, path: str, body: dict[str, object], tokens_per_call: int
) -> None:
    # Mock usage: 1 in (the words of the prompt, at least 1) + 8 out (the chunks) = 9.
    limit = 2 * tokens_per_call + 1
    with limited_proxy(mock_upstream, RATE_LIMIT_TOKENS=str(limit)) as proxy:
        first = post(proxy, path, body)
        assert first.status_code == 200, first.text
        assert first.headers["x-ratelimit-remaining-tokens"] == str(limit)
        second = post(proxy, path, body)
        assert second.headers["x-ratelimit-remaining-tokens"] == str(limit - tokens_per_call)
        third = post(proxy, path, body)
        assert third.headers["x-ratelimit-remaining-tokens"] == str(1)
        refused = post(proxy, path, body)  # 3 x usage is over the limit now
        assert refused.status_code == 429
        assert refused.headers["x-ratelimit-remaining-tokens"] == "0"
        assert "Rate limit reached: " in refused.text and "tokens per" in refused.text


def test_openai_streams_are_metered_without_the_caller_seeing_it(
    mock_upstream: RunningServer,
) -> None:
    """The proxy asks an OpenAI stream for usage itself (the tokens are counted) and takes
    the usage chunk back out: the caller's stream is what it would be unmetered, so a loop
    over `chunk.choices[0]` never meets an empty `choices`."""
    stream = {**CHAT, "stream": True}
    with limited_proxy(mock_upstream) as plain:
        unmetered = post(plain, "/v1/chat/completions", stream).text
    with limited_proxy(mock_upstream, RATE_LIMIT_TOKENS="1000") as proxy:
        reply = post(proxy, "/v1/chat/completions", stream)
        events = [
            json.loads(line[6:]) for line in reply.text.splitlines() if line.startswith("data: {")
        ]
        assert all(event["choices"] for event in events)
        assert all("usage" not in event for event in events)
        created = re.compile(r'"created":\s*\d+')
        assert created.sub("", reply.text) == created.sub("", unmetered)
        after = post(proxy, "/v1/chat/completions", stream)
        assert after.headers["x-ratelimit-remaining-tokens"] == "991"  # 9 were counted


def test_two_instances_share_one_limit_through_the_store(
    mock_upstream: RunningServer, shared_store_url: str
) -> None:
    """Two function instances, one store: the limit holds across both."""
    extra = {"RATE_LIMIT_REQUESTS": "3", "LIMIT_STORE": shared_store_url}
    with limited_proxy(mock_upstream, **extra) as one, limited_proxy(mock_upstream, **extra) as two:
        assert post(one, "/v1/chat/completions", CHAT).status_code == 200
        assert post(two, "/v1/chat/completions", CHAT).status_code == 200
        assert post(one, "/v1/chat/completions", CHAT).status_code == 200
        assert post(two, "/v1/chat/completions", CHAT).status_code == 429
        assert post(one, "/v1/chat/completions", CHAT).status_code == 429


def test_an_unreachable_store_fails_closed_by_default(mock_upstream: RunningServer) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    with limited_proxy(mock_upstream, RATE_LIMIT_REQUESTS="5", LIMIT_STORE=dead) as proxy:
        reply = post(proxy, "/v1/chat/completions", CHAT)
        assert reply.status_code == 503
        assert reply.json()["error"]["code"] == "rate_limit_store_unavailable"
        assert "127.0.0.1" not in reply.text


def test_fail_open_lets_requests_through_unmetered(mock_upstream: RunningServer) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    with limited_proxy(
        mock_upstream, RATE_LIMIT_REQUESTS="1", LIMIT_STORE=dead, LIMITS_ON_STORE_ERROR="open"
    ) as proxy:
        for _ in range(3):
            reply = post(proxy, "/v1/chat/completions", CHAT)
            assert reply.status_code == 200
            assert "x-ratelimit-remaining-requests" not in reply.headers


def test_stored_tokens_are_limited_each_on_their_own(
    mock_upstream: RunningServer, tmp_path
) -> None:
    from core.access.tokens import create_token
    from core.stores import open_store

    url = f"sqlite:///{tmp_path}/tokens.db"
    store = open_store(url)
    alice, _ = create_token(store, "alice")
    bob, _ = create_token(store, "bob")
    with limited_proxy(mock_upstream, TOKEN_STORE=url, RATE_LIMIT_REQUESTS="1") as proxy:
        as_alice = {"authorization": f"Bearer {alice}"}
        as_bob = {"authorization": f"Bearer {bob}"}
        assert post(proxy, "/v1/chat/completions", CHAT, **as_alice).status_code == 200
        assert post(proxy, "/v1/chat/completions", CHAT, **as_alice).status_code == 429
        assert post(proxy, "/v1/chat/completions", CHAT, **as_bob).status_code == 200
