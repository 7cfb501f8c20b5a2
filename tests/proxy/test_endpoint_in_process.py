"""Unit tests of the forwarding logic: the app in-process, the upstream mocked with respx."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest
import respx

from core import __version__
from core.app import create_app
from core.config import load_settings
from tests.support.servers import FAKE_TOKEN, FAKE_UPSTREAM_KEY

UPSTREAM = "https://api.upstream.test/v1"
AUTH = {"Authorization": f"Bearer {FAKE_TOKEN}"}


def settings(**extra: str):
    env = {
        "UPSTREAM_BASE_URL": UPSTREAM,
        "UPSTREAM_API_KEY": FAKE_UPSTREAM_KEY,
        "PROXY_ACCESS_TOKEN": FAKE_TOKEN,
        "ALLOWED_ORIGINS": "https://app.example.test",
        "UPSTREAM_TRANSPORT": "httpx",
        "ACCESS_LOG": "false",
        **extra,
    }
    return load_settings(env)


@pytest.fixture()
async def proxy() -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings(MAX_BODY_BYTES="1000"))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://proxy.test"
    ) as c:
        yield c


@respx.mock
async def test_request_is_rebuilt_for_the_upstream(proxy: httpx.AsyncClient) -> None:
    route = respx.post(f"{UPSTREAM}/chat/completions").respond(200, json={"ok": True})
    body = b'{"model":  "m", "messages": []}'  # odd spacing must survive: no re-serialising
    response = await proxy.post(
        "/v1/chat/completions?api-version=1&b=%2F",
        content=body,
        headers={
            **AUTH,
            "content-type": "application/json",
            "x-forwarded-for": "203.0.113.9",
            "x-real-ip": "203.0.113.9",
            "cf-connecting-ip": "203.0.113.9",
            "x-amzn-trace-id": "Root=1",
            "x-vercel-ip-country": "NL",
            "origin": "https://app.example.test",
            "cookie": "session=abc",
            "x-api-key": "also-a-caller-credential",
            "openai-beta": "assistants=v2",
            "openai-organization": "org-someone-else",
            "openai-project": "proj_other",
            "connection": "keep-alive, x-hop",
            "x-hop": "drop me",
        },
    )
    assert response.status_code == 200
    sent = route.calls.last.request
    assert sent.url.raw_path == b"/v1/chat/completions?api-version=1&b=%2F"
    assert sent.content == body
    assert sent.headers["authorization"] == f"Bearer {FAKE_UPSTREAM_KEY}"
    assert sent.headers["openai-beta"] == "assistants=v2"
    for name in (
        "x-forwarded-for",
        "x-real-ip",
        "cf-connecting-ip",
        "x-amzn-trace-id",
        "x-vercel-ip-country",
        "origin",
        "cookie",
        "x-api-key",
        "x-hop",
        "openai-organization",
        "openai-project",
    ):
        assert name not in sent.headers, name
    assert FAKE_TOKEN not in str(sent.headers.raw)


@respx.mock
async def test_gemini_style_key_param_is_a_credential_and_is_removed(
    proxy: httpx.AsyncClient,
) -> None:
    route = respx.get(f"{UPSTREAM}/models").respond(200, json={"data": []})
    response = await proxy.get(f"/v1/models?alt=sse&key={FAKE_TOKEN}&pageSize=5")
    assert response.status_code == 200
    assert route.calls.last.request.url.query == b"alt=sse&pageSize=5"


@pytest.mark.parametrize(
    "slot", ["authorization", "x-api-key", "x-goog-api-key", "api-key", "query"]
)
@respx.mock
async def test_every_sdk_slot_carries_the_token(proxy: httpx.AsyncClient, slot: str) -> None:
    respx.get(f"{UPSTREAM}/models").respond(200, json={"data": []})
    if slot == "query":
        response = await proxy.get(f"/v1/models?key={FAKE_TOKEN}")
    else:
        value = f"Bearer {FAKE_TOKEN}" if slot == "authorization" else FAKE_TOKEN
        response = await proxy.get("/v1/models", headers={slot: value})
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "No proxy token"),
        ({"Authorization": "Bearer "}, "blank"),
        ({"x-api-key": "   "}, "blank"),
        ({"Authorization": f"Basic {FAKE_TOKEN}"}, "Bearer scheme"),
        ({"Authorization": "Bearer wrong-token-wrong-token"}, "not valid"),
        ({"x-goog-api-key": FAKE_TOKEN[:-1]}, "not valid"),
        ({"Authorization": f"Bearer {FAKE_UPSTREAM_KEY}"}, "not valid"),
    ],
)
async def test_bad_credentials_get_401_in_openai_shape(
    proxy: httpx.AsyncClient, headers: dict[str, str], reason: str
) -> None:
    response = await proxy.get("/v1/models", headers=headers)
    assert response.status_code == 401
    error = response.json()["error"]
    assert reason in error["message"]
    assert error["code"] == "invalid_api_key"
    assert FAKE_UPSTREAM_KEY not in response.text


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/v1/chat/completions", b'{"model": ', 400),
        ("POST", "/v1/chat/completions", b"x" * 1001, 413),
        ("TRACE", "/v1/models", b"", 405),
        ("GET", "/nothing/here", b"", 404),
        ("GET", "/v1/%2e%2e/admin", b"", 400),
        ("GET", "/v1/a/%252e%252e/b", b"", 400),
        ("GET", "/v1/a%5c..%5cb", b"", 400),
    ],
)
async def test_bad_input_gets_a_clear_json_error(
    proxy: httpx.AsyncClient, method: str, path: str, body: bytes, status: int
) -> None:
    response = await proxy.request(
        method, path, content=body, headers={**AUTH, "content-type": "application/json"}
    )
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["message"]


async def test_header_injection_is_refused(proxy: httpx.AsyncClient) -> None:
    # httpx refuses to send CR/LF itself, so speak ASGI directly.
    app = create_app(settings())
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/v1/models",
        "raw_path": b"/v1/models",
        "query_string": b"",
        "headers": [
            (b"authorization", f"Bearer {FAKE_TOKEN}".encode()),
            (b"x-evil", b"a\r\nHost: evil.test"),
        ],
        "http_version": "1.1",
        "scheme": "http",
        "server": ("proxy.test", 80),
        "client": ("1.2.3.4", 1),
        "root_path": "",
    }
    await app(scope, receive, send)
    assert sent[0]["status"] == 400


@respx.mock
async def test_upstream_unreachable_is_502_and_timeout_is_504(proxy: httpx.AsyncClient) -> None:
    respx.get(f"{UPSTREAM}/models").mock(side_effect=httpx.ConnectError("refused"))
    respx.get(f"{UPSTREAM}/slow").mock(side_effect=httpx.ReadTimeout("slow"))
    down = await proxy.get("/v1/models", headers=AUTH)
    slow = await proxy.get("/v1/slow", headers=AUTH)
    assert (down.status_code, down.json()["error"]["code"]) == (502, "upstream_unreachable")
    assert (slow.status_code, slow.json()["error"]["code"]) == (504, "upstream_timeout")
    assert "api.upstream.test" not in down.text + slow.text


@respx.mock
async def test_upstream_redirect_is_not_followed(proxy: httpx.AsyncClient) -> None:
    respx.get(f"{UPSTREAM}/models").respond(302, headers={"location": "https://evil.test/"})
    evil = respx.get("https://evil.test/").respond(200)
    response = await proxy.get("/v1/models", headers=AUTH)
    assert response.status_code == 302
    assert not evil.called


@respx.mock
async def test_response_headers_are_cleaned_and_event_streams_marked(
    proxy: httpx.AsyncClient,
) -> None:
    respx.post(f"{UPSTREAM}/chat/completions").respond(
        200,
        content=b"data: {}\n\n",
        headers={
            "content-type": "text/event-stream",
            "set-cookie": "__cf_bm=x",
            "openai-organization": "acme-corp",
            "x-request-id": "req_123",
            "cache-control": "max-age=60",
        },
    )
    response = await proxy.post("/v1/chat/completions", headers=AUTH, content=b"{}")
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    assert response.headers["x-request-id"] == "req_123"
    assert "set-cookie" not in response.headers
    assert "openai-organization" not in response.headers
    assert len(response.headers["x-proxy-request-id"]) == 16


async def test_cors_preflight_is_answered_before_auth(proxy: httpx.AsyncClient) -> None:
    allowed = await proxy.options(
        "/v1/chat/completions",
        headers={
            "origin": "https://app.example.test",
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization, content-type, x-stainless-os",
        },
    )
    assert allowed.status_code == 204
    assert allowed.headers["access-control-allow-origin"] == "https://app.example.test"
    assert "x-stainless-os" in allowed.headers["access-control-allow-headers"].lower()
    refused = await proxy.options(
        "/v1/chat/completions",
        headers={"origin": "https://evil.test", "access-control-request-method": "POST"},
    )
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "cors_origin_not_allowed"
    assert "access-control-allow-origin" not in refused.headers
    # Under /anthropic and /gemini, in that protocol's shape (main: OpenAI's everywhere).
    for path, shape in [
        ("/anthropic/v1/messages", {"type": "error"}),
        ("/gemini/v1beta/models/m:generateContent", {"error": {"status": "PERMISSION_DENIED"}}),
    ]:
        refused = await proxy.options(
            path, headers={"origin": "https://evil.test", "access-control-request-method": "POST"}
        )
        body = refused.json()
        assert refused.status_code == 403
        assert body.get("type") == shape.get("type")
        assert body["error"].get("status") == shape.get("error", {}).get("status")


@respx.mock
async def test_cors_headers_on_real_responses_only_for_allowed_origins(
    proxy: httpx.AsyncClient,
) -> None:
    respx.get(f"{UPSTREAM}/models").respond(200, json={"data": []})
    ok = await proxy.get("/v1/models", headers={**AUTH, "origin": "https://app.example.test"})
    assert ok.headers["access-control-allow-origin"] == "https://app.example.test"
    exposed = {name.strip() for name in ok.headers["access-control-expose-headers"].split(",")}
    # Exact names: browsers match no prefix or pattern here.
    assert {
        "x-proxy-request-id",
        "retry-after-ms",
        "x-should-retry",
        "anthropic-ratelimit-requests-remaining",
        "anthropic-ratelimit-input-tokens-reset",
        "anthropic-ratelimit-output-tokens-limit",
        "x-goog-upload-url",
        "x-goog-upload-status",
    } <= exposed
    assert not any("*" in name for name in exposed)
    denied = await proxy.get("/v1/models", headers={**AUTH, "origin": "https://evil.test"})
    assert "access-control-allow-origin" not in denied.headers
    # Errors carry CORS headers too, so a page can read the 401 message.
    unauth = await proxy.get("/v1/models", headers={"origin": "https://app.example.test"})
    assert unauth.status_code == 401
    assert unauth.headers["access-control-allow-origin"] == "https://app.example.test"


async def test_health_reveals_nothing(proxy: httpx.AsyncClient) -> None:
    response = await proxy.get("/health")
    assert response.json() == {"status": "ok", "version": __version__}
    assert "upstream" not in response.text


async def test_misconfigured_deployment_answers_500_naming_the_variables(monkeypatch) -> None:
    for name in ("UPSTREAM_BASE_URL", "UPSTREAM_API_KEY", "PROXY_ACCESS_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("UPSTREAM_BASE_URL", "ftp://nowhere")
    app = create_app()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://p") as c:
        response = await c.get("/v1/models")
    assert response.status_code == 500
    message = json.loads(response.text)["error"]["message"]
    for name in ("UPSTREAM_BASE_URL", "UPSTREAM_API_KEY", "PROXY_ACCESS_TOKEN"):
        assert name in message
