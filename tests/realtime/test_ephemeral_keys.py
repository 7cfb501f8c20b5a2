"""Ephemeral keys minted through the proxy with the real SDKs: OpenAI
`client.realtime.client_secrets.create` and google-genai `client.aio.auth_tokens.create`."""

from __future__ import annotations

import datetime
from pathlib import Path

import httpx
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types
from openai import AsyncOpenAI

from core.access.tokens import create_token
from core.stores import open_store
from tests.support.fake_realtime import GEMINI_KEY, FakeRealtime
from tests.support.realtime import ProxyFactory
from tests.support.servers import FAKE_TOKEN, FAKE_UPSTREAM_KEY

SESSION = {"type": "realtime", "model": "gpt-realtime"}


def gemini_client(proxy_url: str, token: str = FAKE_TOKEN) -> genai.Client:
    options = genai_types.HttpOptions(base_url=f"{proxy_url}/gemini", api_version="v1alpha")
    return genai.Client(api_key=token, http_options=options)


async def test_minting_is_refused_unless_allowed(
    start_proxy: ProxyFactory, upstream: FakeRealtime
) -> None:
    with start_proxy() as proxy:
        client = AsyncOpenAI(base_url=f"{proxy.url}/v1", api_key=FAKE_TOKEN)
        with pytest.raises(openai.PermissionDeniedError) as refused:
            await client.realtime.client_secrets.create(session=SESSION)  # type: ignore[arg-type]
        assert "ALLOW_EPHEMERAL_KEYS" in str(refused.value)
        with pytest.raises(genai_errors.ClientError) as gemini_refused:
            await gemini_client(proxy.url).aio.auth_tokens.create(config={"uses": 1})
        assert gemini_refused.value.code == 403
    assert upstream.minted == []


async def test_openai_expiry_is_capped_at_ten_minutes(
    start_proxy: ProxyFactory, upstream: FakeRealtime
) -> None:
    with start_proxy(ALLOW_EPHEMERAL_KEYS="true") as proxy:
        client = AsyncOpenAI(base_url=f"{proxy.url}/v1", api_key=FAKE_TOKEN)
        secret = await client.realtime.client_secrets.create(
            session=SESSION,  # type: ignore[arg-type]
            expires_after={"anchor": "created_at", "seconds": 7200},
        )
        assert secret.value == "ek_fake_ephemeral"
        await client.realtime.client_secrets.create(session=SESSION)  # type: ignore[arg-type]
        # The beta route caps the expiry it is given.
        reply = httpx.post(
            f"{proxy.url}/v1/realtime/sessions",
            json={"model": "gpt-realtime", "client_secret": {"expires_after": {"seconds": 3600}}},
            headers={"Authorization": f"Bearer {FAKE_TOKEN}"},
        )
        assert reply.status_code == 200
    asked_long, asked_nothing, beta = upstream.minted
    assert asked_long["path"] == "/v1/realtime/client_secrets"
    assert asked_long["body"]["expires_after"] == {"anchor": "created_at", "seconds": 600}
    assert asked_nothing["body"]["expires_after"]["seconds"] <= 600
    assert asked_long["body"]["session"]["model"] == "gpt-realtime"
    assert beta["body"]["client_secret"]["expires_after"]["seconds"] == 600
    assert asked_long["headers"]["authorization"] == f"Bearer {FAKE_UPSTREAM_KEY}"


