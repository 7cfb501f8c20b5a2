"""Security review: each test pins one defect a caller could exploit (see the docstrings)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
import websockets

from core.access.tokens import create_token
from core.app import MisconfiguredApp, create_app
from core.config import ConfigError, load_settings
from core.stores import open_store
from core.types import ASGIApp
from tests.access.jwt_keys import ISSUER, JWKSServer, jwks_served, mint, rsa_key
from tests.support.fake_realtime import LIVE_PATH, FakeRealtime
from tests.support.gemini import START, upload
from tests.support.gemini import UPLOAD_KEY as GEMINI_KEY
from tests.support.realtime import ProxyFactory, eventually
from tests.support.servers import (
    FAKE_TOKEN,
    FAKE_UPSTREAM_KEY,
    RunningServer,
    free_port,
    http_entry,
    proxy_env,
    reset_upstream,
    run_process,
    serve_in_thread,
    upstream_requests,
)
from tests.telemetry.otlp_receiver import Received, otlp_exporting

UPSTREAM = "https://api.upstream.test/v1"
AUTH = {"Authorization": f"Bearer {FAKE_TOKEN}", "content-type": "application/json"}


def env(**extra: str) -> dict[str, str]:
    return {
        "UPSTREAM_BASE_URL": UPSTREAM,
        "UPSTREAM_API_KEY": FAKE_UPSTREAM_KEY,
        "PROXY_ACCESS_TOKEN": FAKE_TOKEN,
        "UPSTREAM_TRANSPORT": "httpx",
        "ACCESS_LOG": "false",
        **extra,
    }


def client(app: ASGIApp) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://proxy.test")


@pytest.fixture()
async def scoped(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """A proxy with a token store and a token limited to the model `cheap-*`."""
    url = f"sqlite:///{tmp_path}/tokens.db"
    token, _ = create_token(open_store(url), "alice", models=("cheap-*",))
    async with client(create_app(load_settings(env(TOKEN_STORE=url)))) as c:
        yield c, token


# ---- JSON bodies that name one field twice ------------------------------------------
# Python's json keeps the last value; a provider (or a gateway in front of it) that reads
# the first one would run the forbidden model or the uncapped output the proxy never saw.

DUPLICATE_MODEL = b'{"model":"expensive-model","model":"cheap-1","messages":[]}'


@respx.mock
async def test_scoped_token_refuses_a_body_that_names_the_model_twice(
    scoped: tuple[httpx.AsyncClient, str],
) -> None:
    proxy, token = scoped
    route = respx.post(f"{UPSTREAM}/chat/completions").respond(200, json={})
    headers = {"Authorization": f"Bearer {token}", "content-type": "application/json"}
    allowed = await proxy.post(
        "/v1/chat/completions", content=b'{"model":"cheap-1"}', headers=headers
    )
    assert allowed.status_code == 200
    response = await proxy.post("/v1/chat/completions", content=DUPLICATE_MODEL, headers=headers)
    assert response.status_code in (400, 403), response.text
    assert route.call_count == 1
    assert "error" in response.json()


@respx.mock
async def test_model_allowlist_refuses_a_body_that_names_the_model_twice() -> None:
    route = respx.post(f"{UPSTREAM}/chat/completions").respond(200, json={})
    async with client(create_app(load_settings(env(ALLOWED_MODELS="cheap-*")))) as proxy:
        response = await proxy.post("/v1/chat/completions", content=DUPLICATE_MODEL, headers=AUTH)
    assert response.status_code in (400, 403), response.text
    assert route.call_count == 0


@respx.mock
async def test_output_cap_refuses_a_body_that_names_max_tokens_twice() -> None:
    route = respx.post(f"{UPSTREAM}/chat/completions").respond(200, json={})
    body = b'{"model":"m","messages":[],"max_tokens":100000,"max_tokens":10}'
    async with client(create_app(load_settings(env(MAX_TOKENS_CAP="100")))) as proxy:
        response = await proxy.post("/v1/chat/completions", content=body, headers=AUTH)
    assert response.status_code == 400, response.text
    assert route.call_count == 0


# ---- the caller's ?key= in any spelling stays here -----------------------------------


@respx.mock
@pytest.mark.parametrize("param", ["KEY", "Key", "%6Bey", "%6b%65%79"])
async def test_key_param_in_another_spelling_is_not_forwarded(param: str) -> None:
    route = respx.get(url__startswith=f"{UPSTREAM}/models").respond(200, json={})
    async with client(create_app(load_settings(env()))) as proxy:
        response = await proxy.get(
            f"/v1/models?alt=sse&{param}={FAKE_TOKEN}", headers={"x-goog-api-key": FAKE_TOKEN}
        )
    assert response.status_code == 200
    sent = route.calls.last.request.url
    assert FAKE_TOKEN not in str(sent)
    assert sent.query == b"alt=sse"


@respx.mock
async def test_key_param_spelled_otherwise_still_authenticates() -> None:
    route = respx.get(url__startswith=f"{UPSTREAM}/models").respond(200, json={})
    async with client(create_app(load_settings(env()))) as proxy:
        response = await proxy.get(f"/v1/models?%6Bey={FAKE_TOKEN}")
    assert response.status_code == 200
    assert FAKE_TOKEN not in str(route.calls.last.request.url)


# ---- a path an adapter hands over already decoded -------------------------------------


@respx.mock
async def test_decoded_path_cannot_add_a_query_or_fragment_upstream() -> None:
    """Mangum (API Gateway REST, ALB) passes `raw_path: None` and a percent-decoded `path`:
    `%3F` in the caller's path must not become the start of the upstream query."""
    route = respx.route(host="api.upstream.test").respond(200, json={})
    app = create_app(load_settings(env()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "https",
        "path": "/v1/models/a?b=c#frag é",
        "raw_path": None,
        "root_path": "",
        "query_string": b"x=1",
        "headers": [(b"authorization", f"Bearer {FAKE_TOKEN}".encode())],
        "client": ("203.0.113.9", 0),
        "server": ("proxy.test", 443),
    }
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    assert sent[0]["status"] == 200
    url = route.calls.last.request.url
    assert url.raw_path == b"/v1/models/a%3Fb=c%23frag%20%C3%A9?x=1"


# ---- what a printed Settings object shows ---------------------------------------------


def test_settings_repr_hides_the_store_password() -> None:
    settings = load_settings(
        env(
            TOKEN_STORE="redis://:s3cret-store-password@redis.internal:6379/0",
            RATE_LIMIT_REQUESTS="10",
        )
    )
    assert "s3cret-store-password" not in repr(settings)
    settings = load_settings(
        env(
            LIMIT_STORE="rediss://:s3cret-store-password@redis.internal:6380",
            RATE_LIMIT_REQUESTS="1",
        )
    )
    assert "s3cret-store-password" not in repr(settings)


# ---- a misconfigured deployment answers everyone ------------------------------------


async def test_misconfigured_reply_does_not_echo_variable_values() -> None:
    """Swapping UPSTREAM_BASE_URL and UPSTREAM_API_KEY is an easy mistake; the 500 every
    caller then receives must name the variable, not print the key."""
    leaked = "sk-fake-pasted-into-wrong-var"
    import os

    saved = dict(os.environ)
    os.environ.update(
        {"UPSTREAM_BASE_URL": leaked, "UPSTREAM_API_KEY": "x", "PROXY_ACCESS_TOKEN": FAKE_TOKEN}
    )
    try:
        app = create_app()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    async with client(app) as proxy:
        response = await proxy.get("/v1/models")
    assert response.status_code == 500
    assert leaked not in response.text
    assert "UPSTREAM_BASE_URL" in response.json()["error"]["message"]


PASTED = "sk-fake-pasted-secret-0123456789"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        # Problems that quote the value inside the sentence, not after ", got ".
        ("MODEL_ROUTES", f"{PASTED}=nosuchprovider"),
        ("MODEL_FALLBACKS", f"{PASTED}>{PASTED}"),
        ("MODEL_PRICES", json.dumps({PASTED: 1})),
        ("UPSTREAM_BASE_URL", f"https://user:{PASTED}@api.upstream.test/v1?key={PASTED}"),
    ],
)
async def test_misconfigured_reply_names_only_the_variable(variable: str, value: str) -> None:
    """Every caller gets the misconfigured reply: what a problem quotes (a value, a URL, a
    secret's ARN) stays in the operator's log, whatever the problem's wording."""
    with pytest.raises(ConfigError) as caught:
        load_settings(env(**{variable: value}))
    app = MisconfiguredApp(caught.value.problems)
    async with client(app) as proxy:
        response = await proxy.get("/v1/models")
    assert response.status_code == 500
    assert variable in response.json()["error"]["message"]
    assert PASTED not in response.text
    assert "upstream.test" not in response.text


async def test_misconfigured_reply_keeps_a_store_problem_to_the_log() -> None:
    problem = "TOKEN_STORE could not be opened (OperationalError: /srv/acme-prod/tokens.db)"
    async with client(MisconfiguredApp([problem])) as proxy:
        response = await proxy.get("/v1/models")
    message = response.json()["error"]["message"]
    assert "TOKEN_STORE" in message
    assert "acme-prod" not in message


# ---- what the provider's reply says about the key owner -----------------------------


@respx.mock
async def test_anthropic_organization_id_is_not_passed_to_the_caller() -> None:
    respx.post("https://api.anthropic.test/v1/messages").respond(
        200, json={}, headers={"anthropic-organization-id": "org-key-owner", "request-id": "r1"}
    )
    settings = load_settings(
        env(ANTHROPIC_API_KEY=FAKE_UPSTREAM_KEY, ANTHROPIC_UPSTREAM="https://api.anthropic.test")
    )
    async with client(create_app(settings)) as proxy:
        response = await proxy.post(
            "/anthropic/v1/messages", content=b"{}", headers={"x-api-key": FAKE_TOKEN}
        )
    assert response.status_code == 200
    assert "anthropic-organization-id" not in response.headers
    assert response.headers["request-id"] == "r1"
    assert json.loads(response.content) == {}


# ---- a body only a lenient provider reads as JSON --------------------------------------


@respx.mock
@pytest.mark.parametrize("content_type", ["text/plain", None])
async def test_policy_refuses_json_it_cannot_read(content_type: str | None) -> None:
    """Invalid UTF-8 inside a string, sent as text/plain: Python cannot parse it (so the
    policy saw no model and no cap), while a Go server (Ollama, many gateways) reads it."""
    route = respx.post(f"{UPSTREAM}/chat/completions").respond(200, json={})
    respx.post(f"{UPSTREAM}/files").respond(200, json={})
    body = b'{"model":"expensive-model","max_tokens":999999,"messages":[{"role":"user","content":"\xff"}]}'
    headers = {"Authorization": f"Bearer {FAKE_TOKEN}"}
    if content_type:
        headers["content-type"] = content_type
    settings = load_settings(env(ALLOWED_MODELS="cheap-*", MAX_TOKENS_CAP="100"))
    async with client(create_app(settings)) as proxy:
        response = await proxy.post("/v1/chat/completions", content=body, headers=headers)
        upload = await proxy.post(
            "/v1/files",
            content=b"--b\r\n\xff\r\n--b--\r\n",
            headers={**headers, "content-type": "multipart/form-data; boundary=b"},
        )
    assert response.status_code == 400, response.text
    assert route.call_count == 0
    assert upload.status_code == 200  # an upload that is not JSON still passes the policy


