"""The event sources the streaming runtime answers, one small class each (Mangum's shape).

Each class says whether an event is its kind (`infer`), builds the ASGI request from it
(`scope`, `body`) and writes the JSON prelude that goes before a streamed body
(`prelude`). Both sources read the same prelude + eight NUL bytes + body stream; they
differ in the request they hand us and in how repeated response headers are spelled.

- `FunctionUrlEvent`: a Function URL with `InvokeMode: RESPONSE_STREAM` (payload 2.0).
- `RestApiEvent`: an API Gateway REST API whose Lambda proxy integration has
  `ResponseTransferMode: STREAM` (the usual proxy event, payload 1.0).

Adding a source is one class here and one entry in `EVENT_SOURCES`.
"""

from __future__ import annotations

import json
from base64 import b64decode
from typing import Any, ClassVar
from urllib.parse import quote, unquote

from handlers.aws.runtime_api import PRELUDE_DELIMITER

Event = dict[str, Any]
RawHeaders = list[tuple[bytes, bytes]]


class EventSource:
    """One kind of Lambda event that carries an HTTP request."""

    # For the refusal of an event no source claims.
    description: ClassVar[str]

    def __init__(self, event: Event) -> None:
        self.event = event

    @classmethod
    def infer(cls, event: Event) -> bool:
        raise NotImplementedError

    @property
    def scope(self) -> dict[str, Any]:
        raise NotImplementedError

    @property
    def body(self) -> bytes:
        body = self.event.get("body") or ""
        return b64decode(body) if self.event.get("isBase64Encoded") else body.encode()

    def prelude(self, status: int, raw_headers: RawHeaders) -> bytes:
        raise NotImplementedError


def _http_scope(
    *,
    method: str,
    path: str,
    raw_path: bytes | None,
    query_string: bytes,
    headers: RawHeaders,
    client_ip: str,
    event: Event,
) -> dict[str, Any]:
    host = next((v.decode("latin-1") for k, v in headers if k == b"host"), "lambda")
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "https",
        "path": path,
        "raw_path": raw_path,
        "query_string": query_string,
        "root_path": "",
        "headers": headers,
        # Set by AWS from the connection it accepted; CLIENT_IP_SOURCE=aws reads it here.
        "client": (client_ip, 0),
        "server": (host, 443),
        "aws.event": event,
    }


def _decoded_headers(raw_headers: RawHeaders) -> list[tuple[str, str]]:
    return [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in raw_headers]


class FunctionUrlEvent(EventSource):
    """A Function URL request (payload format 2.0): raw path and query as the caller sent
    them, headers lower-case with repeats comma-joined, cookies apart."""

    description = "Function URL events (payload format 2.0)"

    @classmethod
    def infer(cls, event: Event) -> bool:
        context = event.get("requestContext")
        return event.get("version") == "2.0" and isinstance(context, dict) and "http" in context

    @property
    def scope(self) -> dict[str, Any]:
        event = self.event
        http = event["requestContext"]["http"]
        raw_path = event.get("rawPath") or http.get("path") or "/"
        headers = [
            (k.lower().encode(), v.encode()) for k, v in (event.get("headers") or {}).items()
        ]
        if event.get("cookies"):
            headers.append((b"cookie", "; ".join(event["cookies"]).encode()))
        return _http_scope(
            method=http["method"],
            # The path stays percent-encoded in raw_path, as the caller sent it.
            path=unquote(raw_path),
            raw_path=raw_path.encode(),
            query_string=(event.get("rawQueryString") or "").encode(),
            headers=headers,
            client_ip=http.get("sourceIp", ""),
            event=event,
        )

    def prelude(self, status: int, raw_headers: RawHeaders) -> bytes:
        """Headers as a JSON object (repeats comma-joined), cookies apart."""
        headers: dict[str, str] = {}
        cookies: list[str] = []
        for name, value in _decoded_headers(raw_headers):
            if name == "set-cookie":
                cookies.append(value)
            else:
                headers[name] = f"{headers[name]}, {value}" if name in headers else value
        document = {"statusCode": status, "headers": headers, "cookies": cookies}
        return json.dumps(document).encode() + PRELUDE_DELIMITER


