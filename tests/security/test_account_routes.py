"""Account routes (core/protocols.py `AccountRoutes`): routes that read or change objects
stored in the provider account every caller shares. Over real sockets in front of the mock
upstream: under ACCOUNT_ROUTES=refuse each is a 403 in the caller's protocol shape that
asks nobody upstream, in every path spelling an upstream reads as the same route; by
default each passes for proxy tokens and is refused to signed-in users (JWT) and anonymous
callers; a token limited to models or providers is refused them always. Generation, model lists and lookups, and Gemini's uploads are no account routes.

Before: every one of these reached the upstream for any caller (a GET, HEAD or DELETE was
a free read, and a scoped token's read "named no model and spent nothing"), so one caller
listed, read and deleted what another had stored, and a model-scoped token deleted the
owner's fine-tuned model."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from core.access.tokens import create_token
from core.app import create_app
from core.config import load_settings
from core.stores import open_store
from tests.access.jwt_keys import ISSUER, JWKSServer, KeyPair, jwks_served, mint, rsa_key
from tests.support.all_providers import all_providers_env
from tests.support.gemini import START, upload
from tests.support.servers import (
    FAKE_TOKEN,
    RunningServer,
    proxy_env,
    reset_upstream,
    serve_in_thread,
    upstream_requests,
)

GEMINI_PATH = "/gemini/v1beta"

# (method, path, protocol): each an account route, several of them in other spellings
# (case, trailing slash, `//`, `%2F` and `%252F`, `;x`, the provider's own prefix).
ACCOUNT_ROUTES: list[tuple[str, str, str]] = [
    # OpenAI: stored chat completions (`store: true`) and their messages.
    ("GET", "/v1/chat/completions", "openai"),
    ("GET", "/v1/Chat//Completions/", "openai"),
    ("GET", "/v1/chat/completions;x", "openai"),
    ("GET", "/v1/chat%2Fcompletions", "openai"),
    ("GET", "/openai/v1/chat/completions?limit=100", "openai"),
    ("GET", "/v1/chat/completions/chatcmpl-1", "openai"),
    ("GET", "/v1/chat/completions/chatcmpl-1/messages", "openai"),
    ("POST", "/v1/chat/completions/chatcmpl-1", "openai"),
    ("DELETE", "/v1/chat/completions/chatcmpl-1", "openai"),
    # Files.
    ("GET", "/v1/files", "openai"),
    ("HEAD", "/v1/files", "openai"),
    ("GET", "/v1/FILES/", "openai"),
    ("GET", "/openai/v1/files", "openai"),
    ("GET", "/openai//v1/files", "openai"),
    ("GET", "/v1/files/file-1/content", "openai"),
    ("GET", "/v1/files%2Ffile-1%2Fcontent", "openai"),
    ("GET", "/v1/files%252Ffile-1/content", "openai"),
    ("DELETE", "/v1/files/file-1", "openai"),
    # Stored responses.
    ("GET", "/v1/responses/resp_1", "openai"),
    ("GET", "/v1/Responses/resp_1/input_items/", "openai"),
    ("DELETE", "/v1/responses/resp_1", "openai"),
    ("POST", "/v1/responses/resp_1/cancel", "openai"),
    # The owner's fine-tuned model.
    ("DELETE", "/v1/models/ft:gpt-4o-mini:org::abc", "openai"),
    ("DELETE", "/openai/v1/Models/ft:gpt-4o-mini:org::abc;x", "openai"),
    # Batches, vector stores, Assistants, conversations, containers, fine-tuning, evals...
    ("GET", "/v1/batches", "openai"),
    ("GET", "/v1/batches/batch_1", "openai"),
    ("POST", "/v1/batches/batch_1/cancel", "openai"),
    ("GET", "/v1/vector_stores", "openai"),
    ("POST", "/v1/vector_stores/vs_1/search", "openai"),
    ("DELETE", "/v1/vector_stores/vs_1", "openai"),
    ("GET", "/v1/assistants", "openai"),
    ("POST", "/v1/assistants/asst_1", "openai"),
    ("GET", "/v1/threads/thread_1/messages", "openai"),
    ("POST", "/v1/threads/thread_1/messages", "openai"),
    ("GET", "/v1/conversations/conv_1/items", "openai"),
    ("GET", "/v1/containers", "openai"),
    ("GET", "/v1/fine_tuning/jobs", "openai"),
    ("POST", "/v1/fine_tuning/jobs/ftjob-1/cancel", "openai"),
    ("GET", "/v1/evals", "openai"),
    ("POST", "/v1/uploads/upload_1/parts", "openai"),
    ("GET", "/v1/videos/video_1/content", "openai"),
    ("GET", "/v1/organization/projects", "openai"),
    # Gemini's OpenAI-compatible surface, another vendor on the OpenAI protocol.
    ("GET", "/gemini/v1beta/openai/files", "openai"),
    ("GET", "/mistral/v1/batch/jobs", "openai"),
    # OpenRouter's presets: a POST "to a chat" stores the body as a preset the whole
    # account runs by its name (before: passed as a generation).
    ("POST", "/openrouter/api/v1/presets/house/chat/completions", "openai"),
    ("POST", "/openrouter/api/v1/Presets//house/messages/", "openai"),
    ("POST", "/openrouter/api/v1/presets/house/responses", "openai"),
    ("GET", "/openrouter/api/v1/presets", "openai"),
    # Anthropic.
    ("GET", "/anthropic/v1/files", "anthropic"),
    ("GET", "/anthropic/v1/Files/", "anthropic"),
    ("GET", "/anthropic/v1/files/file_1/content", "anthropic"),
    ("DELETE", "/anthropic/v1/files/file_1", "anthropic"),
    ("GET", "/anthropic/v1/messages/batches", "anthropic"),
    ("GET", "/anthropic/v1/messages%2Fbatches/msgbatch_1/results", "anthropic"),
    ("POST", "/anthropic/v1/messages/batches/msgbatch_1/cancel", "anthropic"),
    ("GET", "/anthropic/v1/skills", "anthropic"),
    # Gemini.
    ("GET", f"{GEMINI_PATH}/files", "gemini"),
    ("GET", "/gemini//v1beta/files;x/", "gemini"),
    ("GET", f"{GEMINI_PATH}/files/abc", "gemini"),
    ("DELETE", f"{GEMINI_PATH}/files/abc", "gemini"),
    ("GET", f"{GEMINI_PATH}/cachedContents", "gemini"),
    ("GET", f"{GEMINI_PATH}/CACHEDCONTENTS/c1", "gemini"),
    ("PATCH", f"{GEMINI_PATH}/cachedContents/c1", "gemini"),
    ("GET", f"{GEMINI_PATH}/tunedModels", "gemini"),
    ("DELETE", f"{GEMINI_PATH}/tunedModels/t1", "gemini"),
    ("GET", f"{GEMINI_PATH}/batches/b1", "gemini"),
    ("POST", f"{GEMINI_PATH}/batches/b1:cancel", "gemini"),
    ("GET", f"{GEMINI_PATH}/models/veo-3.0-generate-001/operations/op1", "gemini"),
    ("GET", f"{GEMINI_PATH}/corpora", "gemini"),
    ("GET", f"{GEMINI_PATH}/fileSearchStores", "gemini"),
    ("GET", "/gemini/v1alpha/files", "gemini"),
]

# Not account routes, refused by nothing here: generation (with `store: true`), model lists
# and lookups, counting tokens, a new file (it reads nobody's).
NOT_ACCOUNT_ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    (
        "POST",
        "/v1/chat/completions",
        {"model": "mock-model", "store": True, "messages": [{"role": "user", "content": "hi"}]},
    ),
    ("POST", "/v1/responses", {"model": "mock-model", "store": True, "input": "hi"}),
    ("POST", "/v1/responses/input_tokens", {"model": "mock-model", "input": "hi"}),
    ("GET", "/v1/models", None),
    ("GET", "/v1/models/mock-model", None),
    ("GET", "/anthropic/v1/models", None),
    (
        "POST",
        "/anthropic/v1/messages",
        {
            "model": "claude-haiku-4-5",
            "max_tokens": 10,
            "messages": [{"role": "user", "content": "hi"}],
        },
    ),
    ("GET", f"{GEMINI_PATH}/models", None),
    ("GET", f"{GEMINI_PATH}/models/gemini-2.5-flash", None),
    (
        "POST",
        f"{GEMINI_PATH}/models/gemini-2.5-flash:generateContent",
        {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]},
    ),
]


def headers(protocol: str, token: str = FAKE_TOKEN) -> dict[str, str]:
    if protocol == "anthropic":
        return {"x-api-key": token, "anthropic-version": "2023-06-01"}
    if protocol == "gemini":
        return {"x-goog-api-key": token}
    return {"authorization": f"Bearer {token}"}


def protocol_of(path: str) -> str:
    if path.startswith("/anthropic/"):
        return "anthropic"
    if path.startswith("/gemini/") and not path.startswith("/gemini/v1beta/openai/"):
        return "gemini"
    return "openai"


def call(
    proxy: RunningServer, method: str, path: str, protocol: str, token: str = FAKE_TOKEN
) -> httpx.Response:
    body = {"metadata": {"k": "v"}} if method in ("POST", "PATCH") else None
    return httpx.request(
        method, f"{proxy.url}{path}", json=body, headers=headers(protocol, token), timeout=10
    )


def assert_refused(reply: httpx.Response, protocol: str, says: str) -> None:
    assert reply.status_code == 403, reply.text
    if reply.request.method == "HEAD":
        return
    error = reply.json()["error"]
    assert says in error["message"]
    if protocol == "openai":
        assert error["code"] == "account_route_refused"
        assert error["type"] == "permission_error"
    elif protocol == "anthropic":
        assert reply.json()["type"] == "error"
        assert error["type"] == "permission_error"
    else:
        assert error["status"] == "PERMISSION_DENIED" and error["code"] == 403


def provider_env(upstream: RunningServer, **extra: str) -> dict[str, str]:
    return proxy_env(upstream.url, **all_providers_env(upstream.url), **extra)


@pytest.fixture(scope="module")
def refusing(mock_upstream: RunningServer) -> Iterator[RunningServer]:
    env = provider_env(mock_upstream, ACCOUNT_ROUTES="refuse")
    with serve_in_thread(create_app(load_settings(env))) as server:
        yield server


@pytest.mark.parametrize(("method", "path", "protocol"), ACCOUNT_ROUTES)
def test_refuse_answers_each_account_route_itself(
    refusing: RunningServer, mock_upstream: RunningServer, method: str, path: str, protocol: str
) -> None:
    reset_upstream(mock_upstream)
    reply = call(refusing, method, path, protocol)
    assert_refused(reply, protocol, "ACCOUNT_ROUTES=refuse")
    assert upstream_requests(mock_upstream) == []


@pytest.mark.parametrize(("method", "path", "protocol"), ACCOUNT_ROUTES)
def test_by_default_each_account_route_passes_as_before(
    all_providers_proxy: RunningServer,
    mock_upstream: RunningServer,
    method: str,
    path: str,
    protocol: str,
) -> None:
    reset_upstream(mock_upstream)
    reply = call(all_providers_proxy, method, path, protocol)
    assert reply.status_code != 403, reply.text
    assert len(upstream_requests(mock_upstream)) == 1


@pytest.mark.parametrize(("method", "path", "body"), NOT_ACCOUNT_ROUTES)
def test_refuse_leaves_generation_and_model_lists_alone(
    refusing: RunningServer,
    mock_upstream: RunningServer,
    method: str,
    path: str,
    body: dict[str, Any] | None,
) -> None:
    reset_upstream(mock_upstream)
    protocol = protocol_of(path)
    reply = httpx.request(
        method, f"{refusing.url}{path}", json=body, headers=headers(protocol), timeout=10
    )
    assert reply.status_code == 200, reply.text
    assert len(upstream_requests(mock_upstream)) == 1


def gemini_upload(proxy: RunningServer, token: str) -> None:
    """Gemini's resumable upload, start and leg: not an account route (it makes a new file
    and reads nobody's)."""
    start = httpx.post(
        f"{proxy.url}/gemini/upload/v1beta/files",
        headers={**START, "x-goog-api-key": token},
        json={"file": {"display_name": "notes"}},
    )
    assert start.status_code == 200, start.text
    leg = upload(start.headers["x-goog-upload-url"])
    assert leg.status_code == 200, leg.text
    assert leg.json()["file"]["name"].startswith("files/")