# ---- climbing out of the upstream's base path ----------------------------------------


@respx.mock
@pytest.mark.parametrize(
    "path", ["/v1/..;/admin", "/v1/x/.;jsessionid=1/admin", "/v1/%2e%2e;x/admin"]
)
async def test_dot_segments_with_path_parameters_are_refused(path: str) -> None:
    """Servlet containers (Tomcat, Spring, many API gateways) read `..;` as `..`: behind
    one, the caller would leave UPSTREAM_BASE_URL's path for any other on that host."""
    route = respx.route(host="api.upstream.test").respond(200, json={})
    async with client(create_app(load_settings(env()))) as proxy:
        response = await proxy.get(path, headers=AUTH)
    assert response.status_code == 400, response.text
    assert route.call_count == 0


# ---- Gemini methods on resources other than /models/ ---------------------------------
GEMINI = "https://gemini.upstream.test"


def _scoped_to_flash(tmp_path: Path) -> tuple[dict[str, str], dict[str, str], bytes]:
    """A stored token scoped to gemini-2.0-flash*: the proxy's settings, the caller's
    headers, and a body that names an allowed model."""
    url = f"sqlite:///{tmp_path}/tokens.db"
    token, _ = create_token(open_store(url), "bob", models=("gemini-2.0-flash*",))
    extra = {"TOKEN_STORE": url, "GEMINI_API_KEY": "fake-gemini-key", "GEMINI_UPSTREAM": GEMINI}
    headers = {"x-goog-api-key": token, "content-type": "application/json"}
    return extra, headers, b'{"model":"gemini-2.0-flash","contents":[]}'


@respx.mock
async def test_model_scope_covers_gemini_tuned_models(tmp_path: Path) -> None:
    """`tunedModels/x:generateContent` runs a tuned model, whatever the body says."""
    extra, headers, body = _scoped_to_flash(tmp_path)
    route = respx.post(url__startswith=GEMINI).respond(200, json={})
    async with client(create_app(load_settings(env(**extra)))) as proxy:
        allowed = await proxy.post(
            "/gemini/v1beta/models/gemini-2.0-flash:generateContent", content=body, headers=headers
        )
        tuned = await proxy.post(
            "/gemini/v1beta/tunedModels/my-tuned:generateContent", content=body, headers=headers
        )
    assert allowed.status_code == 200
    assert tuned.status_code == 403, tuned.text
    assert tuned.json()["error"]["status"] == "PERMISSION_DENIED"
    assert route.call_count == 1


# ---- the model list MODEL_ROUTES builds ----------------------------------------------
ANTHROPIC = "https://anthropic.upstream.test"
ANTHROPIC_KEY = "fake-anthropic-key-for-the-list-0123"


@respx.mock
async def test_the_routed_model_list_is_scrubbed_of_the_keys() -> None:
    """`GET /v1/models` under MODEL_ROUTES is a reply the proxy writes from each provider's
    own list: an upstream that echoes its key into an id, whole or masked, reached the
    caller there, past the scrubber every relayed reply goes through."""
    masked = ANTHROPIC_KEY[:7] + "****" + ANTHROPIC_KEY[-4:]
    respx.get(f"{UPSTREAM}/models").respond(
        200, json={"data": [{"id": "gpt-4o"}, {"id": f"gpt-echo-{FAKE_UPSTREAM_KEY}"}]}
    )
    respx.get(f"{ANTHROPIC}/v1/models").respond(
        200, json={"data": [{"id": "claude-a"}, {"id": f"claude-echo-{masked}"}]}
    )
    extra = {
        "ANTHROPIC_API_KEY": ANTHROPIC_KEY,
        "ANTHROPIC_UPSTREAM": ANTHROPIC,
        "MODEL_ROUTES": "claude-*=anthropic",
    }
    async with client(create_app(load_settings(env(**extra)))) as proxy:
        reply = await proxy.get("/v1/models", headers=AUTH)
    assert reply.status_code == 200, reply.text
    ids = [model["id"] for model in reply.json()["data"]]
    assert "gpt-4o" in ids and "claude-a" in ids, ids
    for secret in (FAKE_UPSTREAM_KEY, ANTHROPIC_KEY, masked, ANTHROPIC_KEY[-8:]):
        assert secret not in reply.text


# ---- realtime sessions: usage the proxy cannot read ------------------------------------
REALTIME_PRICES = json.dumps(
    {"gpt-realtime*": {"input": 32, "output": 64}, "*gemini-live*": {"input": 32, "output": 64}}
)


def spent_usd(proxy_url: str) -> float:
    reply = httpx.get(f"{proxy_url}/proxy/usage", headers=AUTH)
    return float(reply.json()["spent_usd"])


