"""A header sent twice decides the same on a server as on Lambda.

A server (uvicorn: `handlers/http.py`, Cloud Run, CloudBase, a container) hands the proxy
each copy of a repeated header apart; a Function URL or an HTTP API (payload 2.0) and
Mangum's reading of a REST API event hand it one value, the copies comma-joined. The rule
a header decides (the credential, whether the body is JSON and so under MAX_JSON_BYTES,
whether it is compressed and so refused under ALLOWED_MODELS) must not depend on which of
the two the platform does: the same request, over a real socket to the server and as
events to the Mangum handler, gets the same status.
"""

from __future__ import annotations

import gzip
import json
import sys
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import httpx
import pytest

from core.app import create_app
from core.config import load_settings
from tests.support.buffered_lambda import call, import_handler
from tests.support.lambda_events import HttpRequest, api_gateway_v1, api_gateway_v2, function_url
from tests.support.servers import (
    FAKE_TOKEN,
    RunningServer,
    proxy_env,
    reset_upstream,
    serve_in_thread,
    upstream_requests,
)

MAX_JSON = 1000
Shape = Callable[[HttpRequest], dict[str, Any]]
# The shapes that join a repeated header into one value before the proxy sees it.
JOINING_SHAPES: dict[str, Shape] = {
    "function_url": function_url,
    "api_gateway_v2": api_gateway_v2,
    "api_gateway_v1": api_gateway_v1,  # Mangum joins multiValueHeaders itself
}


@pytest.fixture(scope="module")
def env(mock_upstream: RunningServer) -> dict[str, str]:
    return proxy_env(
        mock_upstream.url,
        GEMINI_API_KEY="fake-gemini-key-not-real",
        GEMINI_UPSTREAM=mock_upstream.url,
        ALLOWED_MODELS="gpt-4o-mini,gemini-test",
        MAX_JSON_BYTES=str(MAX_JSON),
    )


@pytest.fixture(scope="module")
def server(env: dict[str, str]) -> Iterator[RunningServer]:
    with serve_in_thread(create_app(load_settings(env))) as running:
        yield running


@pytest.fixture(scope="module")
def lambda_module(env: dict[str, str]) -> Iterator[ModuleType]:
    yield import_handler(env)
    sys.modules.pop("handlers.aws.buffered", None)


@pytest.fixture(params=sorted(JOINING_SHAPES))
def shape(request: pytest.FixtureRequest) -> Shape:
    return JOINING_SHAPES[request.param]


def both(
    server: RunningServer, lambda_module: ModuleType, shape: Shape, request: HttpRequest
) -> tuple[int, int]:
    """The status of one request on the server and as a Lambda event."""
    on_server = httpx.request(
        request.method,
        server.url + request.path,
        headers=request.headers,
        content=request.body,
        trust_env=False,
    ).status_code
    on_lambda, _, _, _ = call(lambda_module, shape(request))
    return on_server, on_lambda


def test_authorization_sent_twice_is_refused_everywhere(
    server: RunningServer, lambda_module: ModuleType, shape: Shape, mock_upstream: RunningServer
) -> None:
    # A server read the first copy; a Function URL reads "Bearer good,Bearer other".
    request = HttpRequest(
        "GET",
        "/v1/models",
        headers=[("Authorization", f"Bearer {FAKE_TOKEN}"), ("Authorization", "Bearer other")],
    )
    reset_upstream(mock_upstream)
    assert both(server, lambda_module, shape, request) == (401, 401)
    assert upstream_requests(mock_upstream) == []


def test_a_json_content_type_among_two_keeps_the_json_limit(
    server: RunningServer, lambda_module: ModuleType, shape: Shape
) -> None:
    # A server read the last copy (text/plain): a JSON body past MAX_JSON_BYTES went through.
    body = json.dumps({"model": "gpt-4o-mini", "messages": [], "pad": "x" * 2 * MAX_JSON})
    request = HttpRequest(
        "POST",
        "/v1/chat/completions",
        headers=[
            ("Authorization", f"Bearer {FAKE_TOKEN}"),
            ("Content-Type", "application/json"),
            ("Content-Type", "text/plain"),
        ],
        body=body.encode(),
    )
    assert both(server, lambda_module, shape, request) == (413, 413)