async def test_gemini_expiry_and_uses_are_capped(
    start_proxy: ProxyFactory, upstream: FakeRealtime
) -> None:
    now = datetime.datetime.now(datetime.UTC)
    with start_proxy(ALLOW_EPHEMERAL_KEYS="true") as proxy:
        token = await gemini_client(proxy.url).aio.auth_tokens.create(
            config={
                "uses": 10,
                "expire_time": now + datetime.timedelta(hours=2),
                "new_session_expire_time": now + datetime.timedelta(hours=1),
                "live_connect_constraints": {"model": "gemini-live-2.5-flash-preview"},
            }
        )
        assert token.name == "auth_tokens/fake-ephemeral"
    minted = upstream.minted[-1]
    assert minted["path"] == "/v1alpha/auth_tokens"
    assert minted["headers"]["x-goog-api-key"] == GEMINI_KEY
    body = minted["body"]
    assert body["uses"] == 1
    latest = now + datetime.timedelta(seconds=600 + 5)
    for name in ("expireTime", "newSessionExpireTime"):
        moment = datetime.datetime.fromisoformat(body[name].replace("Z", "+00:00"))
        assert moment <= latest, name


async def test_scope_violations_are_refused(
    start_proxy: ProxyFactory, upstream: FakeRealtime, tmp_path: Path
) -> None:
    store_url = f"sqlite:///{tmp_path}/tokens.db"
    store = open_store(store_url)
    token, _ = create_token(store, "realtime-mini", models=("gpt-realtime-mini", "gemini-live-*"))
    with start_proxy(ALLOW_EPHEMERAL_KEYS="true", TOKEN_STORE=store_url) as proxy:
        client = AsyncOpenAI(base_url=f"{proxy.url}/v1", api_key=token)
        with pytest.raises(openai.PermissionDeniedError) as refused:
            await client.realtime.client_secrets.create(session=SESSION)  # type: ignore[arg-type]
        assert "gpt-realtime" in str(refused.value)
        allowed = {"type": "realtime", "model": "gpt-realtime-mini"}
        await client.realtime.client_secrets.create(session=allowed)  # type: ignore[arg-type]
        # A Gemini key with no model constraint could open any model: refused to a
        # model-scoped token.
        gemini = gemini_client(proxy.url, token)
        with pytest.raises(genai_errors.ClientError) as unconstrained:
            await gemini.aio.auth_tokens.create(config={"uses": 1})
        assert unconstrained.value.code == 403
        await gemini.aio.auth_tokens.create(
            config={"live_connect_constraints": {"model": "gemini-live-2.5-flash-preview"}}
        )
    assert len(upstream.minted) == 2


async def test_each_minted_key_counts_against_the_token_limit(
    start_proxy: ProxyFactory, upstream: FakeRealtime
) -> None:
    with start_proxy(
        ALLOW_EPHEMERAL_KEYS="true", RATE_LIMIT_TOKENS="50000", EPHEMERAL_KEY_TOKENS="20000"
    ) as proxy:
        client = AsyncOpenAI(base_url=f"{proxy.url}/v1", api_key=FAKE_TOKEN, max_retries=0)
        # 20,000 + 20,000, then the 10,000 left (a limit admits the room that is left).
        for _ in range(3):
            await client.realtime.client_secrets.create(session=SESSION)  # type: ignore[arg-type]
        with pytest.raises(openai.RateLimitError):
            await client.realtime.client_secrets.create(session=SESSION)  # type: ignore[arg-type]
        headers = {"Authorization": f"Bearer {FAKE_TOKEN}"}
        # Never refunded: the keys stay charged in full.
        figures = httpx.get(f"{proxy.url}/v1/models", headers=headers).headers
        assert figures["x-ratelimit-remaining-tokens"] == "0"
    assert len(upstream.minted) == 3


# ---- a dollar budget reads a mint's session settings as a body's ----------------------------