@pytest.mark.parametrize("provider", ["openai", "gemini"])
async def test_a_realtime_turn_without_usage_is_charged_and_ends_a_capped_session(
    start_proxy: ProxyFactory, upstream: FakeRealtime, provider: str
) -> None:
    """A provider turn whose usage the proxy cannot read (an OpenAI `response.done` with no
    `usage`, a Gemini Live turn completed with no `usageMetadata`) was settled as zero
    tokens, and a session under a budget ran on: every further turn generated uncharged
    until REALTIME_MAX_SECONDS. Fail closed, as stream recovery is: under a cap the session
    ends at the first such turn, and that turn is charged the session's reservation."""
    with start_proxy(
        BUDGET_PER_CALLER_USD="5", MODEL_PRICES=REALTIME_PRICES, REALTIME_RESERVE_TOKENS="10000"
    ) as proxy:
        base = ws_base(proxy.url)
        if provider == "openai":
            url = base + "/v1/realtime?model=gpt-realtime"
            turn = json.dumps({"type": "test.unmetered_response"})
            connect = websockets.connect(url, additional_headers=AUTH)
        else:
            url = base + "/gemini" + LIVE_PATH + f"?key={FAKE_TOKEN}"
            turn = json.dumps({"clientContent": {"turnComplete": True}, "testUnmetered": True})
            connect = websockets.connect(url)
        async with connect as socket:
            if provider == "openai":
                await socket.recv()  # session.created
            else:
                await socket.send('{"setup": {"model": "models/gemini-live-2.5-flash-preview"}}')
                await asyncio.wait_for(socket.recv(), 5)  # setupComplete
            await socket.send(turn)
            await asyncio.wait_for(socket.recv(), 5)  # response.created / modelTurn
            await asyncio.wait_for(socket.recv(), 5)  # response.done / turnComplete
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await socket.send(turn)  # a second turn: never reaches the provider
                await asyncio.wait_for(socket.recv(), 5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
        assert "usage" in closed.value.rcvd.reason
        # The unread turn costs the whole reservation (10,000 output tokens at $64 per
        # million), not nothing.
        await eventually(lambda: spent_usd(proxy.url) > 0)
        assert spent_usd(proxy.url) == pytest.approx(0.64)
    turns = [frame for frame in upstream.sessions[-1]["received"] if "nmetered" in str(frame)]
    assert len(turns) == 1


def ws_base(http_url: str) -> str:
    return "ws" + http_url[4:]


# ---- the response cache's replays ------------------------------------------------------
CACHED = {"model": "m", "temperature": 0, "messages": [{"role": "user", "content": "hi"}]}


@respx.mock
async def test_a_cache_hit_is_no_more_a_page_than_the_reply_it_replays() -> None:
    """Every relayed reply carries `Content-Security-Policy: sandbox` and `nosniff`, so
    nothing it holds runs beside the dashboard's session; a cache hit replayed only the
    stored content headers and lost both."""
    answer = {"choices": [{"message": {"content": "<script>alert(1)</script>"}}]}
    route = respx.post(f"{UPSTREAM}/chat/completions").respond(200, json=answer)
    async with client(create_app(load_settings(env(CACHE_URL="memory://")))) as proxy:
        first = await proxy.post("/v1/chat/completions", json=CACHED, headers=AUTH)
        hit = await proxy.post("/v1/chat/completions", json=CACHED, headers=AUTH)
    assert route.call_count == 1 and hit.headers["x-proxy-cache"] == "hit"
    for reply in (first, hit):
        assert reply.headers.get("content-security-policy") == "sandbox"
        assert reply.headers.get("x-content-type-options") == "nosniff"
        assert len(reply.headers.get_list("content-security-policy")) == 1


@respx.mock
async def test_a_200_in_no_shape_of_the_protocol_is_not_kept() -> None:
    """A metered route answers JSON or an event stream. A 200 in another shape (a gateway's
    or captive portal's HTML page, plain text) is no answer, yet it was kept and replayed to
    the caller for the cache's whole lifetime without reaching the provider again."""
    route = respx.post(f"{UPSTREAM}/chat/completions").respond(
        200,
        content=b"<html>Please sign in to the network</html>",
        headers={"content-type": "text/html"},
    )
    async with client(create_app(load_settings(env(CACHE_URL="memory://")))) as proxy:
        for _ in range(2):
            reply = await proxy.post("/v1/chat/completions", json=CACHED, headers=AUTH)
            assert reply.headers["x-proxy-cache"] == "miss"
    assert route.call_count == 2


# ---- an upload_id and the sign-in that started it ---------------------------------------


def test_an_upload_id_stops_when_the_jwt_that_started_it_expires(
    mock_upstream: RunningServer,
) -> None:
    """A stored token's upload_id dies with the token (checked on every leg); one started
    with a JWT kept working for the upload_id's whole day, long past the sign-in's `exp`,
    for anyone holding the URL: the capability outlived the credential that made it, as a
    minted key may not."""
    import time

    signing_key = rsa_key("upload-1")
    with jwks_served(JWKSServer(keys=[signing_key.jwk()])) as jwks:
        env = proxy_env(
            mock_upstream.url,
            GEMINI_API_KEY=GEMINI_KEY,
            GEMINI_UPSTREAM=mock_upstream.url,
            PROXY_ACCESS_TOKEN="",
            JWT_JWKS_URL=f"{jwks.url}/.well-known/jwks.json",
            JWT_ISSUER=ISSUER,
            JWT_LEEWAY_SECONDS="0",
        )
        with serve_in_thread(create_app(load_settings(env))) as proxy:
            signed_in = mint(signing_key, exp=int(time.time()) + 2)
            started = httpx.post(
                f"{proxy.url}/gemini/upload/v1beta/files",
                headers={**START, "x-goog-api-key": signed_in},
                json={"file": {"display_name": "notes"}},
            )
            assert started.status_code == 200, started.text
            url = started.headers["x-goog-upload-url"]
            time.sleep(2.5)
            reset_upstream(mock_upstream)
            refused = upload(url)
    assert refused.status_code == 401, refused.text
    assert refused.headers["x-goog-upload-status"] == "final"
    assert upstream_requests(mock_upstream) == []  # the bytes never reached the provider


# ---- a realtime session's turns and RATE_LIMIT_REQUESTS ---------------------------------


@pytest.mark.parametrize("provider", ["openai", "gemini"])
async def test_a_realtime_sessions_responses_count_against_the_request_limit(
    start_proxy: ProxyFactory, upstream: FakeRealtime, provider: str
) -> None:
    """A session counted as one request, at its handshake, however many responses it ran:
    under RATE_LIMIT_REQUESTS alone (no token limit or budget, so no reservation bounds
    the session: an anonymous demo's setup) one session generated without end until
    REALTIME_MAX_SECONDS. Each response the provider begins now counts as a request, and
    the one past the limit ends the session."""
    with start_proxy(RATE_LIMIT_REQUESTS="3") as proxy:
        base = ws_base(proxy.url)
        if provider == "openai":
            connect = websockets.connect(
                base + "/v1/realtime?model=gpt-realtime", additional_headers=AUTH
            )
            turn, last = json.dumps({"type": "response.create"}), "response.done"
        else:
            connect = websockets.connect(base + "/gemini" + LIVE_PATH + f"?key={FAKE_TOKEN}")
            turn, last = json.dumps({"clientContent": {"turnComplete": True}}), "turnComplete"
        done = 0
        async with connect as socket:
            if provider == "openai":
                await socket.recv()  # session.created
            else:
                await socket.send('{"setup": {"model": "models/gemini-live-2.5-flash-preview"}}')
                await asyncio.wait_for(socket.recv(), 5)  # setupComplete
            with pytest.raises(websockets.ConnectionClosed) as closed:
                for _ in range(6):
                    await socket.send(turn)
                    while True:
                        frame = await asyncio.wait_for(socket.recv(), 5)
                        if last in str(frame):
                            done += 1
                            break
    # The handshake and two responses are the three requests; the third response is cut.
    assert done == 2
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    assert "Rate limit" in closed.value.rcvd.reason


# ---- MAX_TOKENS_CAP / MAX_MESSAGES and realtime sessions ---------------------------------


@pytest.mark.parametrize("rule", [{"MAX_TOKENS_CAP": "256"}, {"MAX_MESSAGES": "4"}])
async def test_a_realtime_session_is_refused_while_the_policy_caps_requests(
    start_proxy: ProxyFactory, upstream: FakeRealtime, rule: dict[str, str]
) -> None:
    """Every generation must ask for at most MAX_TOKENS_CAP output tokens and carry at most
    MAX_MESSAGES messages; a realtime session (or a key minted for one) asks for neither:
    its responses default to the model's whole output limit ("inf") and its conversation
    grows with every turn, none of it in a body the policy reads. Sessions and mints ran
    as if no cap were set; like batches, they are refused while one is."""
    with start_proxy(ALLOW_EPHEMERAL_KEYS="true", **rule) as proxy:
        url = ws_base(proxy.url) + "/v1/realtime?model=gpt-realtime"
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with websockets.connect(url, additional_headers=AUTH):
                pass
        assert refused.value.response.status_code == 400
        assert next(iter(rule)) in refused.value.response.body.decode()
        live = ws_base(proxy.url) + "/gemini" + LIVE_PATH + f"?key={FAKE_TOKEN}"
        async with websockets.connect(live) as socket:
            await socket.send('{"setup": {"model": "models/gemini-live-2.5-flash-preview"}}')
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(socket.recv(), 5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
        minted = httpx.post(
            f"{proxy.url}/v1/realtime/client_secrets",
            json={"session": {"type": "realtime", "model": "gpt-realtime"}},
            headers=AUTH,
        )
        assert minted.status_code == 400, minted.text
    assert upstream.sessions == [] and upstream.minted == []


def test_a_streams_continuations_count_against_the_request_limit() -> None:
    """Each continuation GEMINI_STREAM_RECOVERY asks is another upstream call, yet only the
    caller's request was counted: under RATE_LIMIT_REQUESTS a request whose stream never
    finished made 1 + GEMINI_STREAM_RECOVERY_ATTEMPTS calls. Each continuation now counts
    as a request (as each response of a realtime session does), and none is asked past
    the limit."""
    from tests.support.gemini import ask, gemini_proxy, never_finishing

    upstream = never_finishing()
    with (
        serve_in_thread(upstream) as server,
        gemini_proxy(
            server,
            GEMINI_STREAM_RECOVERY="true",
            GEMINI_STREAM_RECOVERY_ATTEMPTS="5",
            RATE_LIMIT_REQUESTS="2",
        ) as proxy,
    ):
        ask(proxy, FAKE_TOKEN)
    # The request and one continuation are the two requests the window allows.
    assert len(upstream.seen) == 2


# ---- what telemetry exports of a realtime session ------------------------------------


@pytest.fixture
def otlp() -> Iterator[Received]:
    with otlp_exporting(OTEL_METRIC_EXPORT_INTERVAL="100") as received:
        yield received


def _points(received: Received, metric: str) -> list[Any]:
    deadline = time.monotonic() + 15
    while not received.latest_points(metric) and time.monotonic() < deadline:
        time.sleep(0.05)
    return received.latest_points(metric)


async def test_a_realtime_sessions_telemetry_holds_no_key_the_provider_echoed(
    otlp: Received,
    start_proxy: ProxyFactory,
    upstream: FakeRealtime,
) -> None:
    """On HTTP, telemetry reads the reply after the scrubber (core/proxy/taps.py). A
    realtime session's frames reached telemetry's reader raw: a provider that echoed its
    key into `session.model` had the key exported as gen_ai.response.model, in the span
    and as a metric attribute, to whatever collector OTEL_EXPORTER_OTLP_ENDPOINT names,
    while the caller's copy of the same frame was scrubbed."""
    with start_proxy() as proxy:
        url = proxy.url.replace("http://", "ws://") + "/v1/realtime?model=gpt-realtime"
        auth = {"Authorization": f"Bearer {FAKE_TOKEN}"}
        async with websockets.connect(url, additional_headers=auth) as socket:
            await socket.recv()  # session.created
            await socket.send(json.dumps({"type": "test.key_in_session"}))
            updated = await asyncio.wait_for(socket.recv(), 5)
            await socket.send(json.dumps({"type": "response.create"}))
            while json.loads(await asyncio.wait_for(socket.recv(), 5))["type"] != "response.done":
                pass
        spans = await asyncio.to_thread(
            otlp.wait_for_spans,
            lambda span: span.attributes.get("gen_ai.operation.name") == "realtime",
        )
        points = await asyncio.to_thread(_points, otlp, "gen_ai.client.token.usage")
    assert FAKE_UPSTREAM_KEY not in str(updated)  # the caller's copy: scrubbed
    assert spans and points
    exported = repr([span.attributes for span in spans]) + repr([p.attributes for p in points])
    assert "gpt-realtime-for-" in exported  # the model the provider named is still read
    assert FAKE_UPSTREAM_KEY not in exported and FAKE_UPSTREAM_KEY[-8:] not in exported


# ---- caller-supplied text printed to the operator's terminal -------------------------

# A model name a caller chose: a terminal escape (set the window title, clear the screen),
# a carriage return and a line that imitates the report's own rows.
HOSTILE_MODEL = "gpt\x1b]0;owned\x07\x1b[2J\r\n01-01 00:00:00  admin  default  gpt-4o  200"


@respx.mock
async def test_the_usage_reports_print_no_control_character_a_caller_sent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`llm-proxy usage --requests` and `llm-proxy usage --by model` print what callers
    named (the model, 200 characters of it) to the operator's terminal: escape sequences
    ran there (a retitled window, a cleared screen, OSC 52 writes the clipboard on some
    terminals) and CR/LF forged report lines."""
    from core.cli import main

    store = f"sqlite:///{tmp_path}/usage.db"
    respx.post(f"{UPSTREAM}/chat/completions").respond(
        200,
        json={"model": "m", "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1}},
    )
    async with client(create_app(load_settings(env(USAGE_STORE=store)))) as proxy:
        reply = await proxy.post(
            "/v1/chat/completions", headers=AUTH, json={"model": HOSTILE_MODEL, "messages": []}
        )
        assert reply.status_code == 200
        await asyncio.sleep(0.3)  # the ledger writes in the background
    printed = ""
    for argv in (["--requests"], ["--by", "model"]):
        assert main(["usage", "--store", store, *argv]) == 0
        printed += capsys.readouterr().out
    assert "owned" in printed  # the row is there, its text shown escaped
    for control in ("\x1b", "\x07", "\r"):
        assert control not in printed
    assert not any(line.startswith("01-01") for line in printed.splitlines())


def test_tokens_list_prints_no_control_character_of_a_label(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A label (and model scopes) set through the dashboard's JSON API, printed by
    `llm-proxy tokens list` and `tokens revoke`: the same escapes, the same forged rows."""
    from core.cli import main

    store = f"sqlite:///{tmp_path}/tokens.db"
    create_token(open_store(store), "bob\x1b[2J\rFORGED", models=("m\x1b]0;x\x07",))
    assert main(["tokens", "--store", store, "list"]) == 0
    assert main(["tokens", "--store", store, "revoke", "bob\x1b[2J\rFORGED"]) == 0
    printed = capsys.readouterr().out
    assert "FORGED" in printed
    for control in ("\x1b", "\x07", "\r"):
        assert control not in printed


# ---- a reply that fails midway on buffered Lambda ------------------------------------


@pytest.mark.parametrize(
    ("path", "shape_field"),
    [("/v1/chat/completions", "code"), ("/anthropic/v1/messages", "type")],
)
def test_buffered_lambda_answers_a_cut_stream_with_a_json_error(
    mock_upstream: RunningServer, path: str, shape_field: str
) -> None:
    """Mangum sends nothing until the app returned, so a stream the upstream cuts has
    reached no one yet. Mangum answered it as `500 text/plain "Internal Server Error"`,
    dropping every header the proxy had set (CORS: a browser could not even read it; the
    request id): the one non-JSON error a caller could get, on that platform alone."""
    from tests.conformance.adapters import AwsLambdaMangum, Request

    env = proxy_env(mock_upstream.url, ANTHROPIC_API_KEY=FAKE_UPSTREAM_KEY)
    env["ANTHROPIC_UPSTREAM"] = mock_upstream.url
    origin = env["ALLOWED_ORIGINS"]
    adapter = AwsLambdaMangum()
    headers = {
        "authorization": f"Bearer {FAKE_TOKEN}",
        "content-type": "application/json",
        "origin": origin,
        "x-mock-cut-after": "2",
    }
    body = json.dumps({"model": "m", "stream": True, "max_tokens": 9, "messages": []})
    with adapter.start(env):
        reply = adapter.send(Request("POST", path, headers, body.encode()))
    assert reply.status == 502, (reply.status, reply.body[:200])
    assert reply.header("content-type") == "application/json"
    error = json.loads(reply.body)["error"]
    assert error[shape_field] == ("upstream_unreachable" if shape_field == "code" else "api_error")
    assert reply.header("access-control-allow-origin") == origin
    assert reply.header("x-proxy-request-id")


# ---- a reply's Content-Encoding over two header lines --------------------------------


@pytest.mark.parametrize(
    "codings",
    [["identity", "gzip"], ["", "gzip"], ["gzip", "gzip"]],
    ids=["identity-then-gzip", "empty-then-gzip", "gzip-twice"],
)
def test_a_reply_coding_split_over_two_header_lines_is_read_whole(codings: list[str]) -> None:
    """The scrubber read a reply's coding from its first Content-Encoding line only. An
    upstream echoing the key under `identity` + `gzip` (one list over two lines, RFC 9110)
    had its gzip body passed on unread, the two lines with it, and the caller's client
    inflated it: the key in plain text. Under `gzip` + `gzip` one layer was inflated and
    the still-compressed rest sent on without a coding: one gunzip away."""
    import gzip

    from tests.support.metered import JSON, metered, models_or
    from tests.support.scripted_upstream import ScriptedUpstream

    def reply(request: dict[str, Any]) -> Any:
        body = json.dumps({"headers": request["headers"]}).encode()
        for coding in codings:
            if coding == "gzip":
                body = gzip.compress(body)
        return 200, [*JSON, *(("content-encoding", c) for c in codings)], [(0, body)]

    with metered(ScriptedUpstream(models_or(reply))) as proxy:
        got = httpx.post(
            f"{proxy.url}/v1/chat/completions",
            json={"model": "m"},
            headers={"Authorization": f"Bearer {FAKE_TOKEN}"},
        )
    assert got.status_code == 200
    seen = [got.content]
    with contextlib.suppress(OSError, EOFError):
        seen.append(gzip.decompress(got.content))
    for body in seen:
        assert FAKE_UPSTREAM_KEY.encode() not in body
        assert FAKE_UPSTREAM_KEY[8:].encode() not in body
    if codings.count("gzip") == 1:  # one coding: read, scrubbed, sent on inflated
        assert b"[redacted]" in got.content
        assert "content-encoding" not in got.headers


# ---- the dashboard's JSON API answers in JSON -----------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("DELETE", "/admin/api/status", 405),
        ("POST", "/admin/api/usage", 405),
        ("GET", "/admin/api/nothing-here", 404),
        ("GET", "/admin/api/tokens/abc/def/ghi", 404),
        ("PUT", "/admin", 405),
    ],
)
async def test_the_dashboard_refuses_an_unknown_route_or_method_in_json(
    method: str, path: str, status: int
) -> None:
    """Every error the proxy makes is JSON, the dashboard's own included (`{"error":
    {"code", "message"}}`, what its scripts parse); a method or path no route serves got
    Starlette's `text/plain` "Method Not Allowed" / "Not Found" instead."""
    admin = env(ADMIN_TOKEN="a" * 40)
    async with client(create_app(load_settings(admin))) as proxy:
        reply = await proxy.request(method, path, headers={"authorization": f"Bearer {'a' * 40}"})
    assert reply.status_code == status
    assert reply.headers["content-type"] == "application/json"
    assert reply.json()["error"]["code"] == ("not_found" if status == 404 else "method_not_allowed")
    if status == 405:
        assert reply.headers["allow"]


