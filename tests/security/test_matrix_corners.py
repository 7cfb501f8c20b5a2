"""The rules matrix's corners (a hostile review of each rule on each surface), over real
sockets in front of the mock upstream: each test failed before the fix it names."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from core.access.tokens import create_token, revoke_token
from core.app import create_app
from core.config import load_settings
from core.stores import open_store
from core.types import Receive, Scope, Send
from tests.support.scripted_upstream import ScriptedUpstream
from tests.support.servers import (
    FAKE_TOKEN,
    RunningServer,
    proxy_env,
    reset_upstream,
    serve_in_thread,
    upstream_requests,
)

AUTH = {"authorization": f"Bearer {FAKE_TOKEN}"}
GEMINI_KEY = "fake-gemini-key-matrix-review"
ADMIN_TOKEN = "admin-token-for-the-matrix-review-0123456789"


@pytest.fixture(scope="module")
def capped(mock_upstream: RunningServer) -> Iterator[RunningServer]:
    """Gemini's two routes (native, and its OpenAI-compatible surface) under output and
    message caps."""
    env = proxy_env(
        mock_upstream.url,
        GEMINI_API_KEY=GEMINI_KEY,
        GEMINI_UPSTREAM=mock_upstream.url,
        MAX_TOKENS_CAP="100",
        MAX_MESSAGES="2",
    )
    with serve_in_thread(create_app(load_settings(env))) as server:
        yield server


# Gemini's OpenAI-compatible chat, spelled so the raw path misses the
# `/gemini/v1beta/openai` prefix while an upstream that reads paths leniently (repeated
# slashes, %2F, path parameters, case; docs/limits.md) still reads that route.
SURFACE_SPELLINGS = [
    "/gemini//v1beta/openai/chat/completions",
    "/gemini/v1beta//openai/chat/completions",
    "/gemini/v1beta%2Fopenai/chat/completions",
    "/gemini/v1beta/openai%2Fchat/completions",
    "/gemini/v1beta;x/openai/chat/completions",
    "/gemini/V1beta/OpenAI/chat/completions",
    "/gemini/%76%31beta/openai/chat/completions",
]


@pytest.mark.parametrize("path", SURFACE_SPELLINGS)
def test_gemini_openai_surface_in_another_spelling_keeps_the_caps(
    capped: RunningServer, mock_upstream: RunningServer, path: str
) -> None:
    """Before: the spelling fell to the native /gemini route, whose protocol reads
    `/v1beta/openai/chat/completions` as a route that generates nothing, so MAX_TOKENS_CAP
    and MAX_MESSAGES let a 100,000-token answer over any conversation through (and the
    meter never read it). Now such a path is refused before any stage: one route, one
    spelling of its prefix."""
    over_cap = {
        "model": "gemini-2.5-flash",
        "max_tokens": 100_000,
        "messages": [{"role": "user", "content": f"m{i}"} for i in range(5)],
    }
    plain = httpx.post(
        f"{capped.url}/gemini/v1beta/openai/chat/completions", json=over_cap, headers=AUTH
    )
    assert plain.status_code == 400  # the caps, on the route's own spelling
    reset_upstream(mock_upstream)
    reply = httpx.post(f"{capped.url}{path}", json=over_cap, headers=AUTH)
    assert reply.status_code == 400, reply.text
    assert "error" in reply.json()
    assert upstream_requests(mock_upstream) == []


def test_the_native_gemini_route_is_not_refused_for_a_segment_only_like_the_surface(
    capped: RunningServer, mock_upstream: RunningServer
) -> None:
    """Only the surface's own prefix is refused in other spellings: a native route whose
    path merely begins alike still reaches its upstream."""
    reset_upstream(mock_upstream)
    reply = httpx.get(f"{capped.url}/gemini/v1beta/openaiish/models", headers=AUTH)
    assert reply.status_code != 400
    assert len(upstream_requests(mock_upstream)) == 1


def test_the_routed_model_list_names_only_models_allowed_models_lets_through(
    mock_upstream: RunningServer,
) -> None:
    """Before: under MODEL_ROUTES, GET /v1/models kept a scoped token to its models but
    listed every model ALLOWED_MODELS refuses (the routes' whole lists: fine-tuned ids name
    the account's organisation), so a model picker offered models each call to was a 403.
    Now the list holds to ALLOWED_MODELS as to a token's scope: what it names can be used."""
    env = proxy_env(
        mock_upstream.url,
        ANTHROPIC_API_KEY="fake-anthropic-key-matrix-review",
        ANTHROPIC_UPSTREAM=mock_upstream.url,
        MODEL_ROUTES="claude-*=anthropic",
        ALLOWED_MODELS="claude-haiku*,mock-model",
    )
    with serve_in_thread(create_app(load_settings(env))) as proxy:
        listed = httpx.get(f"{proxy.url}/v1/models", headers=AUTH)
        assert listed.status_code == 200
        ids = {model["id"] for model in listed.json()["data"]}
        assert ids == {"claude-haiku-4-5", "mock-model"}
        # Retrieved as listed: a routed model ALLOWED_MODELS refuses does not exist here.
        kept = httpx.get(f"{proxy.url}/v1/models/claude-haiku-4-5", headers=AUTH)
        assert kept.status_code == 200 and kept.json()["id"] == "claude-haiku-4-5"
        refused = httpx.get(f"{proxy.url}/v1/models/claude-sonnet-4-5", headers=AUTH)
        assert refused.status_code == 404
        assert refused.json()["error"]["code"] == "model_not_found"


def test_a_shared_cache_entry_is_replayed_to_no_caller_a_rule_refuses(
    mock_upstream: RunningServer, tmp_path: Path
) -> None:
    """Guards a corner nothing else tested: a stored answer under CACHE_SCOPE=shared (no
    upstream call, nothing to meter) is replayed only once every check on the head and the
    body has passed, so it reaches no caller whose token is outside the model's scope, over
    its budget or revoked, and nobody while the proxy is switched off; no refusal calls the
    upstream."""
    store_url = f"sqlite:///{tmp_path}/tokens.db"
    store = open_store(store_url)
    owner, _ = create_token(store, "owner")
    other_models, _ = create_token(store, "other-models", models=("gpt-4o",))
    spent, _ = create_token(store, "spent", budget_usd=0)
    revoked, _ = create_token(store, "revoked")
    env = proxy_env(
        mock_upstream.url,
        TOKEN_STORE=store_url,
        TOKEN_CACHE_SECONDS="0",
        CACHE_URL="memory://",
        CACHE_SCOPE="shared",
        BUDGET_PER_CALLER_USD="100",
        ADMIN_TOKEN=ADMIN_TOKEN,
    )
    ask = {
        "model": "gpt-4o-mini",
        "temperature": 0,
        "messages": [{"role": "user", "content": "hi"}],
    }

    def post(token: str) -> httpx.Response:
        return httpx.post(
            f"{proxy.url}/v1/chat/completions",
            json=ask,
            headers={"authorization": f"Bearer {token}"},
            timeout=10,
        )

    with serve_in_thread(create_app(load_settings(env))) as proxy:
        assert post(owner).headers["x-proxy-cache"] == "miss"
        assert post(revoked).headers["x-proxy-cache"] == "hit"  # the entry is everyone's
        reset_upstream(mock_upstream)
        revoke_token(store, "revoked")
        refusals = {
            "scope": post(other_models).status_code,
            "budget": post(spent).status_code,
            "revoked": post(revoked).status_code,
        }
        assert refusals == {"scope": 403, "budget": 429, "revoked": 401}
        switched = httpx.put(
            f"{proxy.url}/admin/api/status",
            json={"online": False},
            headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
        )
        assert switched.status_code == 200, switched.text
        assert post(owner).status_code == 503
        assert upstream_requests(mock_upstream) == []


async def overloaded_after_a_second(scope: Scope, receive: Receive, send: Send) -> None:
    """A default upstream that answers 503 (overloaded) a second after the request: a
    first attempt a chain falls back from, long enough for the rules to change meanwhile."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await asyncio.sleep(1.0)
    body = b'{"error":{"message":"overloaded","type":"server_error"}}'
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@pytest.mark.parametrize("change", ["revoked", "switched off"])
def test_a_fallback_is_another_upstream_call_and_checks_the_rules_again(
    mock_upstream: RunningServer, tmp_path: Path, change: str
) -> None:
    """Before: a chain's next model was called with no look at the token or the kill
    switch, though the rules changed while the first model failed (here: revoked, or
    switched off, 0.3 s into a 1 s wait for a 503): one more billed call past the rule,
    unless the open checks' period (REALTIME_RECHECK_SECONDS) happened to end first. Now
    each fallback is checked again first, as a stream's continuation is, and the caller
    gets the refusal."""
    store_url = f"sqlite:///{tmp_path}/tokens.db"
    store = open_store(store_url)
    token, _ = create_token(store, "falls-back")
    with serve_in_thread(overloaded_after_a_second) as default:
        env = proxy_env(
            default.url,
            ANTHROPIC_API_KEY="fake-anthropic-key-matrix-review",
            ANTHROPIC_UPSTREAM=mock_upstream.url,
            MODEL_ROUTES="claude-*=anthropic",
            MODEL_FALLBACKS="gpt-4o>claude-sonnet-4-5",
            TOKEN_STORE=store_url,
            TOKEN_CACHE_SECONDS="0",
            # The open checks' period is not what this is about: none falls due.
            REALTIME_RECHECK_SECONDS="60",
            ADMIN_TOKEN=ADMIN_TOKEN,
        )
        with serve_in_thread(create_app(load_settings(env))) as proxy:

            def change_the_rules() -> None:
                time.sleep(0.3)
                if change == "revoked":
                    revoke_token(store, "falls-back")
                    return
                httpx.put(
                    f"{proxy.url}/admin/api/status",
                    json={"online": False},
                    headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
                )

            reset_upstream(mock_upstream)
            changer = threading.Thread(target=change_the_rules)
            changer.start()
            reply = httpx.post(
                f"{proxy.url}/v1/chat/completions",
                json={"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]},
                headers={"authorization": f"Bearer {token}"},
                timeout=10,
            )
            changer.join()
    assert reply.status_code == (401 if change == "revoked" else 503), reply.text
    assert [r for r in upstream_requests(mock_upstream) if r["path"].endswith("/completions")] == []


@pytest.fixture(scope="module")
def compatible_vendors_capped(mock_upstream: RunningServer) -> Iterator[RunningServer]:
    """OpenAI-compatible vendors (and the default route) under output and message caps."""
    env = proxy_env(
        mock_upstream.url,
        DEEPSEEK_API_KEY="fake-deepseek-key-matrix-review",
        DEEPSEEK_UPSTREAM=mock_upstream.url,
        MOONSHOT_API_KEY="fake-moonshot-key-matrix-review",
        MOONSHOT_UPSTREAM=mock_upstream.url,
        VLLM_UPSTREAM=mock_upstream.url,
        OLLAMA_UPSTREAM=mock_upstream.url,
        MAX_TOKENS_CAP="100",
        MAX_MESSAGES="2",
    )
    with serve_in_thread(create_app(load_settings(env))) as server:
        yield server


# Generating routes the vendors serve beside their OpenAI-compatible surface: an
# Anthropic-compatible Messages API (DeepSeek's and Moonshot's under /anthropic, vLLM's and
# Ollama's at /v1/messages, a gateway's on the default route) and vLLM's SageMaker-style
# /invocations, which runs a chat or a completion by its body.
OTHER_GENERATING_ROUTES = [
    "/deepseek/anthropic/v1/messages",
    "/moonshot/anthropic/v1/messages",
    "/vllm/v1/messages",
    "/ollama/v1/messages",
    "/v1/messages",
    "/vllm/invocations",
]


@pytest.mark.parametrize("path", OTHER_GENERATING_ROUTES)
def test_a_vendors_other_generating_route_is_held_to_the_caps(
    compatible_vendors_capped: RunningServer, mock_upstream: RunningServer, path: str
) -> None:
    """Before: an OpenAI-compatible vendor's Anthropic-compatible /v1/messages (or vLLM's
    /invocations) read as a route that generates nothing under OpenAI's protocol, so
    MAX_TOKENS_CAP and MAX_MESSAGES let a 100,000-token answer over five messages through.
    Now such routes are generating routes the policy cannot read (as Ollama's /api/chat is):
    refused while a cap is set."""
    over_cap = {
        "model": "m",
        "max_tokens": 100_000,
        "messages": [{"role": "user", "content": f"m{i}"} for i in range(5)],
    }
    reset_upstream(mock_upstream)
    reply = httpx.post(f"{compatible_vendors_capped.url}{path}", json=over_cap, headers=AUTH)
    assert reply.status_code == 400, reply.text
    assert "MAX_TOKENS_CAP" in reply.text
    assert upstream_requests(mock_upstream) == []


def test_geminis_interactions_api_is_held_to_the_caps(
    capped: RunningServer, mock_upstream: RunningServer
) -> None:
    """Before: Gemini's Interactions API (POST /v1beta/interactions: a model's turn, or an
    agent's run, with generation_config.max_output_tokens) read as a route that generates
    nothing, so MAX_TOKENS_CAP and MAX_MESSAGES let it through uncapped. Now it is a
    generating route the policy cannot read: refused while a cap is set."""
    over_cap = {
        "model": "gemini-2.5-flash",
        "input": "hi",
        "generation_config": {"max_output_tokens": 100_000},
    }
    reset_upstream(mock_upstream)
    reply = httpx.post(f"{capped.url}/gemini/v1beta/interactions", json=over_cap, headers=AUTH)
    assert reply.status_code == 400, reply.text
    assert upstream_requests(mock_upstream) == []


CHATKIT_SESSION = {"workflow": {"id": "wf_matrix_review"}, "user": "someone"}


def test_a_chatkit_session_is_minting_refused_while_ephemeral_keys_are_off(
    proxy: RunningServer, mock_upstream: RunningServer
) -> None:
    """Before: POST /v1/chatkit/sessions (OpenAI's ChatKit) passed as a route that spends
    nothing, with ALLOW_EPHEMERAL_KEYS off: the caller got a client secret that runs an
    agent workflow on the owner's account from the browser, straight with the provider:
    unmetered, past revocation and the kill switch. Creating a session is minting: now it is
    refused unless the operator allows minting, in every spelling a mint route has."""
    for path in ("/v1/chatkit/sessions", "/v1/ChatKit/sessions/", "/v1/chatkit//sessions"):
        reset_upstream(mock_upstream)
        reply = httpx.post(f"{proxy.url}{path}", json=CHATKIT_SESSION, headers=AUTH)
        assert reply.status_code == 403, (path, reply.text)
        assert reply.json()["error"]["code"] == "ephemeral_keys_disabled"
        assert upstream_requests(mock_upstream) == []


def test_a_chatkit_session_minted_lives_ten_minutes_at_most() -> None:
    """Allowed (ALLOW_EPHEMERAL_KEYS=true), a ChatKit session is a minted key like a
    realtime client secret: its `expires_after` is capped at ten minutes (inserted when the
    body names none, cut when it asks for longer)."""
    minted = b'{"id":"cksess_1","object":"chatkit.session","client_secret":"ek_1"}'
    upstream = ScriptedUpstream(
        lambda _: (200, [("content-type", "application/json")], [(0, minted)])
    )
    with serve_in_thread(upstream) as scripted:
        env = proxy_env(scripted.url, ALLOW_EPHEMERAL_KEYS="true")
        with serve_in_thread(create_app(load_settings(env))) as minting:
            for asked in ({}, {"expires_after": {"anchor": "created_at", "seconds": 7200}}):
                reply = httpx.post(
                    f"{minting.url}/v1/chatkit/sessions",
                    json={**CHATKIT_SESSION, **asked},
                    headers=AUTH,
                )
                assert reply.status_code == 200, reply.text
                sent = json.loads(upstream.seen[-1].body)
                assert sent["expires_after"] == {"anchor": "created_at", "seconds": 600}
                assert sent["workflow"] == CHATKIT_SESSION["workflow"]