class RestApiEvent(EventSource):
    """An API Gateway REST API proxy request (payload 1.0), as a STREAM integration sends it.

    API Gateway hands over the path and the query decoded, so the query string is rebuilt
    from `multiValueQueryStringParameters` (values in order, names in first-seen order) and
    the path is encoded again by the proxy (no raw_path).
    """

    description = "API Gateway REST API proxy events (payload 1.0)"

    @classmethod
    def infer(cls, event: Event) -> bool:
        context = event.get("requestContext")
        return (
            "resource" in event
            and "httpMethod" in event
            and isinstance(context, dict)
            and "elb" not in context  # ALBs send the same fields, but cannot stream
        )

    @property
    def scope(self) -> dict[str, Any]:
        event = self.event
        identity = event["requestContext"].get("identity") or {}
        return _http_scope(
            method=event["httpMethod"],
            path=rest_api_path(event),
            raw_path=None,
            query_string=rest_api_query(event).encode(),
            headers=rest_api_headers(event),
            client_ip=identity.get("sourceIp") or "",
            event=event,
        )

    def prelude(self, status: int, raw_headers: RawHeaders) -> bytes:
        """Single headers in `headers`; repeated ones (Set-Cookie above all) in
        `multiValueHeaders`, which a REST API reads on the way out as on the way in."""
        grouped: dict[str, list[str]] = {}
        for name, value in _decoded_headers(raw_headers):
            grouped.setdefault(name, []).append(value)
        document: dict[str, Any] = {
            "statusCode": status,
            "headers": {k: v[0] for k, v in grouped.items() if len(v) == 1},
            "multiValueHeaders": {k: v for k, v in grouped.items() if len(v) > 1},
        }
        return json.dumps(document).encode() + PRELUDE_DELIMITER


def rest_api_path(event: Event) -> str:
    """The path within the API, without the stage or a custom domain's base path.

    `requestContext.path` starts with the stage (`/prod/v1/...`) on the execute-api host;
    `path` drops the stage there but keeps a custom domain's base path mapping
    (`/llm/v1/...`). Under a greedy `{proxy+}` resource the `proxy` path parameter is the
    part the API routed on, whatever host was called, so it wins when present.
    """
    resource = event.get("resource") or ""
    proxy = (event.get("pathParameters") or {}).get("proxy")
    if resource.endswith("/{proxy+}") and proxy is not None:
        return resource[: -len("{proxy+}")] + proxy
    return event.get("path") or "/"


def rest_api_query(event: Event) -> str:
    params = event.get("multiValueQueryStringParameters") or {
        name: [value] for name, value in (event.get("queryStringParameters") or {}).items()
    }
    return "&".join(
        f"{quote(name, safe='')}={quote(value, safe='')}"
        for name, values in params.items()
        for value in values or [""]
    )


def rest_api_headers(event: Event) -> RawHeaders:
    """Every value of every header: `multiValueHeaders` holds them all, `headers` only the
    last of each (a header found only there still counts)."""
    multi: dict[str, list[str]] = dict(event.get("multiValueHeaders") or {})
    seen = {name.lower() for name in multi}
    for name, value in (event.get("headers") or {}).items():
        if name.lower() not in seen:
            multi[name] = [value]
    return [
        (name.lower().encode(), value.encode())
        for name, values in multi.items()
        for value in values or []
    ]


EVENT_SOURCES: tuple[type[EventSource], ...] = (FunctionUrlEvent, RestApiEvent)


def event_source(event: Event) -> EventSource | None:
    """The source that claims `event`, or None for one no source knows."""
    if not isinstance(event, dict):
        return None
    for source in EVENT_SOURCES:
        if source.infer(event):
            return source(event)
    return None


def accepted_events() -> str:
    return " or ".join(source.description for source in EVENT_SOURCES)