def test_check_url_prints_no_control_character_the_server_sent() -> None:
    """`llm-proxy check --url` quotes the checked server's error message in its report:
    the same escapes reached the operator's terminal from whatever answered there."""
    from core.devtools.check_url import check_deployment
    from core.types import Receive, Scope, Send

    message = "bad\x1b]0;owned\x07\x1b[2J\r\nok   stream: forged"

    async def server(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = json.dumps({"error": {"message": message}}).encode()
        await send({"type": "http.response.start", "status": 500, "headers": []})
        await send({"type": "http.response.body", "body": body})

    lines: list[str] = []
    with serve_in_thread(server) as running:
        check_deployment(running.url, token="t", model="m", print_line=lines.append)
    printed = "\n".join(lines)
    assert "owned" in printed
    for control in ("\x1b", "\x07", "\r"):
        assert control not in printed
    assert not any(line.startswith("ok   stream") for line in lines)


# ---- an upstream reply header the server cannot send -----------------------------------


@contextlib.contextmanager
def _raw_upstream(header_line: bytes, status: bytes = b"200 OK") -> Iterator[str]:
    """An upstream that answers every request with one header line (and status) as given,
    bytes the HTTP clients accept but uvicorn refuses to send (a control character in a
    value, a status outside 100-599)."""
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                data = b""
                with contextlib.suppress(OSError):
                    while b"\r\n\r\n" not in data:
                        data += conn.recv(65536)
                    body = b'{"ok":true}'
                    conn.sendall(
                        b"HTTP/1.1 "
                        + status
                        + b"\r\ncontent-type: application/json\r\n"
                        + header_line
                        + b"\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body)
                        + body
                    )

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
@pytest.mark.parametrize("value", [b"a\x1b[2Jb", b"a\x01b", b"a\x7fb"], ids=["esc", "soh", "del"])
def test_an_upstream_header_with_a_control_character_still_gets_its_reply(
    transport: str, value: bytes
) -> None:
    """Both upstream clients accept a control character in a reply header's value; uvicorn
    refuses to send one (RuntimeError in its `send`). The caller lost the reply the
    upstream had answered (and billed): no response at all, its connection dropped, and a
    traceback in the log. The header's value goes out with those bytes replaced."""
    with _raw_upstream(b"x-odd: " + value) as url:
        app = create_app(load_settings(proxy_env(url, UPSTREAM_TRANSPORT=transport)))
        with serve_in_thread(app) as proxy:
            reply = httpx.post(
                f"{proxy.url}/v1/chat/completions",
                json={"model": "m"},
                headers={"authorization": f"Bearer {FAKE_TOKEN}"},
                timeout=10,
            )
    assert reply.status_code == 200
    assert reply.json() == {"ok": True}
    expected = "a?b" if len(value) == 3 else "a?[2Jb"
    assert reply.headers["x-odd"] == expected


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
@pytest.mark.parametrize("status", [b"999 Odd", b"600 Beyond", b"101 Switching Protocols"])
def test_an_upstream_status_no_reply_may_carry_is_a_502(transport: str, status: bytes) -> None:
    """Both clients take any three digits for a status; uvicorn has no status line past
    599 (a KeyError in its `send`), and a 101 is no reply to a POST. The caller's
    connection dropped (a traceback in the log), or it got a 101 with a body: a 502 in
    its protocol's shape instead."""
    with _raw_upstream(b"x-kept: 1", status) as url:
        extra = {"ANTHROPIC_API_KEY": FAKE_UPSTREAM_KEY, "ANTHROPIC_UPSTREAM": url}
        app = create_app(load_settings(proxy_env(url, UPSTREAM_TRANSPORT=transport, **extra)))
        with serve_in_thread(app) as proxy:
            reply = httpx.post(
                f"{proxy.url}/anthropic/v1/messages",
                json={"model": "m", "max_tokens": 1, "messages": []},
                headers={"x-api-key": FAKE_TOKEN},
                timeout=10,
            )
    assert reply.status_code == 502, reply.status_code
    assert reply.json()["error"]["type"] == "api_error"


@pytest.mark.parametrize("status", [b"999 Odd", b"600 Beyond", b"200 OK", b"302 Found"])
async def test_an_upstream_handshake_status_no_refusal_may_carry_is_a_502(status: bytes) -> None:
    """The same on a realtime session: the provider's handshake status was passed on as
    the refusal's. Past 599 the caller got uvicorn's bare 500 ("unexpected realtime
    error" in the log); a 200 or a 302 came as a "refusal" with that status."""
    with _raw_upstream(b"x-kept: 1", status) as url:
        extra = {"OPENAI_API_KEY": FAKE_UPSTREAM_KEY, "OPENAI_UPSTREAM": url}
        app = create_app(load_settings(proxy_env(url, **extra)))
        with serve_in_thread(app) as proxy:
            address = proxy.url.replace("http://", "ws://") + "/v1/realtime?model=gpt-realtime"
            auth = {"Authorization": f"Bearer {FAKE_TOKEN}"}
            with pytest.raises(websockets.InvalidStatus) as refused:
                async with websockets.connect(address, additional_headers=auth):
                    pass
    assert refused.value.response.status_code == 502
    assert json.loads(refused.value.response.body)["error"]["code"] == "upstream_refused_session"


@pytest.mark.parametrize("command", ["tokens", "usage"])
@pytest.mark.parametrize(
    "store",
    ["redis://:s3cret-store-pw@127.0.0.1:1/0", "sqlite:////nonexistent-dir/sub/tokens.db"],
    ids=["unreachable-redis", "unopenable-sqlite"],
)
def test_the_cli_reports_a_store_it_cannot_use_in_one_line(
    command: str, store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`llm-proxy tokens` / `usage` on a store that cannot be opened or reached printed the
    driver's whole traceback (sixty-odd lines; some drivers' texts quote the URL)."""
    from core.cli import main

    argv = [command, "--store", store]
    argv += ["list"] if command == "tokens" else ["--requests"]
    assert main(argv) != 0
    printed = capsys.readouterr()
    out = printed.out + printed.err
    assert "Traceback" not in out and "s3cret-store-pw" not in out
    assert ("TOKEN_STORE" if command == "tokens" else "USAGE_STORE") in out
    assert len(out.strip().splitlines()) == 1


# ---- a caller's token quoted in a prompt, on its way to the collector ------------------


def test_captured_prompt_content_holds_no_proxy_token(
    otlp: Received,
    mock_upstream: RunningServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT on, the prompt goes on the
    span with "the proxy's own keys and callers' tokens replaced" (core/telemetry/
    content.py); the proxy's own per-caller tokens (`llmp_...`, minted by `llm-proxy
    tokens create` and the dashboard) were not: a user pasting one into a chat had it
    exported to the collector, and every reader of the traces could call as that token."""
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    store = f"sqlite:///{tmp_path}/tokens.db"
    token, _ = create_token(open_store(store), "carol")
    app = create_app(load_settings(proxy_env(mock_upstream.url, TOKEN_STORE=store)))
    with serve_in_thread(app) as proxy:
        reply = httpx.post(
            f"{proxy.url}/v1/chat/completions",
            headers={"authorization": f"Bearer {token}"},
            json={
                "model": "gpt-capture-token",
                "messages": [{"role": "user", "content": f"why is {token} refused?"}],
            },
        )
        assert reply.status_code == 200
        [span] = otlp.wait_for_spans(
            lambda s: s.attributes.get("gen_ai.request.model") == "gpt-capture-token"
        )
    content = span.attributes["gen_ai.input.messages"]
    assert "why is [redacted] refused?" in content
    assert token not in content and token[len("llmp_") :][:12] not in content


# ---- a key pasted into the wrong variable, in the operator's log ----------------------


@pytest.mark.parametrize(
    ("variable", "pasted"),
    [
        ("UPSTREAM_BASE_URL", "sk-fake-not-a-real-key-pasted-here"),
        ("GEMINI_UPSTREAM", "AIzaFAKE-not-a-real-key-pasted-here"),
        ("MAX_BODY_BYTES", "sk-ant-fake-not-a-real-key-pasted"),
    ],
)
def test_a_key_pasted_into_the_wrong_variable_is_not_quoted_in_the_problem(
    variable: str, pasted: str
) -> None:
    """Swapping UPSTREAM_BASE_URL and UPSTREAM_API_KEY is an easy mistake; the reply every
    caller gets names only the variable, but the problem itself (what the start log,
    `llm-proxy check` and `serve` print) quoted the key whole: `..., got 'sk-proj-...'`,
    into CloudWatch and the like, where more people read than the key was meant for."""
    extra = {variable: pasted}
    if variable == "GEMINI_UPSTREAM":
        extra["GEMINI_API_KEY"] = "fake-gemini-key-0123456789"
    with pytest.raises(ConfigError) as caught:
        load_settings(env(**extra))
    problems = " ".join(caught.value.problems)
    assert variable in problems
    assert pasted not in problems and pasted[8:] not in problems
    assert pasted[:4] in problems  # enough to recognise which value it was


# ---- the dashboard's credential is no caller's ----------------------------------------
SHARED_AND_ADMIN = "shared-token-also-set-as-admin-0123456789"


@pytest.mark.parametrize(
    "shared", [SHARED_AND_ADMIN, f"another-caller-token-0123456789ab,{SHARED_AND_ADMIN}"]
)
def test_admin_token_that_is_also_a_caller_token_is_refused(shared: str) -> None:
    """PROXY_ACCESS_TOKEN sits in every visitor's browser (the page's source); the same
    value as ADMIN_TOKEN made each visitor the operator: tokens, spend, the kill switch."""
    with pytest.raises(ConfigError) as caught:
        load_settings(env(PROXY_ACCESS_TOKEN=shared, ADMIN_TOKEN=f" {SHARED_AND_ADMIN} "))
    problems = " ".join(caught.value.problems)
    assert "ADMIN_TOKEN" in problems and "PROXY_ACCESS_TOKEN" in problems
    assert SHARED_AND_ADMIN not in problems


# ---- the dashboard's switches on a platform of many instances --------------------------
FUNCTION_PLATFORMS = [
    {"AWS_LAMBDA_FUNCTION_NAME": "llm-proxy"},
    {"VERCEL": "1"},
    {"K_SERVICE": "llm-proxy"},
]


@pytest.mark.parametrize("platform", FUNCTION_PLATFORMS)
@pytest.mark.parametrize("store", [None, "memory://"])
async def test_kill_switch_kept_in_one_instance_is_refused_at_start(
    platform: dict[str, str], store: str | None
) -> None:
    """Without a shared TOKEN_STORE the kill switch (and sign-out, and the count of wrong
    admin tokens) lived in the memory of the one function instance that served the
    dashboard: the operator saw `online: false` while every other instance kept spending."""
    extra = {"ADMIN_TOKEN": "admin-token-for-tests-0123456789abcdef", **platform}
    if store is not None:
        extra["TOKEN_STORE"] = store
    try:
        settings = load_settings(env(**extra))
    except ConfigError as refused:
        problems = " ".join(refused.problems)
        assert "ADMIN_TOKEN" in problems and "TOKEN_STORE" in problems
        return
    # Two warm instances of one function, each its own process and memory.
    first, second = create_app(settings), create_app(settings)
    admin = {"Authorization": "Bearer admin-token-for-tests-0123456789abcdef"}
    with respx.mock:
        respx.get(f"{UPSTREAM}/models").respond(200, json={})
        async with client(first) as one, client(second) as other:
            switched = await one.put("/admin/api/status", json={"online": False}, headers=admin)
            assert switched.json()["online"] is False
            assert (await one.get("/v1/models", headers=AUTH)).status_code == 503
            still = await other.get("/v1/models", headers=AUTH)
    assert still.status_code == 503, "the switch is off, yet another instance still serves"


# ---- the dashboard answers hostile input with its own errors -------------------------
DASHBOARD_ADMIN = "admin-token-for-tests-0123456789abcdef"


def dashboard_client(app: ASGIApp) -> httpx.AsyncClient:
    # raise_app_exceptions=False: what a server would send, a 500, instead of the raise.
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 5000), raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8787")


