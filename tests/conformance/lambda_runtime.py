"""AWS Lambda's side of a conformance request: Function URL and REST API events, a context
object, and a function's reply (buffered result, or a streamed one as the fake Runtime API
in tests/support/lambda_runtime_api.py received it) turned into a conformance Reply.

Event shapes:
- Lambda Function URL (payload format 2.0): raw path and query, lower-case headers with
  cookies split out, the body base64-encoded unless it is text.
- API Gateway REST API proxy integration (payload 1.0), as a `ResponseTransferMode: STREAM`
  integration sends it: header names as sent, in `headers` (last value) and
  `multiValueHeaders` (all), the path and query decoded (`path` without the stage,
  `requestContext.path` with it), every body base64-encoded (the API declares
  `BinaryMediaTypes: */*`, so binary bodies survive).
A reply (a buffered result, or a streamed reply's prelude) carries statusCode and headers,
and cookies or, for a REST API, multiValueHeaders.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from tests.conformance.adapters import CLIENT_IP, Reply, Request
from tests.support.lambda_runtime_api import FUNCTION_ARN
from tests.support.lambda_runtime_api import Reply as StreamedReply

_TEXT_TYPES = ("text/", "application/json", "application/x-www-form-urlencoded")


def function_url_event(request: Request, front_headers: dict[str, str]) -> dict[str, Any]:
    path, _, query = request.path.partition("?")
    headers: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in {**front_headers, **request.headers}.items():
        if name.lower() == "cookie":
            cookies.extend(c.strip() for c in value.split(";"))
        else:
            headers[name.lower()] = value
    headers.setdefault("host", "abcdefg.lambda-url.eu-west-1.on.aws")
    is_text = headers.get("content-type", "").startswith(_TEXT_TYPES)
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": headers,
        "requestContext": {
            "accountId": "anonymous",
            "apiId": "abcdefg",
            "domainName": headers["host"],
            "domainPrefix": "abcdefg",
            "http": {
                "method": request.method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": CLIENT_IP,
                "userAgent": headers.get("user-agent", "conformance"),
            },
            "requestId": str(uuid.uuid4()),
            "routeKey": "$default",
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime()),
            "timeEpoch": int(time.time() * 1000),
        },
        "isBase64Encoded": not is_text,
    }
    if cookies:
        event["cookies"] = cookies
    if query:
        parsed: dict[str, str] = {}
        for part in query.split("&"):
            name, _, value = part.partition("=")
            parsed[name] = f"{parsed[name]},{value}" if name in parsed else value
        event["queryStringParameters"] = parsed
    if request.body:
        event["body"] = (
            request.body.decode() if is_text else base64.b64encode(request.body).decode()
        )
    return event


def rest_api_event(
    request: Request, front_headers: dict[str, str], stage: str = "prod"
) -> dict[str, Any]:
    path, _, query = request.path.partition("?")
    host = "abc123defg.execute-api.eu-west-1.amazonaws.com"
    sent = [
        ("Host", host),
        ("X-Forwarded-Port", "443"),
        *front_headers.items(),
        *request.headers.items(),
    ]
    multi_headers: dict[str, list[str]] = {}
    for name, value in sent:
        multi_headers.setdefault(name, []).append(value)
    multi_query: dict[str, list[str]] = {}
    for part in query.split("&") if query else []:
        name, _, value = part.partition("=")
        multi_query.setdefault(unquote(name), []).append(unquote(value))
    decoded_path = unquote(path)
    return {
        "resource": "/{proxy+}",
        "path": decoded_path,
        "httpMethod": request.method,
        "headers": {name: values[-1] for name, values in multi_headers.items()},
        "multiValueHeaders": multi_headers,
        "queryStringParameters": {k: v[-1] for k, v in multi_query.items()} or None,
        "multiValueQueryStringParameters": multi_query or None,
        "pathParameters": {"proxy": decoded_path.lstrip("/")},
        "stageVariables": None,
        "requestContext": {
            "resourceId": "a1b2c3",
            "resourcePath": "/{proxy+}",
            "httpMethod": request.method,
            "extendedRequestId": "Bq8dTFQrDoEFZ_Q=",
            "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime()),
            "path": f"/{stage}{decoded_path}",
            "accountId": "123456789012",
            "protocol": "HTTP/1.1",
            "stage": stage,
            "domainPrefix": "abc123defg",
            "requestTimeEpoch": int(time.time() * 1000),
            "requestId": str(uuid.uuid4()),
            "identity": {
                "sourceIp": CLIENT_IP,
                "userAgent": request.headers.get("user-agent", "conformance"),
                "accessKey": None,
                "apiKey": None,
                "caller": None,
                "user": None,
            },
            "domainName": host,
            "apiId": "abc123defg",
        },
        "body": base64.b64encode(request.body).decode() if request.body else None,
        "isBase64Encoded": bool(request.body),
    }


@dataclass
class LambdaContext:
    function_name: str = "llm-proxy"
    function_version: str = "$LATEST"
    invoked_function_arn: str = FUNCTION_ARN
    memory_limit_in_mb: int = 512
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = "/aws/lambda/llm-proxy"
    log_stream_name: str = "2026/01/01/[$LATEST]0123456789abcdef"
    deadline: float = field(default_factory=lambda: time.time() + 300)

    def get_remaining_time_in_millis(self) -> int:
        return int((self.deadline - time.time()) * 1000)


def status_and_headers(reply: dict[str, Any]) -> tuple[int, list[tuple[str, str]]]:
    """The status and header lines of a buffered result or a streamed reply's prelude."""
    headers = [(k.lower(), str(v)) for k, v in (reply.get("headers") or {}).items()]
    for name, values in (reply.get("multiValueHeaders") or {}).items():
        headers.extend((name.lower(), str(v)) for v in values)
    headers.extend(("set-cookie", c) for c in reply.get("cookies") or [])
    return int(reply.get("statusCode", 200)), headers


def reply_from_buffered_result(result: dict[str, Any], sent_at: float) -> Reply:
    """A Function URL response object (what a buffered handler returns) as a Reply."""
    arrived = time.monotonic()
    status, headers = status_and_headers(result)
    raw = result.get("body") or ""
    body = base64.b64decode(raw) if result.get("isBase64Encoded") else raw.encode()
    return Reply(status, headers, [(arrived, body)] if body else [], sent_at)


def reply_from_stream(received: StreamedReply, sent_at: float) -> Reply:
    """A streamed reply as the fake Runtime API received it, as a Reply."""
    if received.error is not None:
        raise RuntimeError(f"function error: {json.dumps(received.error)[:500]}")
    if not received.prelude:
        raise RuntimeError(f"streamed reply without a prelude: {received.body[:200]!r}")
    status, headers = status_and_headers(received.prelude)
    return Reply(status, headers, received.chunks, sent_at)
