"""AWS Lambda, played by the test: Function URL and REST API events, a context object, and
a fake Runtime API for runtimes that poll for work and stream their reply.

Event shapes:
- Lambda Function URL (payload format 2.0): raw path and query, lower-case headers with
  cookies split out, the body base64-encoded unless it is text.
- API Gateway REST API proxy integration (payload 1.0), as a `ResponseTransferMode: STREAM`
  integration sends it: header names as sent, in `headers` (last value) and
  `multiValueHeaders` (all), the path and query decoded (`path` without the stage,
  `requestContext.path` with it), every body base64-encoded (the API declares
  `BinaryMediaTypes: */*`, so binary bodies survive).
Streaming reply (aws-lambda-nodejs-runtime-interface-client, HttpResponseStream): a JSON
prelude with statusCode/headers (and cookies, or multiValueHeaders for a REST API), eight
NUL bytes, then the body as it is produced.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import queue
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from tests.conformance.adapters import CLIENT_IP, Reply, Request
from tests.support.servers import serve_in_thread

_TEXT_TYPES = ("text/", "application/json", "application/x-www-form-urlencoded")
PRELUDE_END = b"\0" * 8


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
    invoked_function_arn: str = "arn:aws:lambda:eu-west-1:123456789012:function:llm-proxy"
    memory_limit_in_mb: int = 512
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = "/aws/lambda/llm-proxy"
    log_stream_name: str = "2026/01/01/[$LATEST]0123456789abcdef"
    deadline: float = field(default_factory=lambda: time.time() + 300)

    def get_remaining_time_in_millis(self) -> int:
        return int((self.deadline - time.time()) * 1000)


def reply_from_buffered_result(result: dict[str, Any], sent_at: float) -> Reply:
    """A Function URL response object (what a buffered handler returns) as a Reply."""
    arrived = time.monotonic()
    headers = [(k.lower(), str(v)) for k, v in (result.get("headers") or {}).items()]
    for name, values in (result.get("multiValueHeaders") or {}).items():
        headers.extend((name.lower(), str(v)) for v in values)
    headers.extend(("set-cookie", c) for c in result.get("cookies") or [])
    raw = result.get("body") or ""
    body = base64.b64decode(raw) if result.get("isBase64Encoded") else raw.encode()
    return Reply(int(result["statusCode"]), headers, [(arrived, body)] if body else [], sent_at)


@dataclass
class _Invocation:
    event: dict[str, Any]
    sent_at: float
    done: Future[Reply] = field(default_factory=Future)
    # For a front end that relays the reply as it comes: ("start", (status, headers)),
    # then ("data", bytes) for each piece, then ("end", None).
    parts: queue.Queue[tuple[str, Any]] | None = None

    def publish(self, kind: str, value: Any = None) -> None:
        if self.parts is not None:
            self.parts.put((kind, value))


class FakeRuntimeApi:
    """The Lambda Runtime API on loopback: hands out queued events, collects replies
    (streamed or buffered) with the arrival time of every body piece."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[_Invocation] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: dict[str, _Invocation] = {}
        self.errors: list[dict[str, Any]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                self._loop = asyncio.get_running_loop()
                self._queue = asyncio.Queue()
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        path: str = scope["path"]
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        if path.endswith("/invocation/next"):
            assert self._queue is not None
            invocation_or_none = await _next_unless_gone(self._queue, receive)
            if invocation_or_none is None:
                return  # the runtime stopped while it waited for work
            invocation = invocation_or_none
            request_id = invocation.event["requestContext"]["requestId"]
            self._pending[request_id] = invocation
            await _respond(
                send,
                200,
                json.dumps(invocation.event).encode(),
                [
                    (b"lambda-runtime-aws-request-id", request_id.encode()),
                    (
                        b"lambda-runtime-deadline-ms",
                        str(int(time.time() * 1000) + 300_000).encode(),
                    ),
                    (
                        b"lambda-runtime-invoked-function-arn",
                        LambdaContext.invoked_function_arn.encode(),
                    ),
                    (b"lambda-runtime-trace-id", b"Root=1-00000000-000000000000000000000000"),
                ],
            )
        elif path.endswith("/response"):
            request_id = path.split("/")[-2]
            invocation = self._pending.pop(request_id)
            streaming = headers.get("lambda-runtime-function-response-mode") == "streaming"
            reply = await (
                _read_streamed(receive, invocation)
                if streaming
                else _read_buffered(receive, invocation)
            )
            await _respond(send, 202, b'{"status":"OK"}')
            invocation.done.set_result(reply)
        elif path.endswith("/error"):
            body = await _read_all(receive)
            self.errors.append(
                {"path": path, "headers": headers, "body": body.decode(errors="replace")}
            )
            request_id = path.split("/")[-2]
            invocation_or_none = self._pending.pop(request_id, None)
            await _respond(send, 202, b'{"status":"OK"}')
            if invocation_or_none is not None:
                invocation_or_none.done.set_exception(
                    RuntimeError(f"function error: {body[:500]!r}")
                )
        else:
            await _respond(send, 404, b"{}")

    def invoke(self, event: dict[str, Any], timeout: float = 30) -> Reply:
        assert self._loop is not None and self._queue is not None
        invocation = _Invocation(event, time.monotonic())
        self._loop.call_soon_threadsafe(self._queue.put_nowait, invocation)
        return invocation.done.result(timeout=timeout)

    def invoke_streaming(self, event: dict[str, Any]) -> queue.Queue[tuple[str, Any]]:
        """Hand out `event`; the reply's parts arrive on the returned queue as Lambda
        receives them (what a Function URL or API Gateway relays to its caller)."""
        assert self._loop is not None and self._queue is not None
        invocation = _Invocation(event, time.monotonic(), parts=queue.Queue())
        invocation.done.add_done_callback(
            lambda done: invocation.publish("end", None if done.exception() else "ok")
        )
        self._loop.call_soon_threadsafe(self._queue.put_nowait, invocation)
        assert invocation.parts is not None
        return invocation.parts


async def _respond(
    send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), *(headers or [])],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _next_unless_gone(work: asyncio.Queue[_Invocation], receive: Any) -> _Invocation | None:
    """The next queued invocation, or None if the runtime's connection closes first."""

    async def disconnected() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    get = asyncio.ensure_future(work.get())
    gone = asyncio.ensure_future(disconnected())
    await asyncio.wait({get, gone}, return_when=asyncio.FIRST_COMPLETED)
    gone.cancel()
    if get.done():
        return get.result()
    get.cancel()
    return None


