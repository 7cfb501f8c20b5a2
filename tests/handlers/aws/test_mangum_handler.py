"""handlers.aws.buffered.handler (Mangum, buffered) with every event shape AWS sends it:
API Gateway REST (v1) and HTTP (v2) APIs, ALB (plain and multi-value), Function URLs.

The handler module is imported as Lambda imports it, from the environment, and forwards
to the mock upstream over a real loopback socket.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pytest

from core import __version__
from tests.support.buffered_lambda import call, import_handler
from tests.support.lambda_events import EVENT_SHAPES, HttpRequest, parse_query
from tests.support.servers import (
    FAKE_TOKEN,
    FAKE_UPSTREAM_KEY,
    RunningServer,
    proxy_env,
    reset_upstream,
    upstream_requests,
)

MAX_BODY = 64 * 1024
Shape = Callable[[HttpRequest], dict[str, Any]]


@pytest.fixture(scope="module")
def lambda_module(mock_upstream: RunningServer) -> Iterator[ModuleType]:
    env = proxy_env(
        mock_upstream.url,
        MAX_BODY_BYTES=str(MAX_BODY),
        ANTHROPIC_API_KEY="sk-ant-mock-upstream-key-not-real",
        ANTHROPIC_UPSTREAM=f"{mock_upstream.url}/v1",
    )
    yield import_handler(env)
    sys.modules.pop("handlers.aws.buffered", None)


@pytest.fixture(params=sorted(EVENT_SHAPES))
def shape(request: pytest.FixtureRequest) -> Shape:
    return EVENT_SHAPES[request.param]  # type: ignore[return-value]


@pytest.fixture(autouse=True)
def clean_upstream(mock_upstream: RunningServer) -> None:
    reset_upstream(mock_upstream)


def bearer(token: str = FAKE_TOKEN) -> tuple[str, str]:
    return ("Authorization", f"Bearer {token}")


def test_health(lambda_module: ModuleType, shape: Shape) -> None:
    status, headers, body, _ = call(lambda_module, shape(HttpRequest("GET", "/health")))
    assert status == 200
    assert json.loads(body) == {"status": "ok", "version": __version__}
    assert headers["content-type"] == "application/json"


def test_chat_completion_reaches_upstream_with_the_real_key_only(
    lambda_module: ModuleType, shape: Shape, mock_upstream: RunningServer
) -> None:
    payload = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    request = HttpRequest(
        "POST",
        "/v1/chat/completions",
        headers=[bearer(), ("Content-Type", "application/json"), ("X-Custom-Trace", "abc")],
        body=json.dumps(payload).encode(),
    )
    status, headers, body, _ = call(lambda_module, shape(request))
    assert status == 200, body
    assert json.loads(body)["object"] == "chat.completion"
    assert headers["x-proxy-request-id"]
    (seen,) = upstream_requests(mock_upstream)
    upstream_headers: dict[str, str] = seen["headers"]  # type: ignore[assignment]
    assert upstream_headers["authorization"] == f"Bearer {FAKE_UPSTREAM_KEY}"
    assert upstream_headers["x-custom-trace"] == "abc"
    assert FAKE_TOKEN not in json.dumps(seen)
    assert FAKE_UPSTREAM_KEY not in body.decode()


@pytest.mark.parametrize(
    "extra",
    [
        [("Host", "[2001:db8::1]:443")],  # an IPv6 literal: a valid Host
        [("Host", "proxy.example.test:https")],  # a caller's own, on an ALB
        [("Host", "a:1:2")],
        [("X-Forwarded-Port", "443")],  # a second value: "443, 443" on a REST API
    ],
    ids=["ipv6-literal", "named-port", "two-colons", "two-forwarded-ports"],
)
def test_a_host_mangum_cannot_split_is_answered_by_the_app(
    lambda_module: ModuleType, shape: Shape, extra: list[tuple[str, str]]
) -> None:
    """Mangum reads the server's port from Host or X-Forwarded-Port as one int and raised
    on these before the app ran: the caller got the platform's bare 502 and the log a
    traceback (handlers/aws/buffered.py, _tolerate_odd_ports)."""
    payload = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    request = HttpRequest(
        "POST",
        "/v1/chat/completions",
        headers=[bearer(), ("Content-Type", "application/json"), *extra],
        body=json.dumps(payload).encode(),
    )
    status, headers, body, _ = call(lambda_module, shape(request))
    assert status == 200, body
    assert json.loads(body)["object"] == "chat.completion"
    assert headers["x-proxy-request-id"]


def test_stream_comes_back_whole_in_buffered_mode(lambda_module: ModuleType, shape: Shape) -> None:
    payload = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    request = HttpRequest(
        "POST",
        "/v1/chat/completions",
        headers=[bearer(), ("Content-Type", "application/json")],
        body=json.dumps(payload).encode(),
    )
    status, headers, body, result = call(lambda_module, shape(request))
    assert status == 200
    assert headers["content-type"].startswith("text/event-stream")
    assert result["isBase64Encoded"] is False  # SSE stays readable text in the reply
    events = [line for line in body.decode().split("\n\n") if line]
    assert events[-1] == "data: [DONE]"
    assert len(events) == 8 + 3  # role, 8 words, finish, [DONE]


def test_missing_or_wrong_credential_is_refused_in_each_protocols_shape(
    lambda_module: ModuleType, shape: Shape, mock_upstream: RunningServer
) -> None:
    status, _, body, _ = call(lambda_module, shape(HttpRequest("GET", "/v1/models")))
    assert status == 401
    assert json.loads(body)["error"]["code"] == "invalid_api_key"

    anthropic = HttpRequest(
        "POST",
        "/anthropic/v1/messages",
        headers=[("x-api-key", "not-a-valid-token-at-all"), ("content-type", "application/json")],
        body=b'{"model":"claude","max_tokens":5,"messages":[]}',
    )
    status, _, body, _ = call(lambda_module, shape(anthropic))
    assert status == 401
    assert json.loads(body)["type"] == "error"
    assert json.loads(body)["error"]["type"] == "authentication_error"
    assert upstream_requests(mock_upstream) == []


def test_binary_request_body_arrives_intact(lambda_module: ModuleType, shape: Shape) -> None:
    blob = bytes(range(256)) * 40 + b"\x00\xff\r\n"
    request = HttpRequest(
        "POST",
        "/v1/echo/upload",
        headers=[bearer(), ("Content-Type", "application/octet-stream")],
        body=blob,
    )
    status, _, body, _ = call(lambda_module, shape(request))
    assert status == 200
    echoed = json.loads(body)
    assert echoed["body_length"] == len(blob)
    assert echoed["body_sha256"] == hashlib.sha256(blob).hexdigest()


def test_binary_response_is_base64_encoded_and_exact(
    lambda_module: ModuleType, shape: Shape
) -> None:
    request = HttpRequest(
        "GET", "/v1/bytes", query=[("n", "5000"), ("chunk", "700")], headers=[bearer()]
    )
    status, headers, body, result = call(lambda_module, shape(request))
    assert status == 200
    assert result["isBase64Encoded"] is True
    assert body == b"x" * 5000
    assert headers["content-type"] == "application/octet-stream"


def test_query_string_reaches_upstream_without_the_key_parameter(
    lambda_module: ModuleType, shape: Shape
) -> None:
    query = [("alt", "sse"), ("key", FAKE_TOKEN), ("tag", "a b/c"), ("tag", "2")]
    request = HttpRequest("GET", "/v1/echo/q", query=query)  # ?key= is the only credential
    status, _, body, _ = call(lambda_module, shape(request))
    assert status == 200, body
    seen = parse_query(json.loads(body)["query"])
    expected = [("alt", "sse"), ("tag", "a b/c"), ("tag", "2")]
    if shape is EVENT_SHAPES["alb"]:
        # An ALB without multi-value headers passes only the last of repeated parameters
        # (AWS docs, "Lambda functions as targets"); turning them on keeps all.
        expected = [("alt", "sse"), ("tag", "2")]
    assert sorted(seen) == sorted(expected)


def test_repeated_headers_reach_upstream_and_cookies_do_not(
    lambda_module: ModuleType, shape: Shape
) -> None:
    request = HttpRequest(
        "GET",
        "/v1/echo/h",
        headers=[bearer(), ("Cookie", "session=s3cr3t"), ("X-Multi", "one"), ("X-Multi", "two")],
    )
    status, _, body, _ = call(lambda_module, shape(request))
    assert status == 200
    headers = json.loads(body)["headers"]
    if shape in (EVENT_SHAPES["alb"], EVENT_SHAPES["alb_multi_value"]):
        # A plain ALB passes only the last value; with multi-value headers both go out as
        # two header lines, which the mock's echo (a dict) shows as the last one.
        assert headers["x-multi"] == "two"
    else:
        assert headers["x-multi"].replace(" ", "") == "one,two"
    assert "cookie" not in headers  # the caller's cookies are theirs, not the provider's


def test_proxy_errors_are_json_with_the_right_status(
    lambda_module: ModuleType, shape: Shape
) -> None:
    json_headers = [bearer(), ("Content-Type", "application/json")]
    cases = [
        (HttpRequest("GET", "/nowhere", headers=[bearer()]), 404),
        (HttpRequest("POST", "/v1/chat/completions", headers=json_headers, body=b"{not json"), 400),
        (
            HttpRequest(
                "POST",
                "/v1/embeddings",
                headers=json_headers,
                body=b'{"x":"' + b"a" * MAX_BODY + b'"}',
            ),
            413,
        ),
    ]
    for request, expected in cases:
        status, headers, body, _ = call(lambda_module, shape(request))
        assert status == expected, (request.path, body)
        assert headers["content-type"] == "application/json"
        assert "Traceback" not in body.decode()
        assert isinstance(json.loads(body)["error"]["message"], str)


def test_upstream_error_status_passes_through(lambda_module: ModuleType, shape: Shape) -> None:
    request = HttpRequest("GET", "/v1/models", headers=[bearer(), ("x-mock-status", "429")])
    status, _, body, _ = call(lambda_module, shape(request))
    assert status == 429
    assert json.loads(body)["error"]["message"] == "mock error 429"


def test_bad_environment_answers_every_event_with_a_named_500(mock_upstream: RunningServer) -> None:
    env = proxy_env(mock_upstream.url)
    env["UPSTREAM_API_KEY"] = ""
    module = import_handler(env)
    try:
        for shape in EVENT_SHAPES.values():
            status, _, body, _ = call(
                module, shape(HttpRequest("GET", "/v1/models", headers=[bearer()]))
            )
            assert status == 500
            assert "UPSTREAM_API_KEY" in json.loads(body)["error"]["message"]
    finally:
        sys.modules.pop("handlers.aws.buffered", None)


def test_importing_the_handler_does_not_import_boto3(mock_upstream: RunningServer) -> None:
    """No secret referenced: the cold start must not pay for boto3 (or aiohttp)."""
    import subprocess

    code = "import sys, handlers.aws.buffered; print(sorted(m for m in ('boto3','aiohttp') if m in sys.modules))"
    env = {**os.environ, **proxy_env(mock_upstream.url)}
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.strip() == "[]"


async def test_a_reply_whole_before_a_later_failure_goes_out_as_it_was(
    lambda_module: ModuleType,
) -> None:
    """WholeReply replaces only a reply that failed before its end (a cut stream); one
    that was complete goes out unchanged and the failure is raised on for Mangum's log."""
    sent: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"whole"})
        raise RuntimeError("after the reply")

    async def collect(message: Any) -> None:
        sent.append(message)

    with pytest.raises(RuntimeError):
        await lambda_module.WholeReply(app)({"type": "http"}, None, collect)
    assert [m.get("status", m.get("body")) for m in sent] == [200, b"whole"]