PRICED = '{"gemini-*": {"input": 1, "output": 1}, "gpt-realtime*": {"input": 1, "output": 1}}'
LIVE_MODEL = "models/gemini-live-2.5-flash-preview"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        # client_secrets nests the session's settings under `session`.
        (
            "/v1/realtime/client_secrets",
            {"session": {**SESSION, "tools": [{"type": "web_search"}]}},
        ),
        ("/v1/realtime/client_secrets", {"session": {**SESSION, "prompt": {"id": "pmpt_1"}}}),
        # A Gemini token's locked setup: Google Search grounding bills per grounded prompt.
        (
            "/gemini/v1alpha/auth_tokens",
            {"bidiGenerateContentSetup": {"model": LIVE_MODEL, "tools": [{"googleSearch": {}}]}},
        ),
        (
            "/gemini/v1alpha/auth_tokens",
            {
                "bidi_generate_content_setup": {
                    "model": LIVE_MODEL,
                    "tools": [{"google_search_retrieval": {}}],
                }
            },
        ),
    ],
)
async def test_a_dollar_budget_refuses_a_mint_whose_session_turns_on_priced_tools(
    start_proxy: ProxyFactory, upstream: FakeRealtime, path: str, body: dict[str, object]
) -> None:
    """A Live setup or session.update with Google Search, a hosted tool or a stored prompt
    is refused under a dollar budget; the same settings in a minted key's session (which
    then runs with the provider, outside the proxy) were minted."""
    with start_proxy(
        ALLOW_EPHEMERAL_KEYS="true", BUDGET_PER_CALLER_USD="5", MODEL_PRICES=PRICED
    ) as proxy:
        refused = httpx.post(
            f"{proxy.url}{path}", json=body, headers={"Authorization": f"Bearer {FAKE_TOKEN}"}
        )
        assert refused.status_code == 403, refused.text
        assert "caps spending in dollars" in refused.text
        assert upstream.minted == []
        # Function tools (the caller runs them) cost tokens only: minted as before.
        if path.endswith("client_secrets"):
            function = {"type": "function", "name": "f", "parameters": {}}
            allowed: dict[str, object] = {"session": {**SESSION, "tools": [function]}}
        else:
            functions = [{"functionDeclarations": [{"name": "f"}]}]
            allowed = {"bidiGenerateContentSetup": {"model": LIVE_MODEL, "tools": functions}}
        minted = httpx.post(
            f"{proxy.url}{path}", json=allowed, headers={"Authorization": f"Bearer {FAKE_TOKEN}"}
        )
        assert minted.status_code == 200, minted.text
    assert len(upstream.minted) == 1


@pytest.mark.parametrize(
    "body",
    [
        # No setup: the holder's own setup message chooses the model and the tools.
        {"uses": 1},
        # A fieldMask fixes only the fields it lists: here not the tools.
        {"bidiGenerateContentSetup": {"model": LIVE_MODEL}, "fieldMask": "model"},
        # ...or not the model, which is what the budget priced the key at.
        {"bidiGenerateContentSetup": {"model": LIVE_MODEL, "tools": []}, "fieldMask": "tools"},
    ],
)
async def test_a_dollar_budget_refuses_a_gemini_token_that_leaves_model_or_tools_open(
    start_proxy: ProxyFactory, upstream: FakeRealtime, body: dict[str, object]
) -> None:
    """A Gemini auth token whose setup does not fix the tools lets whoever holds it turn on
    Google Search grounding in its own setup message, with the provider, past every rule
    here; one that does not fix the model runs a model other than the one priced."""
    path = "/gemini/v1alpha/auth_tokens"
    headers = {"Authorization": f"Bearer {FAKE_TOKEN}"}
    with start_proxy(
        ALLOW_EPHEMERAL_KEYS="true", BUDGET_PER_CALLER_USD="5", MODEL_PRICES=PRICED
    ) as proxy:
        refused = httpx.post(f"{proxy.url}{path}", json=body, headers=headers)
        assert refused.status_code == 403, refused.text
        assert "fieldMask" in refused.json()["error"]["message"]
        assert upstream.minted == []
        # Both fixed, by the whole setup (no mask) or a mask that lists them: minted.
        for fixed in (
            {"bidiGenerateContentSetup": {"model": LIVE_MODEL}},
            {"bidiGenerateContentSetup": {"model": LIVE_MODEL}, "fieldMask": "model, tools"},
        ):
            minted = httpx.post(f"{proxy.url}{path}", json=fixed, headers=headers)
            assert minted.status_code == 200, minted.text
    assert len(upstream.minted) == 2