FORM = {"content-type": "application/x-www-form-urlencoded"}


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/admin/static/a%00.css", b""),
        ("GET", "/admin/static/" + "a" * 300 + ".css", b""),
        ("POST", "/admin/sign-in", b"token=guess&a&b&c&d&e"),
    ],
)
async def test_unauthenticated_dashboard_input_is_no_500(
    method: str, path: str, body: bytes
) -> None:
    """The public part of the dashboard (its files, its sign-in form) raised on a NUL byte,
    an over-long file name or a form of six fields: a 500 for anyone, a traceback in the
    log. Each is a 4xx in the dashboard's own shape."""
    settings = load_settings(env(ADMIN_TOKEN=DASHBOARD_ADMIN, TOKEN_STORE="memory://"))
    async with dashboard_client(create_app(settings)) as dashboard:
        response = await dashboard.request(method, path, content=body, headers=FORM)
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:100])


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/admin/api/tokens", b'{"label":"a","expires_at":1e400}'),
        ("POST", "/admin/api/tokens", b'{"label":"b","expires_at":NaN}'),
        ("POST", "/admin/api/tokens", b'{"label":"d","expires_at":"99999999999999w"}'),
        ("POST", "/admin/api/tokens", b'{"label":"c","budget_usd":1' + b"0" * 400 + b"}"),
        (
            "PUT",
            "/admin/api/schedule",
            b'{"windows":[{"from":"0001-01-01T00:00:00+14:00","to":"0001-01-02T00:00:00Z"}]}',
        ),
        ("PUT", "/admin/api/schedule", b'{"windows":[{"nightly":"01:00-02:00","note":"\\ud800"}]}'),
    ],
)
async def test_dashboard_api_input_is_refused_not_a_500(
    method: str, path: str, body: bytes
) -> None:
    """A time past the calendar's ends, a NaN expiry (a token that never expired), a lone
    surrogate in a note: each raised past the API's own errors."""
    settings = load_settings(env(ADMIN_TOKEN=DASHBOARD_ADMIN, TOKEN_STORE="memory://"))
    headers = {"authorization": f"Bearer {DASHBOARD_ADMIN}", "content-type": "application/json"}
    async with dashboard_client(create_app(settings)) as dashboard:
        response = await dashboard.request(method, path, content=body, headers=headers)
        listed = await dashboard.get("/admin/api/tokens", headers=headers)
    assert response.status_code == 400, (response.status_code, response.text[:100])
    assert "error" in response.json()
    assert listed.json()["tokens"] == []  # nothing half-written


# ---- every field that multiplies the answers, in every form the upstream reads ----------


@respx.mock
@pytest.mark.parametrize(
    ("path", "body"),
    [
        # best_of writes (and bills) that many answers server-side; n only picks the best.
        ("/v1/completions", {"model": "m", "prompt": "hi", "max_tokens": 100, "best_of": 4}),
        # pydantic in lax mode (vLLM and most Python vendors) reads "4" and 4.0 as 4.
        ("/v1/chat/completions", {"model": "m", "messages": [], "max_tokens": 100, "n": "4"}),
        ("/v1/chat/completions", {"model": "m", "messages": [], "max_tokens": 100, "n": 4.0}),
        # Protobuf JSON (Gemini) reads an int32 written as a string.
        (
            "/gemini/v1beta/models/m:generateContent",
            {"contents": [], "generationConfig": {"maxOutputTokens": 100, "candidateCount": "4"}},
        ),
    ],
)
async def test_output_cap_counts_every_answer_the_upstream_writes(
    path: str, body: dict[str, object]
) -> None:
    """MAX_TOKENS_CAP=100 allowed 4 answers of 100 tokens: best_of was not counted, and an
    n or candidateCount written as "4" or 4.0 counted as one answer."""
    route = respx.post(url__startswith=UPSTREAM).respond(200, json={})
    gemini = respx.post(url__startswith=GEMINI).respond(200, json={})
    extra = {
        "MAX_TOKENS_CAP": "100",
        "GEMINI_API_KEY": "fake-gemini-key",
        "GEMINI_UPSTREAM": GEMINI,
    }
    async with client(create_app(load_settings(env(**extra)))) as proxy:
        response = await proxy.post(path, json=body, headers=AUTH)
    assert response.status_code == 400, response.text
    assert route.call_count == 0 and gemini.call_count == 0


@respx.mock
@pytest.mark.parametrize("count", ['"x"', "2.5", "[4]", '"2.5e0"'])
async def test_an_answer_count_the_proxy_cannot_read_is_refused_under_a_cap(count: str) -> None:
    """A count that is no whole number to the proxy was taken as one answer; an upstream
    may still read it as many, so while a cap depends on it, it is refused."""
    route = respx.post(url__startswith=UPSTREAM).respond(200, json={})
    body = '{"model":"m","messages":[],"max_tokens":100,"n":' + count + "}"
    async with client(create_app(load_settings(env(MAX_TOKENS_CAP="1000")))) as proxy:
        response = await proxy.post("/v1/chat/completions", content=body, headers=AUTH)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["message"]
    assert route.call_count == 0


# ---- tools the provider bills apart from the tokens it reports -------------------------
ANTHROPIC_UP = "https://anthropic.budget.test"
BUDGETED = {
    "BUDGET_PER_CALLER_USD": "1",
    "MODEL_PRICES": json.dumps({"m*": {"input": 1, "output": 1}}),
    "GEMINI_API_KEY": "fake-gemini-key",
    "GEMINI_UPSTREAM": GEMINI,
    "ANTHROPIC_API_KEY": "fake-anthropic-key-budget",
    "ANTHROPIC_UPSTREAM": ANTHROPIC_UP,
}
FUNCTION = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}
RESPONSES = {"model": "m", "input": "hi", "max_output_tokens": 10}
MESSAGES = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}
GENERATE = {"contents": [{"parts": [{"text": "hi"}]}]}
GEMINI_PATH = "/gemini/v1beta/models/m:generateContent"


def _as(path: str) -> dict[str, str]:
    if path.startswith("/anthropic/"):
        return {"x-api-key": FAKE_TOKEN}
    if path.startswith("/gemini/"):
        return {"x-goog-api-key": FAKE_TOKEN}
    return {"Authorization": f"Bearer {FAKE_TOKEN}"}