async def _read_all(receive: Any) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def _read_buffered(receive: Any, invocation: _Invocation) -> Reply:
    reply = reply_from_buffered_result(json.loads(await _read_all(receive)), invocation.sent_at)
    invocation.publish("start", (reply.status, reply.headers))
    invocation.publish("data", reply.body)
    return reply


async def _read_streamed(receive: Any, invocation: _Invocation) -> Reply:
    pending = b""
    prelude: dict[str, Any] | None = None
    chunks: list[tuple[float, bytes]] = []
    while True:
        message = await receive()
        data = message.get("body", b"")
        if prelude is None:
            pending += data
            if PRELUDE_END in pending:
                raw, _, rest = pending.partition(PRELUDE_END)
                prelude = json.loads(raw)
                invocation.publish("start", _status_and_headers(prelude))
                if rest:
                    chunks.append((time.monotonic(), rest))
                    invocation.publish("data", rest)
        elif data:
            chunks.append((time.monotonic(), data))
            invocation.publish("data", data)
        if not message.get("more_body"):
            break
    if prelude is None:
        raise RuntimeError(f"streamed reply without a prelude: {pending[:200]!r}")
    status, headers = _status_and_headers(prelude)
    return Reply(status, headers, chunks, invocation.sent_at)


def _status_and_headers(prelude: dict[str, Any]) -> tuple[int, list[tuple[str, str]]]:
    headers = [(k.lower(), str(v)) for k, v in (prelude.get("headers") or {}).items()]
    for name, values in (prelude.get("multiValueHeaders") or {}).items():
        headers.extend((name.lower(), str(v)) for v in values)
    headers.extend(("set-cookie", c) for c in prelude.get("cookies") or [])
    return int(prelude.get("statusCode", 200)), headers


@contextlib.contextmanager
def fake_runtime_api() -> Iterator[tuple[FakeRuntimeApi, str]]:
    """A FakeRuntimeApi on a free loopback port: (api, "127.0.0.1:PORT")."""
    api = FakeRuntimeApi()
    # Backstop: a runtime's last long poll for /next that is still open when we stop.
    with serve_in_thread(api, timeout_graceful_shutdown=1) as server:  # type: ignore[arg-type]
        yield api, f"127.0.0.1:{server.port}"
