"""Per-caller tokens through the proxy over real sockets: every SDK slot, scopes answered
with a 403 in the caller's shape, and revocation taking effect within the cache time."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.access.tokens import create_token, list_tokens, revoke_token, set_disabled
from core.app import create_app
from core.config import load_settings
from core.stores import Store, open_store
from tests.support.servers import (
    FAKE_TOKEN,
    RunningServer,
    proxy_env,
    reset_upstream,
    serve_in_thread,
    upstream_requests,
)

CACHE_SECONDS = 0.3
OPENAI_KEY = "sk-mock-openai-key-not-real"
ANTHROPIC_KEY = "sk-mock-anthropic-key-not-real"
GEMINI_KEY = "mock-gemini-key-not-real"
AZURE_KEY = "mock-azure-key-not-real"
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def token_env(upstream: str, store_url: str) -> dict[str, str]:
    return proxy_env(
        upstream,
        OPENAI_API_KEY=OPENAI_KEY,
        OPENAI_UPSTREAM=upstream,
        ANTHROPIC_API_KEY=ANTHROPIC_KEY,
        ANTHROPIC_UPSTREAM=upstream,
        GEMINI_API_KEY=GEMINI_KEY,
        GEMINI_UPSTREAM=upstream,
        AZURE_OPENAI_API_KEY=AZURE_KEY,
        AZURE_OPENAI_UPSTREAM=upstream,
        TOKEN_STORE=store_url,
        TOKEN_CACHE_SECONDS=str(CACHE_SECONDS),
    )


@pytest.fixture(scope="module")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('tokens')}/tokens.db"


@pytest.fixture(scope="module")
def token_proxy(mock_upstream: RunningServer, sqlite_url: str) -> Iterator[RunningServer]:
    app = create_app(load_settings(token_env(mock_upstream.url, sqlite_url)))
    with serve_in_thread(app) as server:
        yield server


@pytest.fixture
def admin(sqlite_url: str) -> Iterator[Store]:
    """The operator's view of the proxy's store (what `llm-proxy tokens` opens)."""
    store = open_store(sqlite_url)
    for record in list_tokens(store):
        revoke_token(store, record.id)
    yield store


# (route, headers carrying the token, body) for each SDK's own key slot
def slot_requests(token: str) -> list[tuple[str, dict[str, str], Any]]:
    return [
        ("/openai/v1/chat/completions", {"authorization": f"Bearer {token}"}, CHAT),
        (
            "/anthropic/v1/messages",
            {"x-api-key": token, "anthropic-version": "2023-06-01"},
            {"model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
        ),
        (
            "/gemini/v1beta/models/gemini-x:generateContent",
            {"x-goog-api-key": token},
            {"contents": []},
        ),
        (f"/gemini/v1beta/models/gemini-x:generateContent?key={token}", {}, {"contents": []}),
        (
            "/azure/openai/deployments/d1/chat/completions?api-version=2024-10-21",
            {"api-key": token},
            CHAT,
        ),
    ]


def post(proxy: RunningServer, route: str, headers: dict[str, str], body: Any) -> httpx.Response:
    return httpx.post(proxy.url + route, headers=headers, json=body, timeout=10)


def test_a_stored_token_works_in_every_sdk_slot_and_never_reaches_upstream(
    token_proxy: RunningServer, mock_upstream: RunningServer, admin: Store
) -> None:
    token, _ = create_token(admin, "every-slot")
    for route, headers, body in slot_requests(token):
        reset_upstream(mock_upstream)
        reply = post(token_proxy, route, headers, body)
        assert reply.status_code == 200, (route, reply.text)
        [seen] = upstream_requests(mock_upstream)
        assert token not in str(seen), route
        real = {OPENAI_KEY, ANTHROPIC_KEY, GEMINI_KEY, AZURE_KEY}
        assert any(key in str(seen["headers"]) for key in real), route


def test_the_shared_access_token_still_works_beside_stored_ones(
    token_proxy: RunningServer, admin: Store
) -> None:
    reply = post(
        token_proxy, "/openai/v1/chat/completions", {"authorization": f"Bearer {FAKE_TOKEN}"}, CHAT
    )
    assert reply.status_code == 200


def until_status(
    proxy: RunningServer, headers: dict[str, str], status: int
) -> tuple[httpx.Response, float]:
    """Poll until the proxy answers `status`; the reply and how long it took."""
    started = time.monotonic()
    while True:
        reply = post(proxy, "/openai/v1/chat/completions", headers, CHAT)
        waited = time.monotonic() - started
        if reply.status_code == status or waited > CACHE_SECONDS + 3:
            return reply, waited
        time.sleep(0.05)


def test_revoke_takes_effect_within_the_cache_time(
    token_proxy: RunningServer, admin: Store
) -> None:
    token, _ = create_token(admin, "to-revoke")
    headers = {"authorization": f"Bearer {token}"}
    assert post(token_proxy, "/openai/v1/chat/completions", headers, CHAT).status_code == 200
    revoke_token(admin, "to-revoke")
    reply, waited = until_status(token_proxy, headers, 401)
    assert reply.status_code == 401
    # Generous bound over TOKEN_CACHE_SECONDS: the point is "seconds", not "until restart".
    assert waited < CACHE_SECONDS + 1.5
    assert reply.json()["error"]["code"] == "invalid_api_key"


def test_disable_and_enable(token_proxy: RunningServer, admin: Store) -> None:
    token, record = create_token(admin, "toggle")
    headers = {"authorization": f"Bearer {token}"}
    set_disabled(admin, "toggle", True)
    reply, _ = until_status(token_proxy, headers, 401)
    assert (
        reply.status_code == 401 and f"{record.id} is disabled" in reply.json()["error"]["message"]
    )
    set_disabled(admin, "toggle", False)
    reply, _ = until_status(token_proxy, headers, 200)
    assert reply.status_code == 200


def test_an_expired_token_is_refused_even_while_cached(
    token_proxy: RunningServer, admin: Store
) -> None:
    token, _ = create_token(admin, "short-lived", expires_at=time.time() + 0.5)
    headers = {"authorization": f"Bearer {token}"}
    assert post(token_proxy, "/openai/v1/chat/completions", headers, CHAT).status_code == 200
    time.sleep(0.6)
    assert post(token_proxy, "/openai/v1/chat/completions", headers, CHAT).status_code == 401


def test_last_used_is_recorded(token_proxy: RunningServer, admin: Store) -> None:
    token, _ = create_token(admin, "used")
    assert list_tokens(admin)[0].last_used is None
    post(token_proxy, "/openai/v1/chat/completions", {"authorization": f"Bearer {token}"}, CHAT)
    deadline = time.monotonic() + 3
    while list_tokens(admin)[0].last_used is None and time.monotonic() < deadline:
        time.sleep(0.05)
    last_used = list_tokens(admin)[0].last_used
    assert last_used is not None and abs(last_used - time.time()) < 10


def test_out_of_scope_provider_is_403_in_the_callers_shape(
    token_proxy: RunningServer, admin: Store
) -> None:
    token, _ = create_token(admin, "openai-only", providers=("openai",))
    requests = {
        route.split("/")[1]: (route, headers, body) for route, headers, body in slot_requests(token)
    }
    assert post(token_proxy, *requests["openai"]).status_code == 200

    reply = post(token_proxy, *requests["anthropic"])
    assert reply.status_code == 403
    assert reply.json()["error"]["type"] == "permission_error"
    assert "'anthropic'" in reply.json()["error"]["message"]

    reply = post(token_proxy, *requests["gemini"])
    assert reply.status_code == 403
    assert reply.json()["error"]["status"] == "PERMISSION_DENIED"

    reply = post(token_proxy, *requests["azure"])
    assert reply.status_code == 403
    assert reply.json()["error"]["type"] == "permission_error"


def test_out_of_scope_model_is_403(
    token_proxy: RunningServer, mock_upstream: RunningServer, admin: Store
) -> None:
    token, _ = create_token(admin, "small-models", models=("gpt-4o-mini", "gemini-*-flash"))
    bearer = {"authorization": f"Bearer {token}"}
    route = "/openai/v1/chat/completions"
    assert post(token_proxy, route, bearer, CHAT).status_code == 200
    reset_upstream(mock_upstream)
    reply = post(token_proxy, route, bearer, {**CHAT, "model": "o3-pro"})
    assert reply.status_code == 403
    assert reply.json()["error"]["code"] == "forbidden"
    assert "'o3-pro'" in reply.json()["error"]["message"]
    assert upstream_requests(mock_upstream) == []  # refused before it cost anything

    goog = {"x-goog-api-key": token}
    gemini = "/gemini/v1beta/models/{}:generateContent"
    assert post(token_proxy, gemini.format("gemini-2.0-flash"), goog, {}).status_code == 200
    reply = post(token_proxy, gemini.format("gemini-2.5-pro"), goog, {})
    assert reply.status_code == 403 and reply.json()["error"]["status"] == "PERMISSION_DENIED"

    azure = "/azure/openai/deployments/{}/chat/completions?api-version=2024-10-21"
    reply = post(token_proxy, azure.format("big-deployment"), {"api-key": token}, CHAT)
    assert reply.status_code == 403

    # A listing names no model and spends nothing; a POST whose model cannot be read is refused.
    listing = httpx.get(f"{token_proxy.url}/openai/v1/models", headers=bearer, timeout=10)
    assert listing.status_code == 200
    upload = httpx.post(
        f"{token_proxy.url}/openai/v1/audio/transcriptions",
        headers=bearer,
        files={"file": ("a.wav", b"RIFF"), "model": (None, "whisper-1")},
        timeout=10,
    )
    assert upload.status_code == 403


def test_an_unreachable_store_is_a_503_without_its_address(
    mock_upstream: RunningServer, tmp_path: Path
) -> None:
    from tests.support.servers import free_port

    store_url = f"redis://:secret-password@127.0.0.1:{free_port()}/0"
    app = create_app(load_settings(token_env(mock_upstream.url, store_url)))
    with serve_in_thread(app) as proxy:
        reply = post(proxy, "/anthropic/v1/messages", {"x-api-key": "llmp_unknown-token-xyz"}, {})
        assert reply.status_code == 503
        assert (
            reply.json()["error"]["message"] == "The proxy's token store is unavailable; try again."
        )
        assert "secret-password" not in reply.text and "127.0.0.1" not in reply.text
        # The shared token needs no store and keeps working.
        ok = post(
            proxy, "/openai/v1/chat/completions", {"authorization": f"Bearer {FAKE_TOKEN}"}, CHAT
        )
        assert ok.status_code == 200


@pytest.mark.parametrize("store_url", ["dynamodb", "redis"], indirect=True)
def test_cloud_stores_serve_the_proxy(store_url: str, mock_upstream: RunningServer) -> None:
    """Create, use and revoke against DynamoDB (moto) and a real redis-server."""
    store = open_store(store_url)
    token, _ = create_token(store, "cloud", providers=("openai",))
    app = create_app(load_settings(token_env(mock_upstream.url, store_url)))
    with serve_in_thread(app) as proxy:
        headers = {"authorization": f"Bearer {token}"}
        assert post(proxy, "/openai/v1/chat/completions", headers, CHAT).status_code == 200
        assert post(proxy, "/anthropic/v1/messages", {"x-api-key": token}, {}).status_code == 403
        revoke_token(store, "cloud")
        reply, _ = until_status(proxy, headers, 401)
        assert reply.status_code == 401