def test_a_json_body_labelled_as_text_keeps_the_json_limit(
    server: RunningServer, lambda_module: ModuleType, shape: Shape
) -> None:
    # ALLOWED_MODELS reads the model from a body shaped like JSON whatever its label, so
    # the label alone must not lift MAX_JSON_BYTES off what is parsed (before: 200 both).
    body = json.dumps({"model": "gpt-4o-mini", "messages": [], "pad": "x" * 2 * MAX_JSON})
    request = HttpRequest(
        "POST",
        "/v1/chat/completions",
        headers=[("Authorization", f"Bearer {FAKE_TOKEN}"), ("Content-Type", "text/plain")],
        body=body.encode(),
    )
    assert both(server, lambda_module, shape, request) == (413, 413)


def test_a_compressed_body_stays_unreadable_whatever_encoding_follows(
    server: RunningServer, lambda_module: ModuleType, shape: Shape, mock_upstream: RunningServer
) -> None:
    # `gzip` then `identity`: the upstream gets both and inflates; a server read the last
    # copy, took the body for plain, and let the model in the path through ALLOWED_MODELS
    # without a look at a body it could not read.
    body = gzip.compress(json.dumps({"contents": [{"parts": [{"text": "hi"}]}]}).encode())
    request = HttpRequest(
        "POST",
        "/gemini/v1beta/models/gemini-test:generateContent",
        headers=[
            ("x-goog-api-key", FAKE_TOKEN),
            ("Content-Type", "application/octet-stream"),
            ("Content-Encoding", "gzip"),
            ("Content-Encoding", "identity"),
        ],
        body=body,
    )
    reset_upstream(mock_upstream)
    # PolicyRefused: a 400 in Gemini's shape.
    assert both(server, lambda_module, shape, request) == (400, 400)
    assert upstream_requests(mock_upstream) == []


# ---- the path: decoded once, as AWS decodes it, never twice --------------------------------

# The caller asks for a file whose name holds a literal `%2F`: `a%252Fb` on the wire.
RAW_PATH = "/v1/echo/a%252Fb"
ONCE_DECODED = "/v1/echo/a%2Fb"


def _payload_v2(request: HttpRequest) -> dict[str, Any]:
    event = function_url(request)
    event["rawPath"] = RAW_PATH  # as sent; requestContext.http.path is decoded once
    return event


def _rest_api(request: HttpRequest) -> dict[str, Any]:
    return api_gateway_v1(request)  # `path` and `proxy` decoded once by API Gateway


@pytest.mark.parametrize("build", [_payload_v2, _rest_api], ids=["function-url", "rest-api"])
def test_an_encoded_percent_in_the_path_reaches_upstream_as_on_a_server(
    server: RunningServer,
    lambda_module: ModuleType,
    mock_upstream: RunningServer,
    build: Callable[[HttpRequest], dict[str, Any]],
) -> None:
    # Mangum decodes the path AWS already decoded: `%252F` became a `/` on the upstream
    # (and `%25252e%25252e` a 400 for `..` the caller never sent).
    reset_upstream(mock_upstream)
    on_server = httpx.get(
        server.url + RAW_PATH, headers={"authorization": f"Bearer {FAKE_TOKEN}"}, trust_env=False
    )
    assert on_server.status_code == 200
    request = HttpRequest("GET", ONCE_DECODED, headers=[("Authorization", f"Bearer {FAKE_TOKEN}")])
    status, _, body, _ = call(lambda_module, build(request))
    assert status == 200, body
    server_seen, lambda_seen = (r["raw_path"] for r in upstream_requests(mock_upstream))
    assert server_seen == RAW_PATH
    assert lambda_seen == server_seen
