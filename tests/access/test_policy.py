"""Request policy through the real proxy: each refusal is a 400/403 in the caller's shape
that names its rule, and nothing refused reaches the upstream."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from core.access.tokens import create_token
from core.app import create_app
from core.config import ConfigError, load_settings
from core.stores import open_store
from tests.support.servers import (
    FAKE_TOKEN,
    RunningServer,
    proxy_env,
    reset_upstream,
    serve_in_thread,
    upstream_requests,
)

AUTH = {"authorization": f"Bearer {FAKE_TOKEN}"}


def chat(model: str = "mock-model", max_tokens: int | None = 100, messages: int = 1) -> dict:
    body: dict[str, object] = {
        "model": model,
        "messages": [{"role": "user", "content": f"m{i}"} for i in range(messages)],
    }
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return body


@pytest.fixture(scope="module")
def policy_proxy(
    mock_upstream: RunningServer, tmp_path_factory
) -> Iterator[tuple[RunningServer, str]]:
    store_url = f"sqlite:///{tmp_path_factory.mktemp('policy')}/tokens.db"
    scoped, _ = create_token(open_store(store_url), "mini-only", models=("mock-mini*",))
    env = proxy_env(
        mock_upstream.url,
        TOKEN_STORE=store_url,
        ALLOWED_MODELS="mock-model,mock-mini*",
        MAX_TOKENS_CAP="256",
        MAX_MESSAGES="4",
        ANTHROPIC_API_KEY="sk-mock-anthropic-key-not-real",
        ANTHROPIC_UPSTREAM=mock_upstream.url,
        GEMINI_API_KEY="sk-mock-gemini-key-not-real",
        GEMINI_UPSTREAM=mock_upstream.url,
    )
    with serve_in_thread(create_app(load_settings(env))) as server:
        yield server, scoped


def post(
    proxy: RunningServer, path: str, body: dict, headers: dict | None = None
) -> httpx.Response:
    return httpx.post(f"{proxy.url}{path}", json=body, headers=headers or AUTH, timeout=10)


def test_a_request_within_policy_goes_through(policy_proxy) -> None:
    proxy, _ = policy_proxy
    assert post(proxy, "/v1/chat/completions", chat()).status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "rule"),
    [
        (chat(model="gpt-4o"), 403, "ALLOWED_MODELS"),
        ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}, 403, "ALLOWED_MODELS"),
        (chat(max_tokens=4096), 400, "MAX_TOKENS_CAP"),
        (chat(max_tokens=None), 400, "MAX_TOKENS_CAP"),
        ({**chat(max_tokens=None), "max_completion_tokens": 100_000}, 400, "MAX_TOKENS_CAP"),
        ({**chat(), "max_completion_tokens": 9000}, 400, "MAX_TOKENS_CAP"),
        (chat(max_tokens="lots"), 400, "MAX_TOKENS_CAP"),  # type: ignore[arg-type]
        (chat(messages=5), 400, "MAX_MESSAGES"),
    ],
)
def test_refusals_name_their_rule_and_spend_nothing(
    policy_proxy, mock_upstream: RunningServer, body: dict, status: int, rule: str
) -> None:
    proxy, _ = policy_proxy
    reset_upstream(mock_upstream)
    reply = post(proxy, "/v1/chat/completions", body)
    assert reply.status_code == status
    error = reply.json()["error"]
    assert error["message"].startswith(f"Policy {rule}:")
    assert error["code"] in ("model_not_allowed", "policy_violation")
    assert upstream_requests(mock_upstream) == []


def test_anthropic_and_gemini_refusals_come_in_their_own_shape(policy_proxy) -> None:
    proxy, _ = policy_proxy
    reply = post(proxy, "/anthropic/v1/messages", chat(max_tokens=10_000))
    assert reply.status_code == 400
    assert reply.json()["type"] == "error"
    assert reply.json()["error"]["type"] == "invalid_request_error"
    assert "MAX_TOKENS_CAP" in reply.json()["error"]["message"]

    gemini = "/gemini/v1beta/models/gemini-2.0-flash:generateContent"
    body = {"contents": [{"parts": [{"text": "hi"}]}], "generationConfig": {"maxOutputTokens": 64}}
    refused = post(proxy, gemini, body)  # the model in the path is not on the list
    assert refused.status_code == 403
    assert refused.json()["error"]["status"] == "PERMISSION_DENIED"
    assert "ALLOWED_MODELS" in refused.json()["error"]["message"]


def test_gemini_output_cap_is_read_from_generation_config(policy_proxy) -> None:
    proxy, _ = policy_proxy
    path = "/gemini/v1beta/models/mock-mini:generateContent"
    ok = {"contents": [{"parts": [{"text": "hi"}]}], "generationConfig": {"maxOutputTokens": 64}}
    assert post(proxy, path, ok).status_code == 200
    over = {**ok, "generationConfig": {"maxOutputTokens": 100_000}}
    reply = post(proxy, path, over)
    assert reply.status_code == 400
    assert "generationConfig.maxOutputTokens" in reply.json()["error"]["message"]


def test_listing_models_is_not_a_generation(policy_proxy) -> None:
    proxy, _ = policy_proxy
    assert httpx.get(f"{proxy.url}/v1/models", headers=AUTH).status_code == 200


def test_compaction_is_a_generation_the_policy_checks(
    policy_proxy, mock_upstream: RunningServer
) -> None:
    """POST /v1/responses/compact runs the model (finding 5): ALLOWED_MODELS and
    MAX_TOKENS_CAP apply to it as to /v1/responses, and a refusal spends nothing."""
    proxy, _ = policy_proxy
    reset_upstream(mock_upstream)
    reply = post(proxy, "/v1/responses/compact", {"model": "gpt-4o", "input": "hi"})
    assert reply.status_code == 403
    assert reply.json()["error"]["code"] == "model_not_allowed"
    reply = post(proxy, "/v1/responses/compact", {"model": "mock-model", "input": "hi"})
    assert reply.status_code == 400
    assert "MAX_TOKENS_CAP" in reply.json()["error"]["message"]
    assert upstream_requests(mock_upstream) == []


def test_per_token_and_global_lists_both_apply(policy_proxy) -> None:
    proxy, scoped = policy_proxy
    as_scoped = {"authorization": f"Bearer {scoped}"}
    # Allowed globally, but not for this token.
    reply = post(proxy, "/v1/chat/completions", chat(model="mock-model"), as_scoped)
    assert reply.status_code == 403
    assert (
        post(proxy, "/v1/chat/completions", chat(model="mock-mini-1"), as_scoped).status_code == 200
    )


def test_policy_numbers_must_be_whole(monkeypatch) -> None:
    env = proxy_env("http://127.0.0.1:9", MAX_TOKENS_CAP="lots", MAX_MESSAGES="-1")
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    assert sum("MAX_TOKENS_CAP" in p or "MAX_MESSAGES" in p for p in caught.value.problems) == 2
