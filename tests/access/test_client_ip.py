"""The client IP per platform, from events shaped as each platform sends them, and over a
real socket: a caller's own X-Forwarded-For / X-Real-IP never changes who it is."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from mangum.handlers.alb import ALB
from mangum.handlers.api_gateway import APIGateway, HTTPGateway

from core.access.client_ip import client_ip_rule, detect_platform
from tests.support.servers import PYTHON, RunningServer, free_port, proxy_env, run_process

REAL = "203.0.113.7"
SPOOFED = "6.6.6.6"
MANGUM_CONFIG: Any = {
    "api_gateway_base_path": "/",
    "text_mime_types": ["application/json"],
    "exclude_headers": [],
}


def rest_api_event() -> dict[str, Any]:
    """API Gateway REST API (payload 1.0): the source IP is API Gateway's own view."""
    return {
        "resource": "/{proxy+}",
        "path": "/v1/chat/completions",
        "httpMethod": "POST",
        "headers": {"x-forwarded-for": f"{SPOOFED}, {REAL}", "host": "api.example.test"},
        "multiValueHeaders": {"x-forwarded-for": [f"{SPOOFED}, {REAL}"]},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "requestContext": {"identity": {"sourceIp": REAL}, "stage": "prod"},
        "body": "{}",
        "isBase64Encoded": False,
    }


def http_api_event() -> dict[str, Any]:
    """API Gateway HTTP API and Function URLs (payload 2.0)."""
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": "/v1/chat/completions",
        "rawQueryString": "",
        "headers": {"x-forwarded-for": f"{SPOOFED}, {REAL}", "x-real-ip": SPOOFED},
        "requestContext": {
            "http": {"method": "POST", "path": "/v1/chat/completions", "sourceIp": REAL},
            "stage": "$default",
        },
        "body": "{}",
        "isBase64Encoded": False,
    }


def alb_event() -> dict[str, Any]:
    """An ALB appends the address it saw to whatever X-Forwarded-For the caller sent."""
    return {
        "requestContext": {"elb": {"targetGroupArn": "arn:aws:elasticloadbalancing:x"}},
        "httpMethod": "POST",
        "path": "/v1/chat/completions",
        "queryStringParameters": {},
        "headers": {"x-forwarded-for": f"{SPOOFED}, {REAL}", "host": "alb.example.test"},
        "body": "{}",
        "isBase64Encoded": False,
    }


@pytest.mark.parametrize(
    "scope_of",
    [
        lambda: APIGateway(rest_api_event(), None, MANGUM_CONFIG).scope,
        lambda: HTTPGateway(http_api_event(), None, MANGUM_CONFIG).scope,
        lambda: ALB(alb_event(), None, MANGUM_CONFIG).scope,
    ],
    ids=["api-gateway-rest", "api-gateway-http", "alb"],
)
def test_aws_uses_what_the_platform_saw(scope_of: Any) -> None:
    assert client_ip_rule("aws")(scope_of()) == REAL


def test_aws_streaming_handler_event_sources() -> None:
    from handlers.aws.events import FunctionUrlEvent, RestApiEvent

    assert client_ip_rule("aws")(FunctionUrlEvent(http_api_event()).scope) == REAL
    assert client_ip_rule("aws")(RestApiEvent(rest_api_event()).scope) == REAL


def scope_with(headers: list[tuple[str, str]], peer: str = "10.0.0.9") -> dict[str, Any]:
    return {
        "type": "http",
        "headers": [(k.encode(), v.encode()) for k, v in headers],
        "client": (peer, 40000),
    }


def test_vercel_trusts_only_the_headers_vercel_writes() -> None:
    # Vercel overwrites these three; a caller's X-Forwarded-For never reaches the function,
    # but even if a stray one did, the x-vercel-* value is the one read.
    scope = scope_with(
        [("x-forwarded-for", SPOOFED), ("x-vercel-forwarded-for", REAL), ("x-real-ip", REAL)]
    )
    assert client_ip_rule("vercel")(scope) == REAL


def test_cloud_run_takes_the_entry_googles_front_end_appended() -> None:
    scope = scope_with([("x-forwarded-for", f"{SPOOFED},{REAL}")])
    assert client_ip_rule("cloud-run")(scope) == REAL
    # Behind an external HTTPS load balancer: client, then the balancer's address.
    behind_lb = scope_with([("x-forwarded-for", f"{SPOOFED}, {REAL}, 35.191.0.1")])
    assert client_ip_rule("xff:2")(behind_lb) == REAL


def test_too_few_forwarded_entries_fall_back_to_the_peer() -> None:
    # A request that did not pass through the trusted hops cannot name its own address.
    assert client_ip_rule("xff:2")(scope_with([("x-forwarded-for", SPOOFED)])) == "10.0.0.9"


def test_socket_ignores_every_header() -> None:
    scope = scope_with([("x-forwarded-for", SPOOFED), ("x-real-ip", SPOOFED)], peer=REAL)
    assert client_ip_rule("socket")(scope) == REAL


def test_a_named_edge_header() -> None:
    scope = scope_with([("cf-connecting-ip", REAL), ("x-forwarded-for", SPOOFED)])
    assert client_ip_rule("header:CF-Connecting-IP")(scope) == REAL


@pytest.mark.parametrize(
    ("environ", "platform"),
    [
        ({"AWS_LAMBDA_FUNCTION_NAME": "proxy"}, "aws"),
        ({"VERCEL": "1"}, "vercel"),
        ({"K_SERVICE": "proxy"}, "cloud-run"),
        ({}, "socket"),
    ],
)
def test_auto_detects_the_platform(environ: dict[str, str], platform: str) -> None:
    assert detect_platform(environ) == platform


def test_a_caller_cannot_dodge_a_per_ip_limit_with_headers(mock_upstream: RunningServer) -> None:
    """The real entry point (`python -m handlers.http`) on loopback, anonymous mode with a
    per-IP limit of 1: new X-Forwarded-For / X-Real-IP values on each request do not help."""
    port = free_port()
    env = proxy_env(
        mock_upstream.url,
        PORT=str(port),
        HOST="127.0.0.1",
        ALLOW_ANONYMOUS="true",
        ALLOWED_ORIGINS="http://app.example.test",
        RATE_LIMIT_REQUESTS="1",
    )
    url = f"http://127.0.0.1:{port}"
    with run_process([PYTHON, "-m", "handlers.http"], env, f"{url}/health"):
        statuses = []
        for n in range(3):
            reply = httpx.post(
                f"{url}/v1/chat/completions",
                json={"model": "mock-model", "messages": []},
                headers={
                    "origin": "http://app.example.test",
                    "x-forwarded-for": f"198.51.100.{n}",
                    "x-real-ip": f"198.51.100.{n}",
                    "forwarded": f"for=198.51.100.{n}",
                },
                timeout=10,
            )
            statuses.append(reply.status_code)
        assert statuses == [200, 429, 429]
