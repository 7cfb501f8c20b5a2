"""Every generating route of every provider the proxy names, under MAX_TOKENS_CAP, over
real sockets in front of the mock upstream: an over-cap request is refused before it goes
upstream, either because the policy read its cap (`read`) or because the route generates
in a shape the policy cannot read (`refused`; `minting` for a realtime session's HTTP
legs). Reads and routes that generate nothing go through. docs/limits.md lists the same.

The class this guards: a route that generates, read by core/protocols.py as one that
generates nothing (Mistral's /v1/conversations taken for OpenAI's Conversations API), so
MAX_TOKENS_CAP let a 100,000-token answer through."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from core.app import create_app
from core.config import load_settings
from tests.support.all_providers import all_providers_env
from tests.support.servers import (
    FAKE_TOKEN,
    RunningServer,
    proxy_env,
    reset_upstream,
    serve_in_thread,
    upstream_requests,
)

AUTH = {"authorization": f"Bearer {FAKE_TOKEN}"}
CAP = 100
OVER = 100_000

# One body over the cap in every spelling a generating route takes: chat's and legacy
# completions' max_tokens, Responses' max_output_tokens, Gemini's generationConfig,
# Mistral's completion_args, Ollama's num_predict, Assistants' max_completion_tokens.
OVER_CAP: dict[str, Any] = {
    "model": "some-model",
    "max_tokens": OVER,
    "max_output_tokens": OVER,
    "max_completion_tokens": OVER,
    "messages": [{"role": "user", "content": "hi"}],
    "prompt": "hi",
    "input": "hi",
    "inputs": "hi",
    "completion_args": {"max_tokens": OVER},
    "options": {"num_predict": OVER},
    "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
    "generationConfig": {"maxOutputTokens": OVER},
}

# (proxy prefix, path after it, how the cap holds): `read`, the policy reads the request's
# output cap and refuses it over MAX_TOKENS_CAP; `refused`, it generates (text, images,
# video, a batch of requests) in a shape the policy cannot read, and is refused
# while the cap is set; `minting`, a realtime session made over HTTP, refused too.
GENERATING = [
    # OpenAI
    ("/openai", "/v1/chat/completions", "read"),
    ("/openai", "/v1/completions", "read"),
    ("/openai", "/v1/responses", "read"),
    ("/openai", "/v1/responses/compact", "read"),
    ("/openai", "/v1/responses/resp_1", "refused"),  # a POST OpenAI may add under /responses/
    ("/openai", "/v1/batches", "refused"),
    ("/openai", "/v1/images/generations", "refused"),
    ("/openai", "/v1/images/edits", "refused"),
    ("/openai", "/v1/images/variations", "refused"),
    ("/openai", "/v1/videos", "refused"),
    ("/openai", "/v1/videos/video_1/remix", "refused"),
    ("/openai", "/v1/threads/runs", "refused"),
    ("/openai", "/v1/threads/thread_1/runs", "refused"),
    ("/openai", "/v1/threads/thread_1/runs/run_1/submit_tool_outputs", "refused"),
    ("/openai", "/v1/evals/eval_1/runs", "refused"),
    ("/openai", "/v1/fine_tuning/alpha/graders/run", "refused"),
    ("/openai", "/v1/realtime/client_secrets", "minting"),
    ("/openai", "/v1/realtime/calls", "minting"),
    # Azure OpenAI
    ("/azure", "/openai/deployments/d/chat/completions", "read"),
    ("/azure", "/openai/v1/responses", "read"),
    ("/azure", "/openai/deployments/d/images/generations", "refused"),
    ("/azure", "/openai/batches", "refused"),
    ("/azure", "/openai/threads/thread_1/runs", "refused"),
    # DeepSeek: FIM and chat prefix completion under /beta, its Anthropic-compatible API
    ("/deepseek", "/beta/completions", "read"),
    ("/deepseek", "/beta/chat/completions", "read"),
    ("/deepseek", "/anthropic/v1/messages", "refused"),
    # Mistral
    ("/mistral", "/v1/fim/completions", "read"),
    ("/mistral", "/v1/agents/completions", "read"),
    ("/mistral", "/v1/conversations", "read"),
    ("/mistral", "/v1/conversations/conv_1", "read"),  # append
    ("/mistral", "/v1/conversations/conv_1/restart", "read"),
    ("/mistral", "/v1/batch/jobs", "refused"),
    # Groq
    ("/groq", "/v1/chat/completions", "read"),
    ("/groq", "/v1/responses", "read"),
    ("/groq", "/v1/batches", "refused"),
    # xAI
    ("/xai", "/v1/completions", "read"),
    ("/xai", "/v1/responses", "read"),
    ("/xai", "/v1/messages", "refused"),
    ("/xai", "/v1/complete", "refused"),
    ("/xai", "/v1/images/generations", "refused"),
    ("/xai", "/v1/batches/batch_1/requests", "refused"),
    # OpenRouter
    ("/openrouter", "/v1/completions", "read"),
    ("/openrouter", "/v1/responses", "read"),
    ("/openrouter", "/v1/messages", "refused"),
    # Together
    ("/together", "/v1/completions", "read"),
    ("/together", "/v1/images/generations", "refused"),
    ("/together", "/v2/videos", "refused"),
    ("/together", "/v1/batches", "refused"),
    # Fireworks
    ("/fireworks", "/v1/completions", "read"),
    ("/fireworks", "/v1/workflows/accounts/fireworks/models/flux/text_to_image", "refused"),
    # Moonshot, Perplexity, Zhipu, DashScope, Hunyuan
    ("/moonshot", "/v1/chat/completions", "read"),
    ("/moonshot", "/anthropic/v1/messages", "refused"),
    ("/perplexity", "/chat/completions", "read"),
    ("/perplexity", "/async/chat/completions", "read"),
    ("/zhipu", "/v4/chat/completions", "read"),
    ("/zhipu", "/v4/images/generations", "refused"),
    ("/zhipu", "/v4/videos/generations", "refused"),
    ("/dashscope", "/v1/chat/completions", "read"),
    ("/hunyuan", "/v1/chat/completions", "read"),
    # vLLM and Ollama
    ("/vllm", "/v1/completions", "read"),
    ("/vllm", "/v1/responses", "read"),
    ("/vllm", "/v1/messages", "refused"),
    ("/vllm", "/invocations", "refused"),
    ("/vllm", "/generate", "refused"),  # TGI's and SGLang's native routes too
    ("/vllm", "/generate_stream", "refused"),
    ("/vllm", "/", "refused"),  # TGI: a POST to its root generates
    ("/vllm", "/completion", "refused"),  # llama.cpp's server
    ("/vllm", "/infill", "refused"),
    ("/ollama", "/v1/chat/completions", "read"),
    ("/ollama", "/api/chat", "refused"),
    ("/ollama", "/api/generate", "refused"),
    # The default route: a host not known to be OpenAI's may be any vendor's
    ("/v1", "/chat/completions", "read"),
    ("/v1", "/conversations", "read"),
    # Anthropic
    ("/anthropic", "/v1/messages", "read"),
    ("/anthropic", "/v1/messages/batches", "refused"),
    ("/anthropic", "/v1/complete", "refused"),
    ("/anthropic", "/v1/chat/completions", "refused"),  # its OpenAI SDK compatibility
    ("/anthropic", "/v1/experimental/generate_prompt", "refused"),
    # Gemini, and its OpenAI-compatible endpoint
    ("/gemini", "/v1beta/models/m:generateContent", "read"),
    ("/gemini", "/v1beta/models/m:streamGenerateContent", "read"),
    ("/gemini", "/v1beta/tunedModels/t:generateContent", "read"),
    ("/gemini", "/v1beta/models/m:batchGenerateContent", "refused"),
    ("/gemini", "/v1beta/models/aqa:generateAnswer", "refused"),
    ("/gemini", "/v1beta/models/m:generateText", "refused"),
    ("/gemini", "/v1beta/models/imagen:predict", "refused"),
    ("/gemini", "/v1beta/models/veo:predictLongRunning", "refused"),
    ("/gemini", "/v1beta/interactions", "refused"),
    ("/gemini", "/v1alpha/auth_tokens", "minting"),
    ("/gemini/v1beta/openai", "/chat/completions", "read"),
    ("/gemini/v1beta/openai", "/images/generations", "refused"),
]

# Reads, and requests that generate nothing (embedding, counting tokens, storing a
# conversation's items with OpenAI, cancelling): never refused by the cap.
NOT_GENERATING = [
    ("GET", "/openai", "/v1/models"),
    ("GET", "/openai", "/v1/responses/resp_1"),
    ("GET", "/openai", "/v1/batches"),
    ("GET", "/openai", "/v1/videos/video_1"),
    ("GET", "/openai", "/v1/threads/thread_1/runs"),
    ("GET", "/openai", "/v1/evals/eval_1/runs"),
    ("GET", "/mistral", "/v1/conversations"),
    ("GET", "/mistral", "/v1/conversations/conv_1"),
    ("GET", "/mistral", "/v1/batch/jobs"),
    ("GET", "/anthropic", "/v1/messages/batches"),
    ("GET", "/gemini", "/v1beta/models"),
    ("GET", "/gemini", "/v1beta/cachedContents"),
    ("GET", "/gemini", "/v1beta/tunedModels"),
    ("GET", "/ollama", "/api/tags"),
    ("POST", "/openai", "/v1/embeddings"),
    ("POST", "/openai", "/v1/conversations"),  # OpenAI's: stores items
    ("POST", "/openai", "/v1/conversations/conv_1/items"),
    ("POST", "/azure", "/openai/v1/conversations"),
    ("POST", "/mistral", "/v1/conversations/conv_1/items"),
    ("POST", "/openai", "/v1/responses/input_tokens"),
    ("POST", "/openai", "/v1/responses/resp_1/cancel"),
    ("POST", "/openai", "/v1/batches/batch_1/cancel"),
    # Bounded by what is sent (the audio to transcribe, the text to read), as embeddings are.
    ("POST", "/openai", "/v1/audio/transcriptions"),
    ("POST", "/openai", "/v1/audio/speech"),
    ("POST", "/groq", "/v1/audio/speech"),
    ("POST", "/openai", "/v1/fine_tuning/jobs"),
    ("POST", "/anthropic", "/v1/messages/count_tokens"),
    ("POST", "/gemini", "/v1beta/models/m:countTokens"),
    ("POST", "/gemini", "/v1beta/models/m:embedContent"),
]


def spellings(path: str) -> list[str]:
    """The path in spellings an upstream reads as the same route: a trailing slash, upper
    case, a doubled slash, an encoded slash, a path parameter."""
    head, _, tail = path.lstrip("/").partition("/")
    spelled = [
        path + "/",
        path.upper().replace("%2F", "%2f"),
        f"/{head}//{tail}" if tail else path + "//",
        f"/{head};x/{tail}" if tail else path + ";x",
    ]
    if tail:
        spelled.append(f"/{head}%2F{tail}")
    return spelled


@pytest.fixture(scope="module")
def capped(mock_upstream: RunningServer) -> Iterator[RunningServer]:
    """Every catalogue provider (and the default route) on the mock, under MAX_TOKENS_CAP."""
    env = proxy_env(
        mock_upstream.url, **all_providers_env(mock_upstream.url), MAX_TOKENS_CAP=str(CAP)
    )
    with serve_in_thread(create_app(load_settings(env))) as server:
        yield server


@pytest.fixture(scope="module")
def token_limited(mock_upstream: RunningServer) -> Iterator[RunningServer]:
    """The same providers under a per-caller token limit (no policy caps)."""
    env = proxy_env(
        mock_upstream.url, **all_providers_env(mock_upstream.url), RATE_LIMIT_TOKENS=str(10**9)
    )
    with serve_in_thread(create_app(load_settings(env))) as server:
        yield server


@pytest.fixture(scope="module")
def caller() -> Iterator[httpx.Client]:
    """One client for the module's requests (a client per request spends most of its time
    setting up TLS contexts it never uses)."""
    with httpx.Client(headers=AUTH, timeout=10) as client:
        yield client


def reset(caller: httpx.Client, upstream: RunningServer) -> None:
    caller.post(f"{upstream.url}/_mock/reset")


def received(caller: httpx.Client, upstream: RunningServer) -> list[dict[str, Any]]:
    """What the mock upstream received since the last reset."""
    return list(caller.get(f"{upstream.url}/_mock/requests").json())


def error_message(prefix: str, reply: httpx.Response) -> str:
    """The refusal's message, read in the shape the caller's SDK reads for that route."""
    body = reply.json()
    if prefix == "/anthropic":
        assert body["type"] == "error", body
    elif prefix == "/gemini":
        assert isinstance(body["error"]["status"], str), body
    return str(body["error"]["message"])


@pytest.mark.parametrize(("prefix", "path", "how"), GENERATING)
def test_an_over_cap_generation_never_reaches_the_upstream(
    capped: RunningServer,
    mock_upstream: RunningServer,
    caller: httpx.Client,
    prefix: str,
    path: str,
    how: str,
) -> None:
    reset(caller, mock_upstream)
    reply = caller.post(f"{capped.url}{prefix}{path}", json=OVER_CAP)
    assert 400 <= reply.status_code < 500, reply.text
    message = error_message(prefix, reply)
    if how == "read":
        assert f"is {OVER}; this proxy allows 1 to {CAP}" in message, message
    elif how == "refused":
        assert "MAX_TOKENS_CAP" in message, message
    # The same route in any spelling an upstream reads as it is refused as well.
    for spelled in spellings(path):
        reply = caller.post(f"{capped.url}{prefix}{spelled}", json=OVER_CAP)
        assert 400 <= reply.status_code < 500, (spelled, reply.text)
    assert received(caller, mock_upstream) == []


@pytest.mark.parametrize(("method", "prefix", "path"), NOT_GENERATING)
def test_a_route_that_generates_nothing_is_not_refused(
    capped: RunningServer,
    mock_upstream: RunningServer,
    caller: httpx.Client,
    method: str,
    prefix: str,
    path: str,
) -> None:
    reset(caller, mock_upstream)
    body = OVER_CAP if method == "POST" else None
    reply = caller.request(method, f"{capped.url}{prefix}{path}", json=body)
    assert "MAX_TOKENS_CAP" not in reply.text, reply.text
    assert len(received(caller, mock_upstream)) == 1, (
        reply.status_code,
        reply.text,
    )


def test_images_and_video_have_no_conversation_for_max_messages(
    mock_upstream: RunningServer,
) -> None:
    """Media routes are refused for MAX_TOKENS_CAP, which cannot bound what they write; a
    deployment that caps only MAX_MESSAGES still serves them."""
    env = proxy_env(mock_upstream.url, **all_providers_env(mock_upstream.url), MAX_MESSAGES="2")
    with serve_in_thread(create_app(load_settings(env))) as proxy:
        for path in ("/openai/v1/images/generations", "/openai/v1/videos"):
            reset_upstream(mock_upstream)
            httpx.post(f"{proxy.url}{path}", json=OVER_CAP, headers=AUTH, timeout=10)
            assert len(upstream_requests(mock_upstream)) == 1, path
        # A generating route it cannot read is still refused under MAX_MESSAGES.
        reset_upstream(mock_upstream)
        reply = httpx.post(
            f"{proxy.url}/openai/v1/threads/runs", json=OVER_CAP, headers=AUTH, timeout=10
        )
        assert reply.status_code == 400, reply.text
        assert upstream_requests(mock_upstream) == []


UNREAD = [(prefix, path) for prefix, path, how in GENERATING if how != "read"]


@pytest.mark.parametrize(("prefix", "path"), UNREAD)
def test_a_generation_the_meter_cannot_read_is_refused_under_a_token_limit(
    token_limited: RunningServer,
    mock_upstream: RunningServer,
    caller: httpx.Client,
    prefix: str,
    path: str,
) -> None:
    """What the policy cannot read, the meter cannot count either: under a token limit (or
    a dollar budget) each of these is refused too, in the route's own error shape."""
    reset(caller, mock_upstream)
    reply = caller.post(f"{token_limited.url}{prefix}{path}", json=OVER_CAP)
    assert 400 <= reply.status_code < 500, reply.text
    error_message(prefix, reply)
    assert received(caller, mock_upstream) == []
