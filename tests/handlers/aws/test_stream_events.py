"""The streaming runtime's event sources (handlers/aws/events.py) fed events in the shapes
AWS documents: which source claims an event, the ASGI request each builds, and the
prelude each writes before a streamed body."""

from __future__ import annotations

import json
from typing import Any

import pytest

from core.access.client_ip import client_ip_rule
from handlers.aws.events import (
    FunctionUrlEvent,
    RestApiEvent,
    accepted_events,
    event_source,
)
from handlers.aws.runtime_api import PRELUDE_DELIMITER
from tests.support.lambda_events import (
    SOURCE_IP,
    HttpRequest,
    alb,
    api_gateway_v1,
    api_gateway_v2,
    function_url,
)


def headers_of(scope: dict[str, Any]) -> list[tuple[str, str]]:
    return [(k.decode(), v.decode()) for k, v in scope["headers"]]


def prelude_document(raw: bytes) -> dict[str, Any]:
    assert raw.endswith(PRELUDE_DELIMITER)
    return dict(json.loads(raw[: -len(PRELUDE_DELIMITER)]))


@pytest.mark.parametrize(
    ("event", "kind"),
    [
        (function_url(HttpRequest()), FunctionUrlEvent),
        (api_gateway_v1(HttpRequest()), RestApiEvent),
        # An HTTP API also sends 2.0 events; it cannot stream, but the request is the same.
        (api_gateway_v2(HttpRequest()), FunctionUrlEvent),
    ],
    ids=["function-url", "rest-api", "http-api-v2"],
)
def test_each_event_is_claimed_by_its_source(event: dict[str, Any], kind: type) -> None:
    assert type(event_source(event)) is kind


@pytest.mark.parametrize(
    "event",
    [{"hello": "console test event"}, alb(HttpRequest()), [], {"requestContext": "x"}],
    ids=["console-test", "alb", "not-a-dict", "odd-context"],
)
def test_events_no_source_can_stream_are_not_claimed(event: Any) -> None:
    assert event_source(event) is None
    assert "Function URL" in accepted_events() and "REST API" in accepted_events()


def test_rest_api_path_drops_the_stage_that_request_context_path_carries() -> None:
    event = api_gateway_v1(HttpRequest("GET", "/v1/models"), stage="prod")
    assert event["requestContext"]["path"] == "/prod/v1/models"
    scope = RestApiEvent(event).scope
    assert scope["path"] == "/v1/models"
    assert scope["raw_path"] is None  # decoded by API Gateway: the proxy encodes it again
    assert scope["root_path"] == ""


def test_rest_api_path_drops_a_custom_domains_base_path() -> None:
    # api.example.com/llm -> the prod stage: `path` keeps the base path, the greedy
    # resource's `proxy` parameter is what the API routed on.
    event = api_gateway_v1(HttpRequest("GET", "/v1/models"))
    event["path"] = "/llm/v1/models"
    event["requestContext"]["path"] = "/llm/v1/models"
    assert RestApiEvent(event).scope["path"] == "/v1/models"


def test_rest_api_path_under_a_nested_greedy_resource_and_at_the_root() -> None:
    event = api_gateway_v1(HttpRequest("GET", "/v1/models"))
    event["resource"] = "/v1/{proxy+}"
    event["pathParameters"] = {"proxy": "models"}
    assert RestApiEvent(event).scope["path"] == "/v1/models"
    root = api_gateway_v1(HttpRequest("GET", "/"))
    root["resource"], root["pathParameters"] = "/", None
    assert RestApiEvent(root).scope["path"] == "/"


def test_rest_api_keeps_every_value_of_repeated_headers() -> None:
    request = HttpRequest(
        "GET",
        "/v1/models",
        headers=[("Accept", "text/plain"), ("X-Trace", "a"), ("X-Trace", "b"), ("Cookie", "s=1")],
    )
    event = api_gateway_v1(request)
    assert event["headers"]["X-Trace"] == "b"  # `headers` has only the last one
    headers = headers_of(RestApiEvent(event).scope)
    assert [v for k, v in headers if k == "x-trace"] == ["a", "b"]
    assert ("accept", "text/plain") in headers and ("cookie", "s=1") in headers
    assert all(k == k.lower() for k, _ in headers)
    assert RestApiEvent(event).scope["server"] == (
        "abc123defg.execute-api.eu-west-1.amazonaws.com",
        443,
    )


