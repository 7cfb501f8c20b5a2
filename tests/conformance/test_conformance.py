"""The same behaviour on every platform: each test runs once per adapter in adapters.py.

What a user would notice: which credentials work, what an error looks like, whether a
stream streams, whether bytes and query strings arrive untouched, what the provider
sees, what a browser sees, and what happens when the provider is down or failing.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest

from core import __version__
from tests.conformance.adapters import CLIENT_IP, Adapter, HttpAdapter, Request
from tests.conformance.switchable_upstream import SwitchableRelay
from tests.support.servers import FAKE_TOKEN, FAKE_UPSTREAM_KEY, RunningServer, upstream_requests

ORIGIN = "http://app.example.test"
BEARER = {"authorization": f"Bearer {FAKE_TOKEN}"}
JSON = {"content-type": "application/json"}


def upstream_seen(mock_upstream: RunningServer) -> list[dict[str, Any]]:
    return [r for r in upstream_requests(mock_upstream) if isinstance(r, dict)]  # type: ignore[misc]


def test_health(adapter: Adapter) -> None:
    reply = adapter.send(Request("GET", "/health"))
    assert reply.status == 200
    assert json.loads(reply.body) == {"status": "ok", "version": __version__}


def test_an_ipv6_literal_host_is_answered(adapter: Adapter) -> None:
    """A Host naming the proxy by an IPv6 address, as a caller reaching it by address sends
    it: Mangum split it on ":" and failed the invocation before the app ran."""
    reply = adapter.send(Request("GET", "/health", {"host": "[2001:db8::1]:8443"}))
    assert reply.status == 200, reply.body
    assert json.loads(reply.body)["status"] == "ok"


@pytest.mark.parametrize(
    ("slot", "headers", "query"),
    [
        ("authorization-bearer", {"authorization": f"Bearer {FAKE_TOKEN}"}, ""),
        ("x-api-key", {"x-api-key": FAKE_TOKEN}, ""),
        ("x-goog-api-key", {"x-goog-api-key": FAKE_TOKEN}, ""),
        ("api-key", {"api-key": FAKE_TOKEN}, ""),
        ("query-key", {}, f"?key={FAKE_TOKEN}"),
    ],
)
def test_credential_accepted_in_every_slot(
    adapter: Adapter, mock_upstream: RunningServer, slot: str, headers: dict[str, str], query: str
) -> None:
    reply = adapter.send(Request("GET", f"/v1/models{query}", headers))
    assert reply.status == 200, reply.body
    assert json.loads(reply.body)["data"][0]["id"] == "mock-model"
    (seen,) = upstream_seen(mock_upstream)
    assert seen["query"] == ""  # ?key= is the caller's credential: it stays here


@pytest.mark.parametrize(
    "query",
    [
        f"key=other-value-not-a-token-0123&key={FAKE_TOKEN}",
        f"key={FAKE_TOKEN}&key=other-value-not-a-token-0123",
        f"key={FAKE_TOKEN}&KEY={FAKE_TOKEN}",
        f"key={FAKE_TOKEN}&%6Bey={FAKE_TOKEN}",
    ],
)
def test_the_key_parameter_sent_twice_is_refused(
    adapter: Adapter, mock_upstream: RunningServer, query: str
) -> None:
    """As a slot header sent twice: which copy is the credential must not depend on the
    reader (a front end, a WAF, a log keeping the first; the proxy took the last, so a
    valid token behind another value was let in)."""
    reply = adapter.send(Request("GET", f"/v1/models?{query}"))
    assert reply.status == 401, reply.body
    error = json.loads(reply.body)["error"]
    assert error["code"] == "invalid_api_key"
    assert "twice" in error["message"]
    assert FAKE_TOKEN.encode() not in reply.body
    assert upstream_seen(mock_upstream) == []


@pytest.mark.parametrize(
    ("case", "headers"),
    [
        ("missing", {}),
        ("wrong", {"authorization": "Bearer not-the-token-0123456789"}),
        ("not-bearer", {"authorization": f"Basic {FAKE_TOKEN}"}),
    ],
)
def test_bad_credential_is_refused_in_the_openai_shape(
    adapter: Adapter, mock_upstream: RunningServer, case: str, headers: dict[str, str]
) -> None:
    reply = adapter.send(
        Request("POST", "/v1/chat/completions", {**headers, **JSON}, b'{"model":"m"}')
    )
    assert reply.status == 401
    assert reply.header("content-type") == "application/json"
    error = json.loads(reply.body)["error"]
    assert error["code"] == "invalid_api_key"
    assert error["type"] == "invalid_request_error"
    assert error["message"]
    assert FAKE_TOKEN.encode() not in reply.body
    assert upstream_seen(mock_upstream) == []  # refused before any upstream call


def test_stream_arrives_incrementally(adapter: Adapter, request: pytest.FixtureRequest) -> None:
    if adapter.cannot_stream:
        request.applymarker(pytest.mark.xfail(strict=True, reason=adapter.cannot_stream))
    chunks, delay_ms = 8, 150
    reply = adapter.send(
        Request(
            "POST",
            "/v1/chat/completions",
            {**BEARER, **JSON, "x-mock-chunks": str(chunks), "x-mock-delay-ms": str(delay_ms)},
            json.dumps({"model": "m", "stream": True, "messages": []}).encode(),
        )
    )
    assert reply.status == 200
    assert reply.header(
        "content-type",
    ).startswith("text/event-stream")  # type: ignore[union-attr]
    assert reply.body.count(b"data: ") == chunks + 3  # role, words, finish, [DONE]
    assert reply.body.endswith(b"data: [DONE]\n\n")
    # The upstream spends about chunks * delay producing events. Buffered, they would all
    # arrive together at the end; streamed, the first arrives early and the rest spread out.
    produced_in = chunks * delay_ms / 1000
    first_at = reply.chunks[0][0] - reply.sent_at
    spread = reply.chunks[-1][0] - reply.chunks[0][0]
    assert first_at < produced_in / 2, f"first byte after {first_at:.2f}s"
    assert spread > produced_in / 2, f"all bytes within {spread:.2f}s"
    assert len(reply.chunks) >= chunks // 2


def test_json_response_passes_through_exactly(
    adapter: Adapter, mock_upstream: RunningServer
) -> None:
    direct = httpx.get(f"{mock_upstream.url}/v1/models", trust_env=False)
    reply = adapter.send(Request("GET", "/v1/models", BEARER))
    assert reply.status == 200
    assert reply.body == direct.content
    assert reply.header("content-type") == "application/json"


def test_binary_request_and_response_bodies_pass_through(
    adapter: Adapter, mock_upstream: RunningServer
) -> None:
    payload = os.urandom(200_000)
    reply = adapter.send(
        Request(
            "POST",
            "/v1/echo/upload",
            {**BEARER, "content-type": "application/octet-stream"},
            payload,
        )
    )
    assert reply.status == 200
    echoed = json.loads(reply.body)
    assert echoed["body_length"] == len(payload)
    assert echoed["body_sha256"] == hashlib.sha256(payload).hexdigest()

    download = adapter.send(Request("GET", "/v1/bytes?n=300001&chunk=65536", BEARER))
    assert download.status == 200
    assert download.header("content-type") == "application/octet-stream"
    assert download.body == b"x" * 300_001


def test_query_string_passes_verbatim(adapter: Adapter) -> None:
    query = "b=2&a=1&a=3&enc=%2F%20x%3D&empty=&flag"
    reply = adapter.send(Request("GET", f"/v1/echo/q?{query}&key={FAKE_TOKEN}", {}))
    assert reply.status == 200
    seen = json.loads(reply.body)["query"]
    if adapter.query_rebuilt:
        # Same names, values and order; only the spelling may differ.
        assert parse_qsl(seen, keep_blank_values=True) == parse_qsl(query, keep_blank_values=True)
        # Encoded again, not left decoded (a space form-style as `+` is still a space).
        assert "%2F%20x%3D" in seen or "%2F+x%3D" in seen
    else:
        assert seen == query


def test_upstream_sees_the_real_key_and_nothing_of_the_caller(
    adapter: Adapter, mock_upstream: RunningServer
) -> None:
    reply = adapter.send(
        Request(
            "POST",
            "/v1/echo/headers",
            {
                "x-api-key": FAKE_TOKEN,
                "cookie": "session=caller-cookie-value",
                "origin": ORIGIN,
                "referer": f"{ORIGIN}/chat",
                "x-custom-sdk-header": "kept",
                **JSON,
            },
            b"{}",
        )
    )
    assert reply.status == 200
    seen: dict[str, str] = json.loads(reply.body)["headers"]
    # The upstream got the real key; its echo of it in a 200 reaches the caller scrubbed
    # (issue 19: every reply is scrubbed).
    (recorded,) = upstream_seen(mock_upstream)
    assert recorded["headers"]["authorization"] == f"Bearer {FAKE_UPSTREAM_KEY}"
    assert seen["authorization"] == "Bearer [redacted]"
    assert seen["x-custom-sdk-header"] == "kept"
    for name in ("x-api-key", "x-goog-api-key", "api-key", "cookie", "origin", "referer"):
        assert name not in seen, name
    for name, value in adapter.front_headers.items():
        assert name not in seen, f"the platform header {name} reached the upstream"
        assert value not in seen.values()
    flat = json.dumps(seen)
    assert FAKE_TOKEN not in flat
    assert CLIENT_IP not in flat


def test_cors_preflight_and_response_headers(
    adapter: Adapter, mock_upstream: RunningServer
) -> None:
    preflight = adapter.send(
        Request(
            "OPTIONS",
            "/v1/chat/completions",
            {
                "origin": ORIGIN,
                "access-control-request-method": "POST",
                "access-control-request-headers": "authorization, content-type, x-stainless-os",
            },
        )
    )
    assert 200 <= preflight.status < 300
    assert preflight.header("access-control-allow-origin") == ORIGIN
    assert "POST" in (preflight.header("access-control-allow-methods") or "")
    assert "authorization" in (preflight.header("access-control-allow-headers") or "").lower()
    assert upstream_seen(mock_upstream) == []  # answered by the proxy, without a token

    refused = adapter.send(
        Request(
            "OPTIONS",
            "/v1/chat/completions",
            {"origin": "http://evil.example.test", "access-control-request-method": "POST"},
        )
    )
    assert 400 <= refused.status < 500
    assert refused.header("access-control-allow-origin") is None

    actual = adapter.send(Request("GET", "/v1/models", {**BEARER, "origin": ORIGIN}))
    assert actual.status == 200
    assert actual.header("access-control-allow-origin") == ORIGIN
    assert "x-proxy-request-id" in (actual.header("access-control-expose-headers") or "")


@pytest.mark.parametrize("status", [400, 429, 500, 503])
def test_upstream_error_status_and_body_pass_through(adapter: Adapter, status: int) -> None:
    reply = adapter.send(
        Request(
            "POST",
            "/v1/chat/completions",
            {**BEARER, **JSON, "x-mock-status": str(status)},
            b'{"model":"m"}',
        )
    )
    assert reply.status == status
    assert json.loads(reply.body)["error"]["message"] == f"mock error {status}"


def test_upstream_down_is_a_502_in_the_openai_shape(
    adapter: Adapter, relay: SwitchableRelay
) -> None:
    with relay.down():
        reply = adapter.send(
            Request("POST", "/v1/chat/completions", {**BEARER, **JSON}, b'{"model":"m"}')
        )
    assert reply.status == 502
    error = json.loads(reply.body)["error"]
    assert error["code"] == "upstream_unreachable"
    assert error["type"] == "server_error"
    # The proxy recovers as soon as the upstream is back.
    assert adapter.send(Request("GET", "/v1/models", BEARER)).status == 200


def test_a_websocket_upgrade_over_http_points_to_ephemeral_keys(adapter: Adapter) -> None:
    # A function platform hands a WebSocket handshake over as an ordinary HTTP request;
    # servers relay real WebSockets instead (tests/realtime).
    headers = {**BEARER, "upgrade": "websocket", "connection": "Upgrade"}
    reply = adapter.send(Request("GET", "/v1/realtime?model=gpt-realtime", headers))
    if isinstance(adapter, HttpAdapter) and not reply.body.startswith(b"{"):
        # uvicorn with a WebSocket library answers a handshake itself (this one lacks its
        # Sec-WebSocket-Key): a clear refusal, never a 5xx. Servers relay real WebSockets
        # (tests/realtime); on a function platform the edge refuses upgrades first.
        assert 400 <= reply.status < 500, reply.status
        return
    assert reply.status == 400, reply.body
    error = json.loads(reply.body)["error"]
    assert error["code"] == "websocket_unsupported"
    assert "ephemeral" in error["message"] or "client_secrets" in error["message"]


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("PROPFIND", "/v1/models", 405),  # no SDK sends it; a script may
        ("GET", "/favicon.ico", 404),  # what a browser asks for first
        ("GET", "/robots.txt", 404),
    ],
)
def test_a_refusal_before_any_route_is_the_proxys_json_for_an_allowed_page(
    adapter: Adapter, request: pytest.FixtureRequest, method: str, path: str, status: int
) -> None:
    if adapter.framework_answers:
        request.applymarker(pytest.mark.xfail(strict=True, reason=adapter.framework_answers))
    reply = adapter.send(Request(method, path, {**BEARER, "origin": ORIGIN}))
    assert reply.status == status
    assert reply.header("content-type") == "application/json"
    assert json.loads(reply.body)["error"]["message"]
    assert reply.header("access-control-allow-origin") == ORIGIN
    assert reply.header("x-proxy-request-id")
