"""Refusals a retry cannot cure soon make the real SDKs raise at once (issue 19, class 8).

The Stainless SDKs (openai, anthropic) retry 429 and 5xx twice by default, sleeping as long as
Retry-After says: a budget refusal's Retry-After runs to the window's end (hours), the kill
switch's is 60 s. Each refusal below is made by a real proxy on a real socket, in front of the
mock upstream; the SDKs' sleep is recorded instead of slept, and the proxy counts attempts.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import anthropic._base_client
import httpx
import openai
import openai._base_client
import pytest
import tenacity.nap
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from core.access.status import ServiceStatus
from core.access.tokens import create_token
from core.app import MisconfiguredApp, create_app
from core.config import load_settings
from core.stores import open_store
from core.types import Receive, Scope, Send
from tests.support.servers import FAKE_TOKEN, LONG_WINDOW, RunningServer, proxy_env, serve_in_thread


class CountingApp:
    """Counts the HTTP requests that reach the proxy (the SDKs' attempts)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.attempts = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.attempts += 1
        await self.app(scope, receive, send)


class Sleeps:
    """Stands in for the `time` module where an SDK sleeps between attempts."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.seconds.append(seconds)

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> Sleeps:
    recorded = Sleeps()
    for module in (openai._base_client, anthropic._base_client, tenacity.nap):
        monkeypatch.setattr(module, "time", recorded)
    return recorded


@contextlib.contextmanager
def running(app: Any) -> Iterator[tuple[RunningServer, CountingApp]]:
    counting = CountingApp(app)
    with serve_in_thread(counting) as server:
        yield server, counting


def proxy_app(upstream: RunningServer, **extra: str) -> Any:
    env = proxy_env(
        upstream.url,
        ANTHROPIC_API_KEY="fake-anthropic-key-for-tests",
        ANTHROPIC_UPSTREAM=upstream.url,
        GEMINI_API_KEY="fake-gemini-key-for-tests",
        GEMINI_UPSTREAM=upstream.url,
        **extra,
    )
    return create_app(load_settings(env))


# --- the refusals: each returns the proxy app and the token a caller uses -------------------


def budget(upstream: RunningServer, tmp_path: Path) -> tuple[Any, str]:
    # The mock's reply costs $0.009 at these prices: once `prime` has spent the budget, every request
    # is refused until the day ends.
    prices = json.dumps({"*": {"input": 1000, "output": 1000}})
    app = proxy_app(upstream, BUDGET_PER_CALLER_USD="0.005", MODEL_PRICES=prices)
    return app, FAKE_TOKEN


def kill_switch(upstream: RunningServer, tmp_path: Path) -> tuple[Any, str]:
    url = f"sqlite:///{tmp_path}/tokens.db"
    ServiceStatus(open_store(url)).set_online(False)
    return proxy_app(upstream, TOKEN_STORE=url, TOKEN_CACHE_SECONDS="0"), FAKE_TOKEN


def schedule(upstream: RunningServer, tmp_path: Path) -> tuple[Any, str]:
    url = f"sqlite:///{tmp_path}/tokens.db"
    now = time.time()
    window = {
        "from": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 3600)),
        "to": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + 3600)),
    }
    ServiceStatus(open_store(url)).set_windows([window])
    return proxy_app(upstream, TOKEN_STORE=url, TOKEN_CACHE_SECONDS="0"), FAKE_TOKEN


def request_limit(upstream: RunningServer, tmp_path: Path) -> tuple[Any, str]:
    # One request an hour; `prime` spends it before the SDK asks.
    app = proxy_app(upstream, RATE_LIMIT_REQUESTS="1", RATE_LIMIT_WINDOW=LONG_WINDOW)
    return app, FAKE_TOKEN


def token_limit(upstream: RunningServer, tmp_path: Path) -> tuple[Any, str]:
    # 5 tokens an hour, spent by `prime` (the mock's reply counts 9).
    return proxy_app(upstream, RATE_LIMIT_TOKENS="5", RATE_LIMIT_WINDOW=LONG_WINDOW), FAKE_TOKEN


def policy(upstream: RunningServer, tmp_path: Path) -> tuple[Any, str]:
    return proxy_app(upstream, ALLOWED_MODELS="some-other-model"), FAKE_TOKEN


def scope(upstream: RunningServer, tmp_path: Path) -> tuple[Any, str]:
    url = f"sqlite:///{tmp_path}/tokens.db"
    token, _ = create_token(open_store(url), "scoped", models=("some-other-model",))
    return proxy_app(upstream, TOKEN_STORE=url), token


def misconfigured(upstream: RunningServer, tmp_path: Path) -> tuple[Any, str]:
    # A function platform's answer to bad settings: a 500 on every request, never a crash loop.
    return MisconfiguredApp(["UPSTREAM_BASE_URL is not set"]), FAKE_TOKEN


REFUSALS: dict[str, tuple[Callable[[RunningServer, Path], tuple[Any, str]], int]] = {
    "budget": (budget, 429),
    "kill switch": (kill_switch, 503),
    "schedule": (schedule, 503),
    "request limit": (request_limit, 429),
    "token limit": (token_limit, 429),
    "policy": (policy, 403),
    "scope": (scope, 403),
    "misconfigured": (misconfigured, 500),
}


PRIMED = {"budget", "request limit", "token limit"}


def prime(server: RunningServer, token: str) -> None:
    """Spend a limit or a budget with one request the proxy lets through (the first request
    of a window may take all that is left)."""
    reply = httpx.post(
        f"{server.url}/v1/chat/completions",
        headers={"authorization": f"Bearer {token}"},
        json={"model": "mock-model", "max_tokens": 1000, "messages": []},
    )
    assert reply.status_code == 200, reply.text


# --- the SDKs: each makes one call the proxy refuses, and returns the status it raised -------


def call_openai(server: RunningServer, token: str) -> int:
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=token)  # default: 2 retries
    with pytest.raises(openai.APIStatusError) as raised:
        client.chat.completions.create(
            model="mock-model", max_tokens=1000, messages=[{"role": "user", "content": "hi"}]
        )
    return raised.value.status_code


def call_anthropic(server: RunningServer, token: str) -> int:
    client = anthropic.Anthropic(base_url=f"{server.url}/anthropic", api_key=token)
    with pytest.raises(anthropic.APIStatusError) as raised:
        client.messages.create(
            model="claude-mock", max_tokens=1000, messages=[{"role": "user", "content": "hi"}]
        )
    return raised.value.status_code


def call_genai(server: RunningServer, token: str) -> int:
    client = genai.Client(
        api_key=token, http_options=genai_types.HttpOptions(base_url=f"{server.url}/gemini")
    )
    with pytest.raises(genai_errors.APIError) as raised:
        client.models.generate_content(
            model="gemini-2.0-flash",
            contents="hi",
            config=genai_types.GenerateContentConfig(max_output_tokens=1000),
        )
    return int(raised.value.code)


SDKS = {"openai": call_openai, "anthropic": call_anthropic, "google-genai": call_genai}


@pytest.mark.parametrize("sdk", SDKS)
@pytest.mark.parametrize("refusal", REFUSALS)
def test_a_refusal_no_retry_can_cure_soon_raises_at_once(
    refusal: str, sdk: str, mock_upstream: RunningServer, tmp_path: Path, sleeps: Sleeps
) -> None:
    build, status = REFUSALS[refusal]
    app, token = build(mock_upstream, tmp_path)
    with running(app) as (server, counted):
        if refusal in PRIMED:
            prime(server, token)
        counted.attempts = 0
        started = time.monotonic()
        assert SDKS[sdk](server, token) == status
        took = time.monotonic() - started
    assert counted.attempts == 1, f"{sdk} tried {counted.attempts} times"
    assert sleeps.seconds == [], f"{sdk} chose to sleep {sleeps.seconds}"
    assert took < 5


def test_the_refusal_says_so_and_keeps_retry_after(
    mock_upstream: RunningServer, tmp_path: Path
) -> None:
    app, token = budget(mock_upstream, tmp_path)
    with running(app) as (server, _):
        prime(server, token)
        reply = httpx.post(
            f"{server.url}/v1/chat/completions",
            headers={"authorization": f"Bearer {token}"},
            json={"model": "mock-model", "max_tokens": 1000, "messages": []},
        )
    assert reply.status_code == 429
    assert reply.headers["x-should-retry"] == "false"
    assert int(reply.headers["retry-after"]) >= 1  # informational, for clients that read it


def test_a_rate_limit_that_clears_in_seconds_stays_retryable(
    mock_upstream: RunningServer, sleeps: Sleeps
) -> None:
    """The SDK's own retry is the right answer to a window that ends within seconds."""
    app = proxy_app(mock_upstream, RATE_LIMIT_REQUESTS="1", RATE_LIMIT_WINDOW="10")
    auth = {"authorization": f"Bearer {FAKE_TOKEN}"}
    with running(app) as (server, counted):
        for _ in range(3):  # windows are aligned: start well inside one
            httpx.get(f"{server.url}/v1/models", headers=auth)
            reply = httpx.get(f"{server.url}/v1/models", headers=auth)
            assert reply.status_code == 429 and "x-should-retry" not in reply.headers
            wait = int(reply.headers["retry-after"])
            if wait >= 3:
                break
            time.sleep(wait)  # the window's last seconds: take the next one
        counted.attempts = 0
        # The recorded sleeps return at once, so every attempt lands in the same window.
        assert call_openai(server, FAKE_TOKEN) == 429
    assert counted.attempts == 3
    assert len(sleeps.seconds) == 2 and all(0 < s <= 10 for s in sleeps.seconds)


def test_passing_faults_stay_retryable(mock_upstream: RunningServer, sleeps: Sleeps) -> None:
    """An upstream that cannot be reached is worth the SDK's retry: no header says otherwise."""
    env = proxy_env("http://127.0.0.1:9", UPSTREAM_CONNECT_TIMEOUT="1")
    with running(create_app(load_settings(env))) as (server, counted):
        reply = httpx.get(
            f"{server.url}/v1/models", headers={"authorization": f"Bearer {FAKE_TOKEN}"}
        )
        assert reply.status_code == 502 and "x-should-retry" not in reply.headers
        counted.attempts = 0
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=FAKE_TOKEN)
        with pytest.raises(openai.APIStatusError):
            client.models.list()
    assert counted.attempts == 3 and len(sleeps.seconds) == 2


