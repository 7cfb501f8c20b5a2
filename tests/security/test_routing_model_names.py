"""Model routing, reviewed as a caller who names a model one way and has another run (or
something billed beside it): over real sockets, MODEL_ROUTES sending `vendor/model` names to
OpenRouter (the mock upstream), under ALLOWED_MODELS and a dollar budget. Each test failed
before the fix it names."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.access.tokens import create_token
from core.app import create_app
from core.config import load_settings
from core.stores import open_store
from tests.support.scripted_upstream import ScriptedUpstream
from tests.support.servers import (
    FAKE_TOKEN,
    RunningServer,
    proxy_env,
    reset_upstream,
    serve_in_thread,
    upstream_requests,
)

AUTH = {"authorization": f"Bearer {FAKE_TOKEN}", "content-type": "application/json"}
HI = '"messages":[{"role":"user","content":"hi"}],"max_tokens":5'
# Each surface a body reaches OpenRouter by: routed by its model from the default route,
# OpenRouter's own route, and a default route whose upstream is OpenRouter-shaped.
SURFACES = ["/v1/chat/completions", "/openrouter/v1/chat/completions"]


@pytest.fixture(scope="module")
def guarded(mock_upstream: RunningServer) -> Iterator[RunningServer]:
    env = proxy_env(
        mock_upstream.url,
        OPENROUTER_API_KEY="fake-openrouter-key-routing-review",
        OPENROUTER_UPSTREAM=mock_upstream.url,
        MODEL_ROUTES="*/*=openrouter",
        ALLOWED_MODELS="openai/gpt-4o-mini*",
        MODEL_PRICES='{"openai/gpt-4o-mini*": {"input": 0.15, "output": 0.6}}',
        BUDGET_PER_CALLER_USD="5",
    )
    with serve_in_thread(create_app(load_settings(env))) as server:
        yield server


def _post(server: RunningServer, upstream: RunningServer, path: str, body: str) -> httpx.Response:
    reset_upstream(upstream)
    return httpx.post(server.url + path, content=body.encode(), headers=AUTH, timeout=20)


@pytest.mark.parametrize("path", SURFACES)
def test_an_allowed_model_name_reaches_openrouter(
    guarded: RunningServer, mock_upstream: RunningServer, path: str
) -> None:
    """The control: the name ALLOWED_MODELS lets through, priced, is served."""
    reply = _post(guarded, mock_upstream, path, '{"model":"openai/gpt-4o-mini",' + HI + "}")
    assert reply.status_code == 200, reply.text
    [seen] = upstream_requests(mock_upstream)
    assert seen["path"].endswith("/v1/chat/completions")
    assert seen["headers"]["authorization"] == "Bearer fake-openrouter-key-routing-review"


# A name ALLOWED_MODELS and the price table read as gpt-4o-mini, and the body's other ways
# of having OpenRouter run an account preset instead: its stored models (any model, with
# fallbacks), system prompt and tools (web search, billed per call), none of which the
# rules read.
PRESETS = [
    '{"model":"openai/gpt-4o-mini@preset/big",' + HI + "}",
    '{"model":"openai/gpt-4o-mini@PRESET/big",' + HI + "}",
    '{"model":"openai/gpt-4o-mini","preset":"big",' + HI + "}",
    '{"model":"openai/gpt-4o-mini","Preset":"big",' + HI + "}",
]


@pytest.mark.parametrize("path", SURFACES)
@pytest.mark.parametrize("body", PRESETS)
def test_a_model_naming_an_openrouter_preset_is_refused(
    guarded: RunningServer, mock_upstream: RunningServer, path: str, body: str
) -> None:
    """Before: `openai/gpt-4o-mini@preset/big` (OpenRouter's "combined model and preset"),
    or a `preset` field beside an allowed model, passed ALLOWED_MODELS, a token's model
    scope and the price table as gpt-4o-mini, and OpenRouter ran the preset's stored
    configuration: its models (a dearer one, or a list tried in turn), system prompt and
    server tools. Now, where a rule reads the model, a body naming a preset is a 400
    `repeated_field` (the model named twice, once out of sight), as a `models` list is."""
    reply = _post(guarded, mock_upstream, path, body)
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["code"] == "repeated_field"
    assert not upstream_requests(mock_upstream)


@pytest.mark.parametrize("path", SURFACES)
@pytest.mark.parametrize("model", ["openai/gpt-4o-mini:online", "openai/gpt-4o-mini:Online"])
def test_the_online_variant_is_a_priced_tool_under_a_budget(
    guarded: RunningServer, mock_upstream: RunningServer, path: str, model: str
) -> None:
    """Before: `openai/gpt-4o-mini:online` passed ALLOWED_MODELS and was priced by the
    `openai/gpt-4o-mini*` entry as tokens only, while OpenRouter ran its web plugin ($4 per
    1,000 results, beside the tokens) for it: the `:online` suffix is OpenRouter's shortcut
    for `plugins: [{"id": "web"}]`, which a dollar budget refuses. Now the suffix is
    refused as the plugin is: 403 `tool_not_metered`."""
    reply = _post(guarded, mock_upstream, path, '{"model":"' + model + '",' + HI + "}")
    assert reply.status_code == 403, reply.text
    assert reply.json()["error"]["code"] == "tool_not_metered"
    assert not upstream_requests(mock_upstream)


# Search models: every call searches the web, billed per call beside the tokens. Each name
# passes ALLOWED_MODELS and is priced by the `openai/gpt-4o-mini*` entry.
SEARCH_MODELS = [
    "openai/gpt-4o-mini-search-preview",
    "openai/gpt-4o-mini-search-preview-2025-03-11",
    "openai/gpt-4o-mini-Search-preview",
]


@pytest.mark.parametrize("path", SURFACES)
@pytest.mark.parametrize("model", SEARCH_MODELS)
def test_a_search_model_is_a_priced_tool_under_a_budget(
    guarded: RunningServer, mock_upstream: RunningServer, path: str, model: str
) -> None:
    """Before: `openai/gpt-4o-mini-search-preview` passed ALLOWED_MODELS `openai/gpt-4o-mini*`
    and was priced by the `openai/gpt-4o-mini*` entry as gpt-4o-mini's tokens, while every
    call searched the web at $25 per 1,000 calls (about 800 times the tokens of a short
    answer): the budget counted almost none of it. Now a model that searches on every
    call is refused as a search tool is: 403 `tool_not_metered`, nothing sent."""
    reply = _post(guarded, mock_upstream, path, '{"model":"' + model + '",' + HI + "}")
    assert reply.status_code == 403, reply.text
    assert reply.json()["error"]["code"] == "tool_not_metered"
    assert not upstream_requests(mock_upstream)


def test_search_models_on_their_own_routes_are_priced_tools_under_a_budget(
    mock_upstream: RunningServer,
) -> None:
    """The same on OpenAI's and Perplexity's own names: `gpt-4o-mini-search-preview` priced
    by a `gpt-4o-mini*` entry on the default route, and Perplexity's Sonar models (a
    request fee on every call, $5-14 per 1,000) priced by a `sonar*` entry, were admitted
    as tokens only. The plain models still pass."""
    env = proxy_env(
        mock_upstream.url,
        PERPLEXITY_API_KEY="fake-perplexity-key-routing-review",
        PERPLEXITY_UPSTREAM=mock_upstream.url,
        MODEL_PRICES='{"gpt-4o-mini*": {"input": 0.15, "output": 0.6},'
        ' "sonar*": {"input": 1, "output": 1}, "r1-*": {"input": 2, "output": 8}}',
        BUDGET_PER_CALLER_USD="5",
    )
    with serve_in_thread(create_app(load_settings(env))) as proxy:
        for path, model in [
            ("/v1/chat/completions", "gpt-4o-mini-search-preview"),
            ("/v1/chat/completions", "gpt-5-search-api"),
            ("/perplexity/chat/completions", "sonar"),
            ("/perplexity/chat/completions", "sonar-deep-research"),
        ]:
            reply = _post(proxy, mock_upstream, path, '{"model":"' + model + '",' + HI + "}")
            assert reply.status_code == 403, (model, reply.text)
            assert reply.json()["error"]["code"] == "tool_not_metered"
            assert not upstream_requests(mock_upstream)
        for path, model in [
            ("/v1/chat/completions", "gpt-4o-mini"),
            ("/perplexity/chat/completions", "r1-1776"),
        ]:
            reply = _post(proxy, mock_upstream, path, '{"model":"' + model + '",' + HI + "}")
            assert reply.status_code == 200, (model, reply.text)


def test_the_model_list_names_each_model_under_the_provider_that_serves_it(
    mock_upstream: RunningServer, tmp_path: Path
) -> None:
    """Before: `GET /v1/models` kept each routed provider's list to its own patterns only,
    so a model an earlier route claims for another provider was listed under the provider
    whose list came first (`owned_by`): a token limited to that provider was shown a model
    each request for which went to the other provider and was a 403, and a token limited to
    the provider that serves it was not shown it. Now a model is listed under the provider
    a request for it reaches, as `GET /v1/models/{id}` answers it."""
    store_url = f"sqlite:///{tmp_path}/store.db"
    store = open_store(store_url)
    together_only = create_token(store, "together-only", providers=("together",))[0]
    deepseek_only = create_token(store, "deepseek-only", providers=("deepseek",))[0]
    env = proxy_env(
        mock_upstream.url,
        TOGETHER_API_KEY="fake-together-key-routing-review",
        TOGETHER_UPSTREAM=mock_upstream.url,
        DEEPSEEK_API_KEY="fake-deepseek-key-routing-review",
        DEEPSEEK_UPSTREAM=mock_upstream.url,
        # Both lists name the mock's model; a request for it goes to deepseek (first match).
        MODEL_ROUTES="x-*=together,mock-*=deepseek,*=together",
        TOKEN_STORE=store_url,
        TOKEN_CACHE_SECONDS="0",
    )
    with serve_in_thread(create_app(load_settings(env))) as proxy:

        def listed(token: str) -> dict[str, str]:
            reply = httpx.get(
                f"{proxy.url}/v1/models", headers={"authorization": f"Bearer {token}"}
            )
            assert reply.status_code == 200, reply.text
            return {model["id"]: model["owned_by"] for model in reply.json()["data"]}

        assert listed(FAKE_TOKEN) == {"mock-model": "deepseek"}
        assert listed(deepseek_only) == {"mock-model": "deepseek"}
        assert listed(together_only) == {}
        # What the list says is what a request meets.
        chat = '{"model":"mock-model",' + HI + "}"
        for token, status in ((deepseek_only, 200), (together_only, 403)):
            reply = httpx.post(
                f"{proxy.url}/v1/chat/completions",
                content=chat.encode(),
                headers={**AUTH, "authorization": f"Bearer {token}"},
            )
            assert reply.status_code == status, reply.text


def test_a_routed_model_is_looked_up_by_its_id_as_written(tmp_path: Path) -> None:
    """Before: `GET /v1/models/{id}` read the id off the path as routes are matched, in lower
    case, so a routed provider's model with capitals in its id (`meta-llama/Llama-3.3-70B-
    Instruct-Turbo`, as Together and OpenRouter name theirs) was a 404 though the list named
    it, and a route whose pattern has capitals (`Qwen/*`) never claimed a lookup: it went to
    the default route's upstream, asked with the default key about another provider's
    model. Now the id is read as sent (decoded), as the body's model is."""
    listed = ["meta-llama/Llama-3.3-70B-Instruct-Turbo", "Qwen/Qwen3-235B"]

    def models(request: dict[str, Any]) -> Any:
        body = json.dumps({"object": "list", "data": [{"id": m} for m in listed]})
        return 200, [("content-type", "application/json")], [(0, body.encode())]

    together = ScriptedUpstream(models)
    default = ScriptedUpstream(models)
    with serve_in_thread(together) as up, serve_in_thread(default) as default_up:
        env = proxy_env(
            default_up.url,
            TOGETHER_API_KEY="fake-together-key-routing-review",
            TOGETHER_UPSTREAM=up.url,
            MODEL_ROUTES="meta-llama/*=together,Qwen/*=together",
        )
        with serve_in_thread(create_app(load_settings(env))) as proxy:
            for model in listed:
                reply = httpx.get(f"{proxy.url}/v1/models/{model}", headers=AUTH)
                assert reply.status_code == 200, reply.text
                assert reply.json() == {
                    "id": model,
                    "object": "model",
                    "created": 0,
                    "owned_by": "together",
                }
            # Another spelling of the id is another id, as the provider reads it.
            lower = httpx.get(f"{proxy.url}/v1/models/{listed[0].lower()}", headers=AUTH)
            assert lower.status_code == 404
    assert default.seen == []
