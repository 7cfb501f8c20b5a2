"""Function URL events (payload format 2.0) in, streamed replies' JSON prelude out."""

from __future__ import annotations

import json
from base64 import b64decode
from typing import Any
from urllib.parse import unquote

from handlers.aws.runtime_api import PRELUDE_DELIMITER


def scope_from_function_url_event(event: dict[str, Any]) -> dict[str, Any]:
    """ASGI scope of a Function URL event (payload format 2.0); the path stays percent-encoded
    in raw_path, as the caller sent it."""
    http = event["requestContext"]["http"]
    raw_path = event.get("rawPath") or http.get("path") or "/"
    headers = [(k.lower().encode(), v.encode()) for k, v in (event.get("headers") or {}).items()]
    if event.get("cookies"):
        headers.append((b"cookie", "; ".join(event["cookies"]).encode()))
    host = (event.get("headers") or {}).get("host", "lambda-url")
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": http["method"],
        "scheme": "https",
        "path": unquote(raw_path),
        "raw_path": raw_path.encode(),
        "query_string": (event.get("rawQueryString") or "").encode(),
        "root_path": "",
        "headers": headers,
        "client": (http.get("sourceIp", ""), 0),
        "server": (host, 443),
        "aws.event": event,
    }


def request_body(event: dict[str, Any]) -> bytes:
    body = event.get("body") or ""
    return b64decode(body) if event.get("isBase64Encoded") else body.encode()


def prelude(status: int, raw_headers: list[tuple[bytes, bytes]]) -> bytes:
    """Function URLs take headers as a JSON object (repeats joined) and cookies apart."""
    headers: dict[str, str] = {}
    cookies: list[str] = []
    for raw_name, raw_value in raw_headers:
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        if name == "set-cookie":
            cookies.append(value)
        else:
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
    document = {"statusCode": status, "headers": headers, "cookies": cookies}
    return json.dumps(document).encode() + PRELUDE_DELIMITER