@respx.mock
@pytest.mark.parametrize(
    ("path", "body"),
    [
        # Responses' hosted tools: a web search bills per call, a code container per session.
        ("/v1/responses", {**RESPONSES, "tools": [{"type": "web_search"}]}),
        ("/v1/responses", {**RESPONSES, "tools": [FUNCTION, {"type": "code_interpreter"}]}),
        # A stored prompt carries the tools set for it on the platform, unseen here.
        ("/v1/responses", {"model": "m", "prompt": {"id": "pmpt_1"}, "max_output_tokens": 10}),
        # Chat's search models bill each search; so do OpenRouter's web plugin (per
        # result) and xAI's Live Search (per source).
        ("/v1/chat/completions", {**CHAT, "web_search_options": {}}),
        ("/v1/chat/completions", {**CHAT, "plugins": [{"id": "web"}]}),
        ("/v1/chat/completions", {**CHAT, "search_parameters": {"mode": "on"}}),
        # Gemini's OpenAI-compatible endpoint names a cache in its own options.
        (
            "/v1/chat/completions",
            {**CHAT, "extra_body": {"google": {"cached_content": "cachedContents/c1"}}},
        ),
        ("/anthropic/v1/messages", {**MESSAGES, "tools": [{"type": "web_search_20250305"}]}),
        ("/anthropic/v1/messages", {**MESSAGES, "tools": [{"type": "code_execution_20250825"}]}),
        # Google Search grounding bills per grounded prompt; a cache may hold it.
        (GEMINI_PATH, {**GENERATE, "tools": [{"googleSearch": {}}]}),
        (GEMINI_PATH, {**GENERATE, "tools": [{"google_search_retrieval": {}}]}),
        (GEMINI_PATH, {**GENERATE, "cachedContent": "cachedContents/c1"}),
    ],
)
async def test_a_dollar_budget_refuses_tools_billed_apart_from_tokens(
    path: str, body: dict[str, object]
) -> None:
    """Under a $1 budget each call was charged its few tokens while the provider billed a
    web search ($10-35 per 1,000), a code container or a grounded prompt on top: a caller
    spent the key owner's money past the budget, one cheap-looking request at a time."""
    routes = [
        respx.post(url__startswith=base).respond(200, json={})
        for base in (UPSTREAM, GEMINI, ANTHROPIC_UP)
    ]
    async with client(create_app(load_settings(env(**BUDGETED)))) as proxy:
        response = await proxy.post(path, json=body, headers=_as(path))
    assert response.status_code == 403, response.text
    assert "error" in response.json()
    assert sum(route.call_count for route in routes) == 0


@respx.mock
async def test_a_dollar_budget_lets_tools_billed_as_tokens_through() -> None:
    """Function tools (the caller runs them), and Anthropic's client tools, cost tokens only."""
    usage = {"usage": {"input_tokens": 3, "output_tokens": 2}}
    respx.post(url__startswith=UPSTREAM).respond(200, json=usage)
    respx.post(url__startswith=GEMINI).respond(200, json={"usageMetadata": {"totalTokenCount": 5}})
    respx.post(url__startswith=ANTHROPIC_UP).respond(200, json=usage)
    gemini_functions = {"functionDeclarations": [{"name": "f"}]}
    cases = [
        ("/v1/chat/completions", {**CHAT, "tools": [FUNCTION]}),
        ("/v1/responses", {**RESPONSES, "tools": [{"type": "function", "name": "f"}]}),
        ("/anthropic/v1/messages", {**MESSAGES, "tools": [{"name": "f", "input_schema": {}}]}),
        ("/anthropic/v1/messages", {**MESSAGES, "tools": [{"type": "bash_20250124"}]}),
        (GEMINI_PATH, {**GENERATE, "tools": [gemini_functions, {"codeExecution": {}}]}),
    ]
    async with client(create_app(load_settings(env(**BUDGETED)))) as proxy:
        for path, body in cases:
            response = await proxy.post(path, json=body, headers=_as(path))
            assert response.status_code == 200, (path, response.text)


# ---- options that raise the rate every token is billed at ------------------------------


@respx.mock
@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {**CHAT, "service_tier": "priority"}),
        ("/v1/responses", {**RESPONSES, "service_tier": "priority"}),
        ("/v1/responses", {**RESPONSES, "service_tier": "premium-tier-added-later"}),
    ],
)
async def test_a_dollar_budget_refuses_a_dearer_service_tier(
    path: str, body: dict[str, object]
) -> None:
    """`service_tier: "priority"` bills every token at about twice the standard rate the
    budget counted: a caller spent two dollars of the key owner's for each one counted."""
    route = respx.post(url__startswith=UPSTREAM).respond(200, json={})
    async with client(create_app(load_settings(env(**BUDGETED)))) as proxy:
        response = await proxy.post(path, json=body, headers=AUTH)
        cheaper = await proxy.post(path, json={**body, "service_tier": "flex"}, headers=AUTH)
        default = await proxy.post(path, json={**body, "service_tier": "auto"}, headers=AUTH)
    assert response.status_code == 403, response.text
    assert response.json()["error"]["code"] == "rate_not_metered"
    assert (cheaper.status_code, default.status_code) == (200, 200)
    assert route.call_count == 2


@respx.mock
@pytest.mark.parametrize(
    "dearer",
    [
        {"provider": {"order": ["the-dearest-host"], "allow_fallbacks": False}},
        {"provider": {"only": ["the-dearest-host"]}},
        {"provider": {"ignore": ["the-cheapest-host"]}},
        {"provider": {"sort": "throughput"}},
        {"provider": {"sort": {"by": "latency"}}},
        {"provider": {"quantizations": ["fp16"]}},
        {"provider": "the-dearest-host"},
        {"model": "m:nitro"},
        {"model": "m:NITRO"},
    ],
)
async def test_a_dollar_budget_refuses_a_choice_of_dearer_providers(
    dearer: dict[str, object],
) -> None:
    """OpenRouter serves one model from many hosts at their own rates: `provider`
    preferences let a caller pin the dearest for a model the owner priced at one rate, and
    the `:nitro` variant admits priority-tier endpoints billed at priority rates (as
    `service_tier: "priority"` does)."""
    route = respx.post(url__startswith=UPSTREAM).respond(200, json={})
    cheapest = [
        {"provider": {"sort": "price", "max_price": {"prompt": 1, "completion": 1}}},
        {"provider": {"sort": {"by": "price"}, "allow_fallbacks": False}},
        {"provider": {}},
    ]
    async with client(create_app(load_settings(env(**BUDGETED)))) as proxy:
        refused = [
            await proxy.post(path, json={**body, **dearer}, headers=AUTH)
            for path, body in (("/v1/chat/completions", CHAT), ("/v1/responses", RESPONSES))
        ]
        allowed = [
            await proxy.post("/v1/chat/completions", json={**CHAT, **ok}, headers=AUTH)
            for ok in cheapest
        ]
    for response in refused:
        assert response.status_code == 403, response.text
        assert response.json()["error"]["code"] == "rate_not_metered"
    assert [response.status_code for response in allowed] == [200, 200, 200]
    assert route.call_count == 3


@respx.mock
async def test_a_dollar_budget_refuses_anthropic_fast_mode() -> None:
    """Anthropic's fast mode (`speed: "fast"`, with its beta header) bills every token of
    Opus at up to six times the standard rate the budget counted."""
    route = respx.post(url__startswith=ANTHROPIC_UP).respond(200, json={})
    path = "/anthropic/v1/messages"
    headers = {**_as(path), "anthropic-beta": "fast-mode-2026-02-01"}
    async with client(create_app(load_settings(env(**BUDGETED)))) as proxy:
        fast = await proxy.post(path, json={**MESSAGES, "speed": "fast"}, headers=headers)
        standard = await proxy.post(path, json={**MESSAGES, "speed": "standard"}, headers=headers)
        # Named twice, the proxy and the provider might each read another one.
        twice = b'{"model":"m","max_tokens":10,"messages":[],"speed":"fast","speed":"standard"}'
        doubled = await proxy.post(path, content=twice, headers=headers)
    assert fast.status_code == 403, fast.text
    assert "speed" in fast.text
    assert standard.status_code == 200, standard.text
    assert doubled.status_code == 400, doubled.text
    assert "speed" in doubled.text
    assert route.call_count == 1


# ---- a multipart form read otherwise by the provider's form parser --------------------


def _form_model_as_an_upstream_reads_it(body: bytes, boundary: bytes) -> str | None:
    """What python-multipart (FastAPI, Starlette: vLLM, LiteLLM and most OpenAI-compatible
    servers) reads as `model`: parts open at CRLF + delimiter, each Content-Disposition's
    parameters are read as a header parser reads them (quoted strings kept whole), and a
    parameter named twice keeps its last value."""
    from email.message import Message

    model = None
    parts: list[bytes] = []
    for piece in (b"\r\n" + body).split(b"\r\n--" + boundary)[1:]:
        if piece.startswith((b"\r\n", b"--")) or not parts:
            parts.append(piece)
        else:  # `--Bx`: no delimiter, the previous part's content goes on
            parts[-1] += b"\r\n--" + boundary + piece
    for part in parts:
        head, _, content = part.partition(b"\r\n\r\n")
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-disposition":
                header = Message()
                header["content-disposition"] = value.decode("latin-1")
                params = dict(header.get_params(header="content-disposition") or [])
                if params.get("name") == "model":
                    model = content.decode()
    return model


HIDDEN_MODEL_FORMS = {
    # A `;` inside a quoted parameter is no parameter boundary to a header parser.
    "quoted": (
        b'--B\r\nContent-Disposition: form-data; x="; name=y; "; name="model"\r\n\r\n'
        b"gpt-4o-transcribe\r\n"
        b'--B\r\nContent-Disposition: form-data; x="; name=model; "; name="y"\r\n\r\n'
        b"cheap-whisper\r\n"
        b'--B\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
        b"RIFF\r\n--B--\r\n"
    ),
    # `name` twice in one part: python-multipart keeps the last, the proxy read the first.
    "named-twice": (
        b'--B\r\nContent-Disposition: form-data; name="y"; name="model"\r\n\r\n'
        b"gpt-4o-transcribe\r\n"
        b'--B\r\nContent-Disposition: form-data; name="model"; name="y"\r\n\r\n'
        b"cheap-whisper\r\n"
        b'--B\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
        b"RIFF\r\n--B--\r\n"
    ),
    # A delimiter not at the start of a line is file content to the provider, a new
    # part to a reader that splits on every `--B`.
    "mid-line-delimiter": (
        b'--B\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
        b'RIFF--B\r\nContent-Disposition: form-data; name="model"\r\n\r\ncheap-whisper\r\n'
        b"--B--\r\n"
    ),
    # `--Bx` at a line start is no delimiter (one is followed by CRLF or `--`): content
    # to the provider, which then runs its default model.
    "delimiter-prefix": (
        b'--B\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
        b'RIFF\r\n--Bx\r\nContent-Disposition: form-data; name="model"\r\n\r\ncheap-whisper\r\n'
        b"--B--\r\n"
    ),
}