def test_rest_api_without_multi_value_headers_reads_headers() -> None:
    event = api_gateway_v1(HttpRequest(headers=[("X-One", "1")]))
    del event["multiValueHeaders"]
    assert ("x-one", "1") in headers_of(RestApiEvent(event).scope)


def test_rest_api_query_is_rebuilt_from_the_multi_value_parameters() -> None:
    request = HttpRequest(
        "GET",
        "/v1/echo/q",
        query=[("b", "2"), ("a", "1"), ("a", "3"), ("enc", "/ x="), ("empty", ""), ("é", "ü")],
    )
    scope = RestApiEvent(api_gateway_v1(request)).scope
    assert scope["query_string"] == b"b=2&a=1&a=3&enc=%2F%20x%3D&empty=&%C3%A9=%C3%BC"


def test_rest_api_query_from_single_values_and_none() -> None:
    event = api_gateway_v1(HttpRequest(query=[("a", "1")]))
    event["multiValueQueryStringParameters"] = None
    assert RestApiEvent(event).scope["query_string"] == b"a=1"
    event["queryStringParameters"] = None
    assert RestApiEvent(event).scope["query_string"] == b""


@pytest.mark.parametrize("build", [api_gateway_v1, function_url], ids=["rest-api", "function-url"])
def test_bodies_text_and_base64(build: Any) -> None:
    text = build(
        HttpRequest(
            "POST", "/v1/x", headers=[("content-type", "application/json")], body=b'{"a":1}'
        )
    )
    assert event_source(text).body == b'{"a":1}'  # type: ignore[union-attr]
    blob = bytes(range(256))
    binary = build(
        HttpRequest(
            "POST", "/v1/x", headers=[("content-type", "application/octet-stream")], body=blob
        )
    )
    assert binary["isBase64Encoded"] is True
    assert event_source(binary).body == blob  # type: ignore[union-attr]
    empty = build(HttpRequest("GET", "/v1/x"))
    assert event_source(empty).body == b""  # type: ignore[union-attr]


@pytest.mark.parametrize("build", [api_gateway_v1, function_url], ids=["rest-api", "function-url"])
def test_client_ip_is_what_aws_saw_not_a_forwarded_header(build: Any) -> None:
    event = build(HttpRequest(headers=[("x-forwarded-for", "198.51.100.66")]))
    scope = event_source(event).scope  # type: ignore[union-attr]
    assert scope["client"] == (SOURCE_IP, 0)
    assert client_ip_rule("aws")(scope) == SOURCE_IP


RESPONSE_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"set-cookie", b"a=1"),
    (b"set-cookie", b"b=2"),
    (b"vary", b"origin"),
    (b"vary", b"accept"),
]


def test_rest_api_prelude_puts_repeated_headers_in_multi_value_headers() -> None:
    source = RestApiEvent(api_gateway_v1(HttpRequest()))
    document = prelude_document(source.prelude(201, RESPONSE_HEADERS))
    assert document == {
        "statusCode": 201,
        "headers": {"content-type": "text/event-stream"},
        "multiValueHeaders": {"set-cookie": ["a=1", "b=2"], "vary": ["origin", "accept"]},
    }


def test_function_url_prelude_joins_repeats_and_lists_cookies() -> None:
    source = FunctionUrlEvent(function_url(HttpRequest()))
    document = prelude_document(source.prelude(200, RESPONSE_HEADERS))
    assert document == {
        "statusCode": 200,
        "headers": {"content-type": "text/event-stream", "vary": "origin, accept"},
        "cookies": ["a=1", "b=2"],
    }


def test_function_url_scope_keeps_the_raw_path_and_query() -> None:
    event = function_url(HttpRequest("GET", "/v1/echo/a%2Fb", query=[("k", "a b")]))
    scope = FunctionUrlEvent(event).scope
    assert scope["raw_path"] == b"/v1/echo/a%2Fb"
    assert scope["path"] == "/v1/echo/a/b"
    assert scope["query_string"] == b"k=a%20b"
