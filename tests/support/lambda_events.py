"""Lambda events in the shapes AWS sends them (as recorded in AWS's docs and SAM's
`sam local generate-event` samples), built from one plain request description.

- API Gateway REST API (payload 1.0): `resource`, decoded single and multi-value query
  parameters, headers as sent plus `multiValueHeaders`, `requestContext.identity`.
- API Gateway HTTP API and Function URLs (payload 2.0): `rawPath`, `rawQueryString`,
  lower-case headers with repeats comma-joined, cookies split out.
- ALB: `requestContext.elb`; query values URL-encoded as received; with multi-value
  headers turned on, only the `multiValue*` fields.
"""

from __future__ import annotations

import base64
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote

SOURCE_IP = "203.0.113.7"
TEXT_TYPES = ("text/", "application/json")


@dataclass
class HttpRequest:
    method: str = "GET"
    path: str = "/health"
    query: list[tuple[str, str]] = field(default_factory=list)  # decoded pairs, in order
    headers: list[tuple[str, str]] = field(default_factory=list)  # as the client sent them
    body: bytes = b""

    @property
    def raw_query(self) -> str:
        return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in self.query)

    def body_fields(self) -> dict[str, Any]:
        content_type = dict((k.lower(), v) for k, v in self.headers).get("content-type", "")
        if not self.body:
            return {"body": None, "isBase64Encoded": False}
        if content_type.startswith(TEXT_TYPES):
            return {"body": self.body.decode(), "isBase64Encoded": False}
        return {"body": base64.b64encode(self.body).decode(), "isBase64Encoded": True}


def _multi(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for name, value in pairs:
        grouped.setdefault(name, []).append(value)
    return grouped


def api_gateway_v1(request: HttpRequest, stage: str = "prod") -> dict[str, Any]:
    host = "abc123defg.execute-api.eu-west-1.amazonaws.com"
    headers = [
        ("Host", host),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Port", "443"),
        ("X-Forwarded-For", SOURCE_IP),
        *request.headers,
    ]
    multi_query = _multi(request.query)
    return {
        "resource": "/{proxy+}",
        "path": request.path,
        "httpMethod": request.method,
        "headers": {name: values[-1] for name, values in _multi(headers).items()},
        "multiValueHeaders": _multi(headers),
        "queryStringParameters": {k: v[-1] for k, v in multi_query.items()} or None,
        "multiValueQueryStringParameters": multi_query or None,
        "pathParameters": {"proxy": request.path.lstrip("/")},
        "stageVariables": None,
        "requestContext": {
            "resourceId": "a1b2c3",
            "resourcePath": "/{proxy+}",
            "httpMethod": request.method,
            "extendedRequestId": "Bq8dTFQrDoEFZ_Q=",
            "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime()),
            "path": f"/{stage}{request.path}",
            "accountId": "123456789012",
            "protocol": "HTTP/1.1",
            "stage": stage,
            "domainPrefix": "abc123defg",
            "requestTimeEpoch": int(time.time() * 1000),
            "requestId": str(uuid.uuid4()),
            "identity": {"sourceIp": SOURCE_IP, "userAgent": "test", "accessKey": None},
            "domainName": host,
            "apiId": "abc123defg",
        },
        **request.body_fields(),
    }


def payload_v2(request: HttpRequest, host: str) -> dict[str, Any]:
    headers: dict[str, str] = {
        "host": host,
        "x-forwarded-proto": "https",
        "x-forwarded-port": "443",
        "x-forwarded-for": SOURCE_IP,
    }
    cookies: list[str] = []
    for name, value in request.headers:
        if name.lower() == "cookie":
            cookies.extend(part.strip() for part in value.split(";"))
        elif name.lower() in headers:
            headers[name.lower()] += f",{value}"
        else:
            headers[name.lower()] = value
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": quote(request.path, safe="/%:@"),
        "rawQueryString": request.raw_query,
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": host.split(".")[0],
            "domainName": host,
            "domainPrefix": host.split(".")[0],
            "http": {
                "method": request.method,
                "path": request.path,
                "protocol": "HTTP/1.1",
                "sourceIp": SOURCE_IP,
                "userAgent": headers.get("user-agent", "test"),
            },
            "requestId": str(uuid.uuid4()),
            "routeKey": "$default",
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime()),
            "timeEpoch": int(time.time() * 1000),
        },
        **request.body_fields(),
    }
    if event["body"] is None:
        del event["body"]
    if cookies:
        event["cookies"] = cookies
    if request.query:
        event["queryStringParameters"] = {k: ",".join(v) for k, v in _multi(request.query).items()}
    return event


def api_gateway_v2(request: HttpRequest) -> dict[str, Any]:
    return payload_v2(request, "abc123defg.execute-api.eu-west-1.amazonaws.com")


def function_url(request: HttpRequest) -> dict[str, Any]:
    return payload_v2(request, "abcdefghijklmnopqrstuvwxyz012345.lambda-url.eu-west-1.on.aws")


def alb(request: HttpRequest, multi_value: bool = False) -> dict[str, Any]:
    headers = [
        ("host", "llm-proxy-123456.eu-west-1.elb.amazonaws.com"),
        ("x-forwarded-for", SOURCE_IP),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-port", "443"),
        *((k.lower(), v) for k, v in request.headers),
    ]
    query = [(quote(k, safe=""), quote(v, safe="")) for k, v in request.query]
    event: dict[str, Any] = {
        "requestContext": {
            "elb": {
                "targetGroupArn": "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/llm-proxy/6d0ecf831eec9f09"
            }
        },
        "httpMethod": request.method,
        "path": request.path,
        **request.body_fields(),
    }
    if event["body"] is None:
        event["body"] = ""
    if multi_value:
        event["multiValueHeaders"] = _multi(headers)
        event["multiValueQueryStringParameters"] = _multi(query)
    else:
        event["headers"] = dict(headers)
        event["queryStringParameters"] = dict(query)
    return event


EVENT_SHAPES = {
    "api_gateway_v1": api_gateway_v1,
    "api_gateway_v2": api_gateway_v2,
    "alb": alb,
    "alb_multi_value": lambda request: alb(request, multi_value=True),
    "function_url": function_url,
}


def parse_query(raw: str) -> list[tuple[str, str]]:
    return parse_qsl(raw, keep_blank_values=True)