@respx.mock
@pytest.mark.parametrize("form", HIDDEN_MODEL_FORMS.values(), ids=HIDDEN_MODEL_FORMS.keys())
async def test_a_form_cannot_show_the_policy_one_model_and_the_provider_another(
    form: bytes,
) -> None:
    """ALLOWED_MODELS reads `model` from a transcription's form; the provider's own form
    parser must not find another model (or none, and run its default) in the same bytes."""
    route = respx.post(f"{UPSTREAM}/audio/transcriptions").respond(200, json={"text": ""})
    headers = {
        "Authorization": f"Bearer {FAKE_TOKEN}",
        "content-type": "multipart/form-data; boundary=B",
    }
    async with client(create_app(load_settings(env(ALLOWED_MODELS="cheap-*")))) as proxy:
        response = await proxy.post("/v1/audio/transcriptions", content=form, headers=headers)
    if route.call_count:
        sent = route.calls.last.request.content
        ran = _form_model_as_an_upstream_reads_it(sent, b"B")
        pytest.fail(f"the provider was sent a form that runs {ran!r}: {response.status_code}")
    # Refused as unreadable, or read as the provider reads it (and its model refused).
    assert response.status_code in (400, 403), response.text
    assert "error" in response.json()


# ---- a field name a case-insensitive JSON reader takes for a policed one ----------------
# Go's encoding/json (Ollama, and the Go gateways many deployments put in front of vLLM or
# a vendor) matches a body's names to its fields ignoring case, with Unicode folding: `N`
# is `n`, and U+017F LATIN SMALL LETTER LONG S folds to `s` (`max_token\u017f` is
# `max_tokens`), U+212A KELVIN SIGN to `k`; of two it keeps the last.

GO_SPELLED_BODIES = {
    # 64 answers of 10 tokens: the proxy counted one.
    "N": b'{"model":"m","messages":[],"max_tokens":10,"N":64}',
    "max_tokens-long-s": '{"model":"m","messages":[],"max_tokens":10,"max_token\u017f":100000}'.encode(),
    "max_tokens-kelvin": '{"model":"m","messages":[],"max_tokens":10,"max_to\u212aens":9999}'.encode(),
    "MAX_TOKENS": b'{"model":"m","messages":[],"max_tokens":10,"MAX_TOKENS":100000}',
}


@respx.mock
@pytest.mark.parametrize("body", GO_SPELLED_BODIES.values(), ids=GO_SPELLED_BODIES.keys())
async def test_output_cap_holds_against_a_case_insensitive_upstream(body: bytes) -> None:
    route = respx.post(f"{UPSTREAM}/chat/completions").respond(200, json={})
    async with client(create_app(load_settings(env(MAX_TOKENS_CAP="100")))) as proxy:
        response = await proxy.post("/v1/chat/completions", content=body, headers=AUTH)
    assert response.status_code == 400, response.text
    assert route.call_count == 0


@respx.mock
async def test_model_scope_holds_against_a_case_insensitive_upstream(
    scoped: tuple[httpx.AsyncClient, str],
) -> None:
    """`model\u017f` is `models` to Go, `\u017ftream` is `stream`: the proxy checked neither."""
    proxy, token = scoped
    route = respx.post(f"{UPSTREAM}/chat/completions").respond(200, json={})
    headers = {"Authorization": f"Bearer {token}", "content-type": "application/json"}
    for body in (
        '{"model":"cheap-1","messages":[],"models":["cheap-1"],"model\u017f":["expensive"]}',
        '{"model":"cheap-1","messages":[],"Stream":true,"\u017ftream":true}',
    ):
        response = await proxy.post("/v1/chat/completions", content=body.encode(), headers=headers)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "repeated_field"
    assert route.call_count == 0


# ---- the model segment of a path, spelled as the upstream still reads it -------------
AZURE = "https://azure.upstream.test"


@respx.mock
@pytest.mark.parametrize(
    "path",
    [
        # ASP.NET routes (Azure OpenAI's front door) match paths ignoring case.
        "/azure/openai/Deployments/big-gpt/chat/completions",
        # Every server decodes `%64` to `d` before routing.
        "/azure/openai/%64eployments/big-gpt/chat/completions",
        # Servlet-style routers drop a segment's `;` parameters.
        "/azure/openai/deployments;v=1/big-gpt/chat/completions",
    ],
)
async def test_model_list_holds_for_a_path_model_spelled_otherwise(path: str) -> None:
    """The deployment in the path is the model Azure runs; the body's `model` is ignored.
    The proxy must read the path as the upstream does, not fall back to the body."""
    route = respx.route(host="azure.upstream.test").respond(200, json={})
    extra = {
        "AZURE_OPENAI_API_KEY": "fake-azure-key",
        "AZURE_OPENAI_UPSTREAM": AZURE,
        "ALLOWED_MODELS": "small-*",
    }
    headers = {"api-key": FAKE_TOKEN, "content-type": "application/json"}
    body = b'{"model":"small-gpt","messages":[]}'
    async with client(create_app(load_settings(env(**extra)))) as proxy:
        allowed = await proxy.post(
            "/azure/openai/deployments/small-gpt/chat/completions", content=body, headers=headers
        )
        response = await proxy.post(path, content=body, headers=headers)
    assert allowed.status_code == 200, allowed.text
    assert response.status_code in (400, 403), response.text
    assert route.call_count == 1


@respx.mock
async def test_model_scope_holds_for_a_gemini_method_spelled_with_an_escaped_colon(
    tmp_path: Path,
) -> None:
    """`tunedModels/x%3AgenerateContent` is `tunedModels/x:generateContent` once decoded (the
    route read it so): the tuned model runs, whatever model the body names."""
    extra, headers, body = _scoped_to_flash(tmp_path)
    route = respx.post(url__startswith=GEMINI).respond(200, json={})
    async with client(create_app(load_settings(env(**extra)))) as proxy:
        tuned = await proxy.post(
            "/gemini/v1beta/tunedModels/my-tuned%3AgenerateContent", content=body, headers=headers
        )
    assert tuned.status_code == 403, tuned.text
    assert route.call_count == 0


# ---- a count given as text or a float, which the upstream reads as a number ----------


@respx.mock
@pytest.mark.parametrize("count", ['"8"', "8.0", '" 8 "', '"8e0"'])
async def test_output_cap_counts_answers_given_as_text(count: str) -> None:
    """protobuf JSON (Gemini) reads an int32 from a string, and pydantic's lax mode (vLLM,
    most Python servers) from a string or an integral float: 8 answers of 100 tokens
    each, where the cap allows 100 in all."""
    extra = {"GEMINI_API_KEY": "fake-gemini-key", "GEMINI_UPSTREAM": GEMINI}
    gemini = respx.post(url__startswith=GEMINI).respond(200, json={})
    openai = respx.post(f"{UPSTREAM}/chat/completions").respond(200, json={})
    config = f'{{"maxOutputTokens":100,"candidateCount":{count}}}'
    headers = {"x-goog-api-key": FAKE_TOKEN, "content-type": "application/json"}
    async with client(create_app(load_settings(env(MAX_TOKENS_CAP="100", **extra)))) as proxy:
        native = await proxy.post(
            "/gemini/v1beta/models/gemini-2.0-flash:generateContent",
            content=f'{{"contents":[],"generationConfig":{config}}}'.encode(),
            headers=headers,
        )
        compatible = await proxy.post(
            "/v1/chat/completions",
            content=f'{{"model":"m","messages":[],"max_tokens":100,"n":{count}}}'.encode(),
            headers=AUTH,
        )
    assert native.status_code == 400, native.text
    assert compatible.status_code == 400, compatible.text
    assert gemini.call_count == openai.call_count == 0


# ---- candidates generated and billed beyond the answers returned ---------------------


@respx.mock
async def test_output_cap_counts_best_of_candidates() -> None:
    """Legacy completions' `best_of` generates (and bills) that many completions server-side
    and returns the best `n`: 20 of 100 tokens where the cap allows 100 in all."""
    route = respx.post(f"{UPSTREAM}/completions").respond(200, json={})
    body = b'{"model":"m","prompt":"hi","max_tokens":100,"best_of":20}'
    async with client(create_app(load_settings(env(MAX_TOKENS_CAP="100")))) as proxy:
        response = await proxy.post("/v1/completions", content=body, headers=AUTH)
        alone = await proxy.post(
            "/v1/completions", content=b'{"model":"m","prompt":"hi","max_tokens":100}', headers=AUTH
        )
    assert response.status_code == 400, response.text
    assert alone.status_code == 200
    assert route.call_count == 1


# ---- a model named in a form on a route the policy did not read forms on --------------


@respx.mock
async def test_model_list_reads_a_video_forms_model() -> None:
    """OpenAI's `POST /v1/videos` (Sora) takes a multipart form naming its model, like a
    transcription: read as JSON, the form named no model and passed ALLOWED_MODELS."""
    route = respx.post(f"{UPSTREAM}/videos").respond(200, json={})
    body = (
        b'--B\r\nContent-Disposition: form-data; name="model"\r\n\r\nsora-2-pro\r\n'
        b'--B\r\nContent-Disposition: form-data; name="prompt"\r\n\r\na cat\r\n--B--\r\n'
    )
    headers = {
        "Authorization": f"Bearer {FAKE_TOKEN}",
        "content-type": "multipart/form-data; boundary=B",
    }
    async with client(create_app(load_settings(env(ALLOWED_MODELS="gpt-4o-mini")))) as proxy:
        response = await proxy.post("/v1/videos", content=body, headers=headers)
        unnamed = await proxy.post(
            "/v1/videos",
            content=b'--B\r\nContent-Disposition: form-data; name="prompt"\r\n\r\na cat\r\n--B--\r\n',
            headers=headers,
        )
    assert response.status_code == 403, response.text
    assert unnamed.status_code == 403, unnamed.text  # Sora's default model would run
    assert route.call_count == 0


# ---- Google's system parameters: the platform reads the request otherwise --------------
# Every Google API reads `$httpMethod` (or X-HTTP-Method-Override) as the request's method,
# `$ct` as its Content-Type, and `fields` / `$fields` / X-Goog-FieldMask, `alt` and
# `callback` as the shape of its reply (cloud.google.com/apis/docs/system-parameters).

GEMINI_EXTRA = {"GEMINI_API_KEY": "fake-gemini-key", "GEMINI_UPSTREAM": GEMINI}
GEMINI_HEADERS = {"x-goog-api-key": FAKE_TOKEN, "content-type": "application/json"}
GEMINI_BODY = b'{"contents":[{"parts":[{"text":"hi"}]}]}'


