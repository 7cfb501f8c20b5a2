"""A token scoped to some models refuses every lookalike of them: a model name with a
prefix, a suffix, another case, percent-encoding or a trailing dot is another model (and, for
the patterns, the part a wildcard does not cover must still match exactly)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from core.access.tokens import create_token
from core.app import create_app
from core.config import load_settings
from core.stores import open_store
from tests.support.lookalikes import name_lookalikes
from tests.support.servers import (
    RunningServer,
    proxy_env,
    reset_upstream,
    serve_in_thread,
    upstream_requests,
)

ALLOWED = "gpt-4o-mini"
PATTERN = "gemini-*-flash"


@pytest.fixture(scope="module")
def scoped(
    mock_upstream: RunningServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RunningServer, str]]:
    store_url = f"sqlite:///{tmp_path_factory.mktemp('scopes')}/tokens.db"
    token, _ = create_token(open_store(store_url), "scoped", models=(ALLOWED, PATTERN))
    env = proxy_env(
        mock_upstream.url,
        OPENAI_API_KEY="sk-mock-openai-key-not-real",
        OPENAI_UPSTREAM=mock_upstream.url,
        GEMINI_API_KEY="mock-gemini-key-not-real",
        GEMINI_UPSTREAM=mock_upstream.url,
        AZURE_OPENAI_API_KEY="mock-azure-key-not-real",
        AZURE_OPENAI_UPSTREAM=mock_upstream.url,
        TOKEN_STORE=store_url,
    )
    with serve_in_thread(create_app(load_settings(env))) as proxy:
        yield proxy, token


def _chat(proxy: RunningServer, token: str, model: str) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    return httpx.post(
        f"{proxy.url}/openai/v1/chat/completions",
        json=body,
        headers={"authorization": f"Bearer {token}"},
        timeout=10,
    )


def _gemini(proxy: RunningServer, token: str, model: str) -> httpx.Response:
    path = f"/gemini/v1beta/models/{model}:generateContent"
    return httpx.post(
        f"{proxy.url}{path}", json={"contents": []}, headers={"x-goog-api-key": token}, timeout=10
    )


def _azure(proxy: RunningServer, token: str, model: str) -> httpx.Response:
    path = f"/azure/openai/deployments/{model}/chat/completions?api-version=2024-10-21"
    body = {"messages": [{"role": "user", "content": "hi"}]}
    return httpx.post(f"{proxy.url}{path}", json=body, headers={"api-key": token}, timeout=10)


def test_the_allowed_models_pass(scoped: tuple[RunningServer, str]) -> None:
    proxy, token = scoped
    assert _chat(proxy, token, ALLOWED).status_code == 200
    assert _gemini(proxy, token, "gemini-2.0-flash").status_code == 200
    assert _azure(proxy, token, ALLOWED).status_code == 200


BODY_MODELS = name_lookalikes(ALLOWED)
# In a path, percent-encoding of the allowed name itself is the allowed model (the proxy
# decodes the path as the upstream does); encoding that hides a suffix must not pass.
PATH_MODELS = [
    (c, m)
    for c, m in name_lookalikes("gemini-2.0-flash")
    if c not in ("trailing space", "percent-encoded")
] + [
    ("wildcard stretched past the end", "gemini-2.0-flash-lite"),
    ("percent-encoded suffix", "gemini-2.0-flash%2Dlite"),
    ("percent-encoded slash", "gemini-2.0-flash%2F..%2Fgemini-2.5-pro"),
]


@pytest.mark.parametrize(("change", "model"), BODY_MODELS, ids=[c for c, _ in BODY_MODELS])
def test_a_lookalike_model_in_the_body_is_refused(
    scoped: tuple[RunningServer, str], mock_upstream: RunningServer, change: str, model: str
) -> None:
    proxy, token = scoped
    reset_upstream(mock_upstream)
    reply = _chat(proxy, token, model)
    assert reply.status_code == 403, change
    assert upstream_requests(mock_upstream) == []


@pytest.mark.parametrize(("change", "model"), PATH_MODELS, ids=[c for c, _ in PATH_MODELS])
def test_a_lookalike_model_in_the_path_is_refused(
    scoped: tuple[RunningServer, str], mock_upstream: RunningServer, change: str, model: str
) -> None:
    proxy, token = scoped
    reset_upstream(mock_upstream)
    reply = _gemini(proxy, token, model)
    # 400: a path that climbs out of its segment is refused before the scope is read.
    assert reply.status_code in (400, 403), (change, reply.status_code)
    assert upstream_requests(mock_upstream) == []


AZURE_MODELS = [
    (c, m) for c, m in name_lookalikes(ALLOWED) if c not in ("trailing space", "percent-encoded")
] + [("percent-encoded suffix", "gpt-4o-mini%2Dx")]


@pytest.mark.parametrize(("change", "model"), AZURE_MODELS, ids=[c for c, _ in AZURE_MODELS])
def test_a_lookalike_deployment_is_refused(
    scoped: tuple[RunningServer, str], mock_upstream: RunningServer, change: str, model: str
) -> None:
    proxy, token = scoped
    reset_upstream(mock_upstream)
    reply = _azure(proxy, token, model)
    assert reply.status_code == 403, (change, reply.status_code)
    assert upstream_requests(mock_upstream) == []