def test_refuse_keeps_gemini_uploads_working(refusing: RunningServer) -> None:
    gemini_upload(refusing, FAKE_TOKEN)


def test_the_openai_sdk_sees_a_permission_error_under_refuse(refusing: RunningServer) -> None:
    client = openai.OpenAI(base_url=f"{refusing.url}/v1", api_key=FAKE_TOKEN, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError) as refused:
        client.files.list()
    assert refused.value.code == "account_route_refused"
    assert "ACCOUNT_ROUTES=refuse" in refused.value.message
    # Generation through the same client goes on as before.
    answer = client.chat.completions.create(
        model="mock-model", messages=[{"role": "user", "content": "hi"}], store=True
    )
    assert answer.choices


@pytest.fixture(scope="module")
def tokens(
    mock_upstream: RunningServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RunningServer, dict[str, str]]]:
    """The default ACCOUNT_ROUTES, with stored tokens: one limited to models, one to
    providers, one unscoped."""
    store_url = f"sqlite:///{Path(tmp_path_factory.mktemp('tokens')) / 'tokens.db'}"
    store = open_store(store_url)
    made = {
        "models": create_token(store, "models", models=("mock-model", "gemini-*", "claude-*"))[0],
        "providers": create_token(store, "providers", providers=("default", "gemini"))[0],
        "unscoped": create_token(store, "unscoped")[0],
    }
    env = provider_env(mock_upstream, TOKEN_STORE=store_url, TOKEN_CACHE_SECONDS="0")
    with serve_in_thread(create_app(load_settings(env))) as server:
        yield server, made