@respx.mock
@pytest.mark.parametrize(
    ("query", "header"),
    [
        ("?$httpMethod=POST", {}),
        ("?%24httpMethod=POST", {}),
        ("", {"X-HTTP-Method-Override": "POST"}),
    ],
)
async def test_a_get_cannot_run_as_a_generation_upstream(
    query: str, header: dict[str, str]
) -> None:
    """A GET is a free read to the proxy (no model list, no budget): told to run it as
    POST, Google would generate with a model the list refuses, uncounted."""
    route = respx.route(url__startswith=GEMINI).respond(200, json={})
    settings = load_settings(env(ALLOWED_MODELS="gemini-2.0-flash", **GEMINI_EXTRA))
    async with client(create_app(settings)) as proxy:
        response = await proxy.request(
            "GET",
            f"/gemini/v1beta/models/gemini-2.5-pro:generateContent{query}",
            content=GEMINI_BODY,
            headers={**GEMINI_HEADERS, **header},
        )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert route.call_count == 0


@respx.mock
@pytest.mark.parametrize(
    ("query", "header"),
    [
        ("?fields=candidates", {}),
        ("?%24fields=candidates", {}),
        ("?alt=proto", {}),
        ("?callback=f", {}),
        ("?$ct=application/x-protobuf", {}),
        ("", {"X-Goog-FieldMask": "candidates"}),
    ],
)
async def test_a_budgeted_generation_cannot_hide_its_usage(
    query: str, header: dict[str, str]
) -> None:
    """A field mask without usageMetadata (or a protobuf or JSONP reply) leaves the meter
    nothing to read: the call is charged its reservation, an estimate from the body, while
    Google bills what ran (a cachedContent of a million tokens names none of them)."""
    route = respx.route(url__startswith=GEMINI).respond(200, json={})
    prices = json.dumps({"gemini-*": {"input": 1, "output": 1}})
    extra = {**GEMINI_EXTRA, "BUDGET_PER_CALLER_USD": "5", "MODEL_PRICES": prices}
    async with client(create_app(load_settings(env(**extra)))) as proxy:
        response = await proxy.post(
            f"/gemini/v1beta/models/gemini-2.0-flash:generateContent{query}",
            content=GEMINI_BODY,
            headers={**GEMINI_HEADERS, **header},
        )
        streamed = await proxy.post(
            "/gemini/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
            content=GEMINI_BODY,
            headers=GEMINI_HEADERS,
        )
    # 400 for `$ct` (refused on every route), 403 route_not_metered for the rest.
    assert response.status_code in (400, 403), response.text
    assert streamed.status_code == 200, streamed.text  # the SDK's own `alt=sse` passes
    assert route.call_count == 1


@respx.mock
async def test_googles_openai_surface_cannot_override_the_method_either() -> None:
    """Gemini's OpenAI-compatible endpoint is served by the same platform: a GET there is a
    free read to the proxy that `$httpMethod=POST` would turn into a chat completion."""
    route = respx.route(url__startswith=GEMINI).respond(200, json={})
    settings = load_settings(env(ALLOWED_MODELS="gemini-2.0-flash", **GEMINI_EXTRA))
    async with client(create_app(settings)) as proxy:
        response = await proxy.request(
            "GET",
            "/gemini/v1beta/openai/chat/completions?$httpMethod=POST",
            content=b'{"model":"gemini-2.5-pro","messages":[]}',
            headers=AUTH,
        )
    assert response.status_code == 400, response.text
    assert route.call_count == 0


@respx.mock
@pytest.mark.parametrize("param", ["$key", "%24key", "%24KEY"])
async def test_googles_dollar_key_is_a_key_slot_too(param: str) -> None:
    """`$key` is Google's system-parameter spelling of `key`: a caller's token sent there is
    read as the credential, and goes no further than `key=` does."""
    route = respx.get(url__startswith=f"{UPSTREAM}/models").respond(200, json={})
    async with client(create_app(load_settings(env()))) as proxy:
        response = await proxy.get(f"/v1/models?alt=json&{param}={FAKE_TOKEN}")
    assert response.status_code == 200, response.text
    sent = route.calls.last.request.url
    assert FAKE_TOKEN not in str(sent)
    assert sent.query == b"alt=json"


# ---- routes that generate text, read as routes that do not ---------------------------


@respx.mock
@pytest.mark.parametrize(
    ("path", "body"),
    [
        # OpenAI's Assistants: a run generates with the assistant's model and its own cap.
        ("/v1/threads/runs", b'{"assistant_id":"a","max_completion_tokens":100000}'),
        ("/v1/threads/thread_1/runs", b'{"assistant_id":"a"}'),
        ("/v1/threads/thread_1/runs/run_1/submit_tool_outputs", b'{"tool_outputs":[]}'),
        # Ollama's native API (under OLLAMA_UPSTREAM): num_predict is its cap.
        ("/v1/api/chat", b'{"model":"m","messages":[],"options":{"num_predict":100000}}'),
        ("/v1/api/generate", b'{"model":"m","prompt":"hi","options":{"num_predict":-1}}'),
    ],
)
async def test_output_cap_holds_on_routes_that_generate_unread(path: str, body: bytes) -> None:
    """MAX_TOKENS_CAP refuses a generating route it cannot read (a batch); these generate
    too, yet were read as routes that generate nothing, and the cap did not apply."""
    route = respx.route(host="api.upstream.test").respond(200, json={})
    async with client(create_app(load_settings(env(MAX_TOKENS_CAP="100")))) as proxy:
        response = await proxy.post(path, content=body, headers=AUTH)
    assert response.status_code == 400, response.text
    assert route.call_count == 0


@respx.mock
async def test_output_cap_holds_on_anthropics_legacy_completions() -> None:
    route = respx.route(host="anthropic.upstream.test").respond(200, json={})
    extra = {"ANTHROPIC_API_KEY": "fake-anthropic-key", "ANTHROPIC_UPSTREAM": ANTHROPIC}
    body = b'{"model":"claude-2.1","prompt":"\\n\\nHuman: hi\\n\\nAssistant:","max_tokens_to_sample":100000}'
    async with client(create_app(load_settings(env(MAX_TOKENS_CAP="100", **extra)))) as proxy:
        response = await proxy.post(
            "/anthropic/v1/complete",
            content=body,
            headers={"x-api-key": FAKE_TOKEN, "content-type": "application/json"},
        )
    assert response.status_code == 400, response.text
    assert route.call_count == 0


@respx.mock
async def test_output_cap_holds_on_geminis_grounded_answers() -> None:
    """`:generateAnswer` (the AQA model) writes an answer, capped by no field the policy reads."""
    route = respx.route(url__startswith=GEMINI).respond(200, json={})
    async with client(
        create_app(load_settings(env(MAX_TOKENS_CAP="100", **GEMINI_EXTRA)))
    ) as proxy:
        response = await proxy.post(
            "/gemini/v1beta/models/aqa:generateAnswer",
            content=b'{"contents":[],"answerStyle":"VERBOSE"}',
            headers=GEMINI_HEADERS,
        )
    assert response.status_code == 400, response.text
    assert route.call_count == 0


# ---- the server's own refusals once a route is known ----------------------------------
# A body too slow (BODY_TIMEOUT) or not valid HTTP (a bad chunk size) comes after the head,
# so the route is known; the 408 and the 400 were still in OpenAI's shape on /anthropic/
# and /gemini/, where the caller's SDK reads another one.


def raw_reply(port: int, data: bytes) -> tuple[bytes, dict[str, Any]]:
    """Send `data` on a fresh connection; the status line and the JSON body of the reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0], json.loads(body)


@pytest.mark.parametrize("parser", ["httptools", "h11"])
def test_server_refusals_after_the_head_take_the_routes_shape(parser: str) -> None:
    port = free_port()
    extra = {"ANTHROPIC_API_KEY": "fake-anthropic-key", "GEMINI_API_KEY": "fake-gemini-key"}
    settings = proxy_env(
        "http://127.0.0.1:9", HOST="127.0.0.1", PORT=str(port), BODY_TIMEOUT="1", **extra
    )
    slow = b"Content-Length: 100\r\n\r\n{"
    bad_chunk = b"Transfer-Encoding: chunked\r\n\r\nzz\r\n"
    with run_process(http_entry(parser), settings, f"http://127.0.0.1:{port}/health"):
        for path, shape in [
            ("/anthropic/v1/messages", "anthropic"),
            ("/gemini/v1beta/models/m:generateContent", "gemini"),
            ("/v1/chat/completions", "openai"),
        ]:
            head = (
                f"POST {path} HTTP/1.1\r\nHost: proxy.test\r\nx-api-key: {FAKE_TOKEN}\r\n"
                "content-type: application/json\r\n"
            ).encode()
            for rest, status in [(slow, b" 408 "), (bad_chunk, b" 400 ")]:
                line, body = raw_reply(port, head + rest)
                assert status in line, (path, line, body)
                if shape == "anthropic":
                    assert body["type"] == "error" and body["error"]["message"], body
                elif shape == "gemini":
                    assert body["error"]["code"] == int(status) and body["error"]["status"], body
                else:
                    assert body["error"]["type"] == "invalid_request_error", body


# ---- a fragment in the request target -------------------------------------------------


def _raw_request(port: int, target: str, body: bytes = b"") -> bytes:
    """One request with `target` exactly as written (no client library tidies it)."""
    head = (
        f"{'POST' if body else 'GET'} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {FAKE_TOKEN}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(head.encode() + body)
        reply = b""
        while chunk := conn.recv(65536):
            reply += chunk
    return reply


def test_a_fragment_in_the_request_target_is_refused_not_cut_upstream(
    mock_upstream: RunningServer,
) -> None:
    """h11 (the server without the `speed` extra) passes a literal `#` in the target on to
    the app; the route was read past it while the upstream URL ended there (no client
    sends a fragment): `/v1/chat/completions#/responses/input_tokens` was checked as a free
    token count (no budget, no cap, no meter) and generated upstream, and
    `GET /v1/chat/completions#` listed stored completions past ACCOUNT_ROUTES=refuse."""
    port = free_port()
    env = proxy_env(
        mock_upstream.url,
        HOST="127.0.0.1",
        PORT=str(port),
        ACCOUNT_ROUTES="refuse",
        MAX_TOKENS_CAP="16",
    )
    chat = b'{"model":"gpt-4o-mini","max_tokens":64000,"messages":[{"role":"user","content":"hi"}]}'
    with run_process(http_entry("h11"), env, f"http://127.0.0.1:{port}/health"):
        reset_upstream(mock_upstream)
        for target, body in [
            ("/v1/chat/completions#/responses/input_tokens", chat),
            ("/v1/chat/completions#", b""),
            ("/v1/files#/models", b""),
            ("/v1/chat/completions?stream=false#&x=1", chat),
        ]:
            reply = _raw_request(port, target, body)
            assert reply.startswith(b"HTTP/1.1 400"), (target, reply[:300])
            assert b"fragment" in reply
        assert upstream_requests(mock_upstream) == []
        # The same request without the fragment is still capped (the cap is what was
        # skipped): 400 over MAX_TOKENS_CAP, nothing sent.
        reply = _raw_request(port, "/v1/chat/completions", chat)
        assert reply.startswith(b"HTTP/1.1 400") and b"MAX_TOKENS_CAP" in reply, reply[:300]
        assert upstream_requests(mock_upstream) == []