def test_a_token_limit_refusal_does_not_read_as_a_context_overflow(
    mock_upstream: RunningServer, tmp_path: Path
) -> None:
    """LangChain's Gemini chat model (langchain-google-genai) classifies a google-genai
    ClientError whose text holds "token limit" (any case) as a context overflow, before it
    looks at the status: a caller over its token limit got `GoogleContextOverflowError`
    instead of `GoogleRateLimitError`, and an agent's summarization middleware would compact
    the conversation and call again. The refusal is a rate limit and must read as one."""
    app, token = token_limit(mock_upstream, tmp_path)
    with running(app) as (server, _):
        prime(server, token)
        client = genai.Client(
            api_key=token, http_options=genai_types.HttpOptions(base_url=f"{server.url}/gemini")
        )
        with pytest.raises(genai_errors.ClientError) as raised:
            client.models.generate_content(model="gemini-2.0-flash", contents="hi")
    assert raised.value.code == 429
    text = str(raised.value).lower()
    assert "rate limit reached" in text
    # LangChain's context-overflow tests (langchain_google_genai.chat_models._handle_client_error).
    assert "token limit" not in text
    assert "exceeds the maximum number of tokens allowed" not in text


def test_a_misconfigured_deployment_answers_each_sdk_in_its_own_shape(
    mock_upstream: RunningServer, tmp_path: Path
) -> None:
    """No route is switched on, yet the path names the caller's protocol: google-genai read
    OpenAI's shape as `500 None.` (no status), and Anthropic's SDK found no error type."""
    app, token = misconfigured(mock_upstream, tmp_path)
    with running(app) as (server, _):
        claude = anthropic.Anthropic(
            base_url=f"{server.url}/anthropic", api_key=token, max_retries=0
        )
        with pytest.raises(anthropic.InternalServerError) as anthropic_raised:
            claude.messages.create(model="claude-mock", max_tokens=10, messages=[])
        gemini = genai.Client(
            api_key=token, http_options=genai_types.HttpOptions(base_url=f"{server.url}/gemini")
        )
        with pytest.raises(genai_errors.ServerError) as genai_raised:
            gemini.models.generate_content(model="gemini-2.0-flash", contents="hi")
    body = anthropic_raised.value.body
    assert isinstance(body, dict) and body["error"]["type"] == "api_error"
    assert "UPSTREAM_BASE_URL" in anthropic_raised.value.message
    assert genai_raised.value.status == "INTERNAL"
    assert "UPSTREAM_BASE_URL" in (genai_raised.value.message or "")