# A scoped token on each protocol, and the routes its owner most fears: another caller's
# stored chat completions and files, the owner's fine-tuned model, Gemini's files.
SCOPED_CASES = [
    ("GET", "/v1/chat/completions", "openai"),
    ("GET", "/v1/chat/completions/chatcmpl-1/messages", "openai"),
    ("GET", "/v1/Files/file-1/content", "openai"),
    ("DELETE", "/v1/models/ft:gpt-4o-mini:org::abc", "openai"),
    ("GET", "/v1/responses/resp_1", "openai"),
    ("GET", f"{GEMINI_PATH}/files", "gemini"),
    ("DELETE", f"{GEMINI_PATH}/files/abc", "gemini"),
    ("GET", f"{GEMINI_PATH}/models/veo-3.0-generate-001/operations/op1", "gemini"),
]


@pytest.mark.parametrize("scope", ["models", "providers"])
@pytest.mark.parametrize(("method", "path", "protocol"), SCOPED_CASES)
def test_a_scoped_token_is_refused_account_routes_whatever_the_setting(
    tokens: tuple[RunningServer, dict[str, str]],
    mock_upstream: RunningServer,
    scope: str,
    method: str,
    path: str,
    protocol: str,
) -> None:
    proxy, made = tokens
    reset_upstream(mock_upstream)
    reply = call(proxy, method, path, protocol, made[scope])
    assert_refused(reply, protocol, "a token limited to some models or providers")
    assert upstream_requests(mock_upstream) == []


