"""Every provider route over real sockets: where the request lands, with which key, and
what never leaves the proxy (the caller's token, Gemini's ?key=)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support.all_providers import fake_key
from tests.support.servers import (
    FAKE_TOKEN,
    FAKE_UPSTREAM_KEY,
    RunningServer,
    reset_upstream,
    upstream_requests,
)

CHAT = {"model": "some-model", "messages": [{"role": "user", "content": "hi"}]}


def call(
    proxy: RunningServer,
    upstream: RunningServer,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    json: Any = CHAT,
    method: str = "POST",
) -> tuple[httpx.Response, dict[str, Any]]:
    """One request through the proxy, and what the upstream received for it."""
    reset_upstream(upstream)
    sent = {"authorization": f"Bearer {FAKE_TOKEN}", **(headers or {})}
    sent = {name: value for name, value in sent.items() if value}  # "" drops a header
    reply = httpx.request(
        method, proxy.url + path, headers=sent, json=json if method == "POST" else None, timeout=10
    )
    seen = upstream_requests(upstream)
    assert len(seen) == 1, f"upstream saw {len(seen)} requests for {path}"
    assert FAKE_TOKEN not in str(seen[0]), "the caller's token reached the upstream"
    return reply, seen[0]


# (route on the proxy, path the vendor sees: the preset's base path + the rest verbatim)
OPENAI_COMPATIBLE = [
    ("openai", "/openai/v1/chat/completions", "/v1/chat/completions"),
    ("deepseek", "/deepseek/v1/chat/completions", "/v1/chat/completions"),
    ("groq", "/groq/v1/chat/completions", "/openai/v1/chat/completions"),
    ("mistral", "/mistral/v1/chat/completions", "/v1/chat/completions"),
    ("openrouter", "/openrouter/v1/chat/completions", "/api/v1/chat/completions"),
    ("together", "/together/v1/chat/completions", "/v1/chat/completions"),
    ("xai", "/xai/v1/chat/completions", "/v1/chat/completions"),
    ("fireworks", "/fireworks/v1/chat/completions", "/inference/v1/chat/completions"),
    ("perplexity", "/perplexity/chat/completions", "/chat/completions"),
    ("moonshot", "/moonshot/v1/chat/completions", "/v1/chat/completions"),
    ("zhipu", "/zhipu/v4/chat/completions", "/api/paas/v4/chat/completions"),
    ("dashscope", "/dashscope/v1/chat/completions", "/compatible-mode/v1/chat/completions"),
    ("hunyuan", "/hunyuan/v1/chat/completions", "/v1/chat/completions"),
    ("vllm", "/vllm/v1/chat/completions", "/v1/chat/completions"),
]


@pytest.mark.parametrize(("name", "route", "upstream_path"), OPENAI_COMPATIBLE)
def test_openai_compatible_preset_gets_its_own_bearer_key(
    all_providers_proxy: RunningServer,
    mock_upstream: RunningServer,
    name: str,
    route: str,
    upstream_path: str,
) -> None:
    reply, seen = call(all_providers_proxy, mock_upstream, route)
    assert reply.status_code == 200
    assert reply.json()["object"] == "chat.completion"
    assert seen["path"] == upstream_path
    env = "AZURE_OPENAI" if name == "azure" else name.upper()
    assert seen["headers"]["authorization"] == f"Bearer {fake_key(env)}"


def test_ollama_runs_keyless(
    all_providers_proxy: RunningServer, mock_upstream: RunningServer
) -> None:
    reply, seen = call(all_providers_proxy, mock_upstream, "/ollama/v1/chat/completions")
    assert reply.status_code == 200
    assert seen["path"] == "/v1/chat/completions"
    assert "authorization" not in seen["headers"]


def test_default_route_is_unchanged_beside_the_providers(
    all_providers_proxy: RunningServer, mock_upstream: RunningServer
) -> None:
    reply, seen = call(all_providers_proxy, mock_upstream, "/v1/chat/completions")
    assert reply.status_code == 200
    assert seen["headers"]["authorization"] == f"Bearer {FAKE_UPSTREAM_KEY}"


@pytest.mark.parametrize(
    "route",
    [
        "/anthropic/v1/messages",
        "/anthropic/v1/messages/count_tokens",
        "/anthropic/v1/messages/batches",
    ],
)
def test_anthropic_gets_x_api_key_and_its_version_headers(
    all_providers_proxy: RunningServer, mock_upstream: RunningServer, route: str
) -> None:
    reply, seen = call(
        all_providers_proxy,
        mock_upstream,
        route,
        headers={
            "authorization": "",
            "x-api-key": FAKE_TOKEN,
            "anthropic-version": "2023-06-01",
            "anthropic-beta": "prompt-caching-2024-07-31",
        },
        json={
            "model": "claude-x",
            "max_tokens": 5,
            "messages": [{"role": "user", "content": "hi"}],
        },
    )
    assert seen["path"] == route.removeprefix("/anthropic")
    headers = seen["headers"]
    assert headers["x-api-key"] == fake_key("ANTHROPIC")
    assert "authorization" not in headers
    assert headers["anthropic-version"] == "2023-06-01"
    assert headers["anthropic-beta"] == "prompt-caching-2024-07-31"
    if route.endswith("/messages"):
        assert reply.json()["type"] == "message"


def test_anthropic_models_list(
    all_providers_proxy: RunningServer, mock_upstream: RunningServer
) -> None:
    reply, seen = call(
        all_providers_proxy,
        mock_upstream,
        "/anthropic/v1/models",
        method="GET",
        headers={"authorization": "", "x-api-key": FAKE_TOKEN},
    )
    assert reply.status_code == 200
    assert seen["path"] == "/v1/models"


@pytest.mark.parametrize(
    ("route", "query"),
    [
        ("/gemini/v1beta/models/gemini-2.0-flash:generateContent", ""),
        ("/gemini/v1beta/models/gemini-2.0-flash:streamGenerateContent", "alt=sse"),
        ("/gemini/v1/models/gemini-2.0-flash:countTokens", ""),
        ("/gemini/v1beta/models/text-embedding-004:embedContent", ""),
    ],
)
def test_gemini_key_param_is_removed_and_real_key_set_in_header(
    all_providers_proxy: RunningServer, mock_upstream: RunningServer, route: str, query: str
) -> None:
    # The caller's ?key= sits between other parameters: only it goes.
    full_query = f"key={FAKE_TOKEN}" if not query else f"{query}&key={FAKE_TOKEN}&x=1"
    reply, seen = call(
        all_providers_proxy,
        mock_upstream,
        f"{route}?{full_query}",
        headers={"authorization": ""},
        json={"contents": [{"parts": [{"text": "hi"}]}]},
    )
    assert seen["path"] == route.removeprefix("/gemini")
    assert seen["query"] == (f"{query}&x=1" if query else "")
    assert "key=" not in seen["query"]
    assert seen["headers"]["x-goog-api-key"] == fake_key("GEMINI")
    if ":generateContent" in route or ":streamGenerateContent" in route:
        assert reply.status_code == 200
        assert "candidates" in reply.text


def test_gemini_models_list(
    all_providers_proxy: RunningServer, mock_upstream: RunningServer
) -> None:
    reply, seen = call(
        all_providers_proxy,
        mock_upstream,
        "/gemini/v1beta/models",
        method="GET",
        headers={"authorization": "", "x-goog-api-key": FAKE_TOKEN},
    )
    assert reply.status_code == 200
    assert seen["path"] == "/v1beta/models"


def test_gemini_openai_compatible_endpoint_takes_the_key_as_bearer(
    all_providers_proxy: RunningServer, mock_upstream: RunningServer
) -> None:
    reply, seen = call(all_providers_proxy, mock_upstream, "/gemini/v1beta/openai/chat/completions")
    assert reply.status_code == 200
    assert seen["path"] == "/v1beta/openai/chat/completions"
    assert seen["headers"]["authorization"] == f"Bearer {fake_key('GEMINI')}"
    assert "x-goog-api-key" not in seen["headers"]


def test_azure_deployment_path_api_version_and_api_key(
    all_providers_proxy: RunningServer, mock_upstream: RunningServer
) -> None:
    reply, seen = call(
        all_providers_proxy,
        mock_upstream,
        "/azure/openai/deployments/my-gpt4o/chat/completions?api-version=2024-10-21",
        headers={"authorization": "", "api-key": FAKE_TOKEN},
    )
    assert reply.status_code == 200
    assert seen["path"] == "/openai/deployments/my-gpt4o/chat/completions"
    assert seen["query"] == "api-version=2024-10-21"
    assert seen["headers"]["api-key"] == fake_key("AZURE_OPENAI")
    assert "authorization" not in seen["headers"]


@pytest.mark.parametrize(
    ("route", "slot", "check"),
    [
        (
            "/openai/v1/chat/completions",
            "authorization",
            lambda b: b["error"]["code"] == "invalid_api_key",
        ),
        (
            "/anthropic/v1/messages",
            "x-api-key",
            lambda b: b["error"]["type"] == "authentication_error",
        ),
        (
            "/gemini/v1beta/models/g:generateContent",
            "x-goog-api-key",
            lambda b: b["error"]["status"] == "UNAUTHENTICATED",
        ),
        ("/gemini/v1beta/openai/chat/completions", "authorization", lambda b: b["error"]["type"]),
    ],
)
def test_bad_token_is_refused_in_the_callers_shape(
    all_providers_proxy: RunningServer, route: str, slot: str, check: Any
) -> None:
    value = "Bearer not-a-valid-token-at-all" if slot == "authorization" else "not-a-valid-token"
    reply = httpx.post(
        all_providers_proxy.url + route, headers={slot: value}, json=CHAT, timeout=10
    )
    assert reply.status_code == 401
    assert check(reply.json())
    assert "sk-mock" not in reply.text


def test_default_route_alone_serves_no_provider_prefix(proxy: RunningServer) -> None:
    """The base deployment (only UPSTREAM_*) answers /v1 and nothing else."""
    headers = {"authorization": f"Bearer {FAKE_TOKEN}"}
    assert (
        httpx.post(f"{proxy.url}/v1/chat/completions", headers=headers, json=CHAT).status_code
        == 200
    )
    reply = httpx.post(f"{proxy.url}/anthropic/v1/messages", headers=headers, json=CHAT)
    assert reply.status_code == 404
    # In Anthropic's own shape, saying why: the route exists but is not switched on.
    assert reply.json()["type"] == "error"
    error = reply.json()["error"]
    assert error["type"] == "not_found_error"
    assert error["message"] == (
        "The /anthropic route is not switched on on this proxy: its operator has not set "
        "ANTHROPIC_API_KEY."
    )
    reply = httpx.post(f"{proxy.url}/deepseek/v1/chat/completions", headers=headers, json=CHAT)
    assert reply.status_code == 404
    assert "has not set DEEPSEEK_API_KEY" in reply.json()["error"]["message"]
    # A path no provider has keeps the route hint, which applies here (/v1 is served).
    reply = httpx.post(f"{proxy.url}/nowhere/chat", headers=headers, json=CHAT)
    assert reply.status_code == 404
    assert reply.json()["error"]["code"] == "not_found"
    assert "use /v1/..." in reply.json()["error"]["message"]


async def test_a_route_not_switched_on_says_which_setting_in_its_providers_shape() -> None:
    """A deployment with OpenAI's route only: each other provider's route is a 404 that
    names the setting that switches it on, in the shape its SDK reads; a path no provider
    has gets no /v1 hint, since no /v1 route is served here."""
    from core.app import create_app
    from core.config import load_settings

    env = {"OPENAI_API_KEY": fake_key("OPENAI"), "PROXY_ACCESS_TOKEN": FAKE_TOKEN}
    app = create_app(load_settings(env))
    transport = httpx.ASGITransport(app=app)
    headers = {"authorization": f"Bearer {FAKE_TOKEN}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://proxy") as client:
        reply = await client.post("/gemini/v1beta/models/gemini-2.5-flash:generateContent")
        assert reply.status_code == 404
        assert reply.json()["error"]["status"] == "NOT_FOUND"  # Google's shape
        assert "has not set GEMINI_API_KEY" in reply.json()["error"]["message"]
        # A key-optional local server is switched on by its upstream.
        reply = await client.post("/ollama/v1/chat/completions", headers=headers, json=CHAT)
        assert "has not set OLLAMA_UPSTREAM" in reply.json()["error"]["message"]
        reply = await client.post("/v1/chat/completions", headers=headers, json=CHAT)
        assert reply.status_code == 404
        assert "has set neither UPSTREAM_BASE_URL nor MODEL_ROUTES" in reply.text
        reply = await client.post("/nowhere/chat", headers=headers, json=CHAT)
        assert reply.json()["error"]["message"] == "No route for '/nowhere/chat' on this proxy."
        assert fake_key("OPENAI") not in reply.text
