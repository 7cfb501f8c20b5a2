"""Buffered Lambda ends a reply itself before the function's time limit, as the streaming
runtime does (handlers/aws/stream.py).

Lambda stops a function at its timeout (29 s behind the HTTP API in the deploy files, with
UPSTREAM_READ_TIMEOUT at 120 s): the caller then got API Gateway's own
`{"message": "Service Unavailable"}` (no CORS header, so a page could not even read it; no
request id; not the SDK's error shape), a reservation was never settled, and the instance
was thrown away. Lambda hands the handler its deadline in the context object: a reply not
whole half a second before it is a 504 in the route's shape, with the CORS headers an
allowed page needs, and the upstream request is cancelled.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pytest

from tests.support.buffered_lambda import Context, import_handler
from tests.support.lambda_events import HttpRequest, api_gateway_v1, function_url
from tests.support.servers import FAKE_TOKEN, RunningServer, proxy_env

ORIGIN = "http://app.example.test"  # in proxy_env's ALLOWED_ORIGINS
Shape = Callable[[HttpRequest], dict[str, Any]]


class ShortContext(Context):
    """A context whose function has `seconds` left, counting down as Lambda's does."""

    def __init__(self, seconds: float) -> None:
        self.ends_at = time.monotonic() + seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(int((self.ends_at - time.monotonic()) * 1000), 0)


@pytest.fixture(scope="module")
def lambda_module(mock_upstream: RunningServer) -> Iterator[ModuleType]:
    env = proxy_env(
        mock_upstream.url,
        ANTHROPIC_API_KEY="sk-ant-mock-upstream-key-not-real",
        ANTHROPIC_UPSTREAM=f"{mock_upstream.url}/v1",
    )
    yield import_handler(env)
    sys.modules.pop("handlers.aws.buffered", None)


def slow_request(path: str, credential: tuple[str, str], stream: bool) -> HttpRequest:
    # The mock waits 300 ms before each of 10 chunks: 3 s in all, past the 1.2 s left.
    body = {"model": "m", "max_tokens": 10, "stream": stream, "messages": []}
    return HttpRequest(
        "POST",
        path,
        headers=[
            credential,
            ("Content-Type", "application/json"),
            ("Origin", ORIGIN),
            ("x-mock-chunks", "10"),
            ("x-mock-delay-ms", "300"),
        ],
        body=json.dumps(body).encode(),
    )


def invoke(
    module: ModuleType, event: dict[str, Any], seconds: float
) -> tuple[float, dict[str, Any]]:
    started = time.monotonic()
    result = module.handler(event, ShortContext(seconds))
    return time.monotonic() - started, result


@pytest.mark.parametrize("stream", [False, True], ids=["whole-reply", "stream-begun"])
@pytest.mark.parametrize("shape", [function_url, api_gateway_v1], ids=["payload-2.0", "rest-api"])
def test_a_reply_past_the_deadline_is_a_504_in_the_openai_shape(
    lambda_module: ModuleType, shape: Shape, stream: bool
) -> None:
    request = slow_request(
        "/v1/chat/completions", ("Authorization", f"Bearer {FAKE_TOKEN}"), stream
    )
    took, result = invoke(lambda_module, shape(request), 1.2)
    assert took < 1.2, took  # answered before Lambda would have stopped the function
    assert result["statusCode"] == 504, result
    headers = {k.lower(): v for k, v in (result.get("headers") or {}).items()}
    assert headers["content-type"] == "application/json"
    assert headers["access-control-allow-origin"] == ORIGIN  # an allowed page can read it
    assert headers["x-proxy-request-id"]
    assert json.loads(result["body"])["error"]["code"] == "upstream_timeout"


def test_the_deadline_504_takes_the_routes_error_shape(lambda_module: ModuleType) -> None:
    request = slow_request("/anthropic/v1/messages", ("x-api-key", FAKE_TOKEN), stream=False)
    took, result = invoke(lambda_module, function_url(request), 1.2)
    assert took < 1.2, took
    assert result["statusCode"] == 504
    error = json.loads(result["body"])
    assert error["type"] == "error" and "time limit" in error["error"]["message"]


def test_a_reply_whole_in_time_is_untouched(lambda_module: ModuleType) -> None:
    request = slow_request("/v1/chat/completions", ("Authorization", f"Bearer {FAKE_TOKEN}"), False)
    request.headers[-1] = ("x-mock-delay-ms", "10")
    _, result = invoke(lambda_module, function_url(request), 5)
    assert result["statusCode"] == 200
    assert json.loads(result["body"])["object"] == "chat.completion"


def test_a_stream_stopped_by_its_check_is_the_refusal_itself(
    mock_upstream: RunningServer, tmp_path: Any
) -> None:
    """A stream whose token is revoked while it is relayed (core/proxy/open_checks.py) is
    aborted on a server; here nothing reached the caller yet, so it gets the refusal (a
    401 naming the token), not a 502 saying the provider's reply broke off."""
    import threading

    from core.access.tokens import create_token, revoke_token
    from core.stores import open_store

    store_url = f"sqlite:///{tmp_path}/tokens.db"
    store = open_store(store_url)
    token, record = create_token(store, "revoked-while-streaming")
    env = proxy_env(
        mock_upstream.url,
        TOKEN_STORE=store_url,
        TOKEN_CACHE_SECONDS="0",
        REALTIME_RECHECK_SECONDS="0.2",
    )
    module = import_handler(env)
    try:
        request = slow_request("/v1/chat/completions", ("Authorization", f"Bearer {token}"), True)
        threading.Timer(0.5, revoke_token, (store, record.id)).start()
        took, result = invoke(module, function_url(request), 30)
    finally:
        sys.modules.pop("handlers.aws.buffered", None)
    assert took < 2.5, took  # stopped, not the mock's 3 s
    assert result["statusCode"] == 401, result
    assert json.loads(result["body"])["error"]["code"] == "invalid_api_key"