def test_a_scoped_token_on_anthropic_is_refused_its_files(
    tokens: tuple[RunningServer, dict[str, str]], mock_upstream: RunningServer
) -> None:
    proxy, made = tokens
    reset_upstream(mock_upstream)
    reply = call(proxy, "GET", "/anthropic/v1/files", "anthropic", made["models"])
    assert_refused(reply, "anthropic", "a token limited to some models or providers")
    assert upstream_requests(mock_upstream) == []


def test_an_unscoped_token_keeps_account_routes_by_default(
    tokens: tuple[RunningServer, dict[str, str]], mock_upstream: RunningServer
) -> None:
    proxy, made = tokens
    for method, path, protocol in SCOPED_CASES:
        reset_upstream(mock_upstream)
        reply = call(proxy, method, path, protocol, made["unscoped"])
        assert reply.status_code != 403, (path, reply.text)
        assert len(upstream_requests(mock_upstream)) == 1


def test_a_scoped_token_keeps_generation_model_lists_and_uploads(
    tokens: tuple[RunningServer, dict[str, str]], mock_upstream: RunningServer
) -> None:
    proxy, made = tokens
    scoped = made["models"]
    auth = headers("openai", scoped)
    listed = httpx.get(f"{proxy.url}/v1/models", headers=auth)
    assert listed.status_code == 200
    assert [model["id"] for model in listed.json()["data"]] == ["mock-model"]
    looked_up = httpx.get(f"{proxy.url}/v1/models/mock-model", headers=auth)
    assert looked_up.status_code == 200, looked_up.text
    chat = httpx.post(
        f"{proxy.url}/v1/chat/completions",
        json={"model": "mock-model", "store": True, "messages": [{"role": "user", "content": "x"}]},
        headers=auth,
    )
    assert chat.status_code == 200, chat.text
    gemini = httpx.get(f"{proxy.url}{GEMINI_PATH}/models", headers=headers("gemini", scoped))
    assert gemini.status_code == 200, gemini.text
    # A provider-scoped token (the model-scoped one names no model to upload under).
    gemini_upload(proxy, made["providers"])


# ---- callers who are people at a page: signed-in users (JWT) and anonymous visitors --------
#
# Before: under the default ACCOUNT_ROUTES every caller but a scoped token reached account
# routes, so any visitor who signed in to the page (or, with ALLOW_ANONYMOUS, any visitor
# at all) listed every other user's stored chat completions, read their files and deleted
# the owner's fine-tuned model. Such a caller is one of many people by design, as a scoped
# token's holder is: refused them unless ACCOUNT_ROUTES=allow says otherwise.

PAGE = "http://app.example.test"


@pytest.fixture(scope="module")
def signing_key() -> KeyPair:
    return rsa_key("page-1")


@contextlib.contextmanager
def page_proxy(upstream: RunningServer, key: KeyPair, **extra: str) -> Iterator[RunningServer]:
    """A proxy for a page: signed-in users, anonymous visitors from the page, and the
    operator's shared token beside them."""
    with jwks_served(JWKSServer(keys=[key.jwk()])) as jwks:
        env = provider_env(
            upstream,
            JWT_JWKS_URL=f"{jwks.url}/jwks.json",
            JWT_ISSUER=ISSUER,
            ALLOW_ANONYMOUS="true",
            ALLOWED_ORIGINS=PAGE,
            RATE_LIMIT_REQUESTS="100000",
            **extra,
        )
        with serve_in_thread(create_app(load_settings(env))) as server:
            yield server


@pytest.fixture(scope="module")
def page(mock_upstream: RunningServer, signing_key: KeyPair) -> Iterator[RunningServer]:
    with page_proxy(mock_upstream, signing_key) as server:
        yield server


def as_visitor(proxy: RunningServer, method: str, path: str, protocol: str) -> httpx.Response:
    """No credential, from the listed page: an anonymous visitor."""
    wanted = {k: v for k, v in headers(protocol, "x").items() if k == "anthropic-version"}
    return httpx.request(
        method, f"{proxy.url}{path}", headers={**wanted, "origin": PAGE}, timeout=10
    )


@pytest.mark.parametrize(("method", "path", "protocol"), SCOPED_CASES)
def test_a_signed_in_user_is_refused_account_routes_by_default(
    page: RunningServer,
    mock_upstream: RunningServer,
    signing_key: KeyPair,
    method: str,
    path: str,
    protocol: str,
) -> None:
    reset_upstream(mock_upstream)
    reply = call(page, method, path, protocol, mint(signing_key))
    assert_refused(reply, protocol, "signed-in users and anonymous callers")
    assert upstream_requests(mock_upstream) == []


@pytest.mark.parametrize(("method", "path", "protocol"), SCOPED_CASES)
def test_an_anonymous_visitor_is_refused_account_routes_by_default(
    page: RunningServer, mock_upstream: RunningServer, method: str, path: str, protocol: str
) -> None:
    reset_upstream(mock_upstream)
    reply = as_visitor(page, method, path, protocol)
    assert_refused(reply, protocol, "signed-in users and anonymous callers")
    assert upstream_requests(mock_upstream) == []


def test_beside_them_the_shared_token_and_their_generation_go_on(
    page: RunningServer, mock_upstream: RunningServer, signing_key: KeyPair
) -> None:
    for method, path, protocol in SCOPED_CASES:
        reset_upstream(mock_upstream)
        reply = call(page, method, path, protocol, FAKE_TOKEN)
        assert reply.status_code != 403, (path, reply.text)
        assert len(upstream_requests(mock_upstream)) == 1
    client = openai.OpenAI(base_url=f"{page.url}/v1", api_key=mint(signing_key), max_retries=0)
    answer = client.chat.completions.create(
        model="mock-model", messages=[{"role": "user", "content": "hi"}], store=True
    )
    assert answer.choices
    with pytest.raises(openai.PermissionDeniedError) as refused:
        client.files.list()
    assert refused.value.code == "account_route_refused"


def test_allow_opens_account_routes_to_signed_in_users_and_visitors(
    mock_upstream: RunningServer, signing_key: KeyPair
) -> None:
    with page_proxy(mock_upstream, signing_key, ACCOUNT_ROUTES="allow") as server:
        for ask in (
            lambda: call(server, "GET", "/v1/chat/completions", "openai", mint(signing_key)),
            lambda: as_visitor(server, "GET", "/v1/files", "openai"),
        ):
            reset_upstream(mock_upstream)
            reply = ask()
            assert reply.status_code != 403, reply.text
            assert len(upstream_requests(mock_upstream)) == 1
