"""AWS's side of the Lambda Runtime API, played by the test on a loopback socket.

Plain HTTP/1.1 read by hand, because the parts under test are below what HTTP servers
hand an app: chunk boundaries (when each piece arrived) and request trailers (where a
streamed reply reports a failure). It hands out queued events with a deadline, records
streamed and buffered replies, error reports and init errors, and can hang up on a reply
mid-stream the way a vanished caller would.

A reply can also be followed as it arrives (`invoke_streaming`, or `on_part` to
`submit`), the way a Function URL or API Gateway relays it to its caller: ("prelude",
the JSON prelude) once, ("data", bytes) for each body piece, then ("end", the Reply).

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
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

PRELUDE_END = b"\0" * 8
FUNCTION_ARN = "arn:aws:lambda:eu-west-1:123456789012:function:llm-proxy"

# ("prelude", dict), ("data", bytes), ("end", Reply): a reply as it arrives.
Part = tuple[str, Any]


@dataclass
class Reply:
    """One invocation's reply as Lambda received it."""

    request_id: str
    sent_at: float  # monotonic time the event was handed out
    request_headers: dict[str, str] = field(default_factory=dict)
    prelude: dict[str, Any] = field(default_factory=dict)
    chunks: list[tuple[float, bytes]] = field(default_factory=list)  # (arrival, bytes)
    trailers: dict[str, str] = field(default_factory=dict)
    finished_at: float = 0.0
    cut: bool = False  # we hung up mid-stream
    error: dict[str, Any] | None = None  # posted to /invocation/{id}/error

    @property
    def status(self) -> int:
        return int(self.prelude["statusCode"])

    @property
    def headers(self) -> dict[str, str]:
        return dict(self.prelude.get("headers") or {})

    @property
    def body(self) -> bytes:
        return b"".join(data for _, data in self.chunks)

    @property
    def error_type(self) -> str | None:
        return self.trailers.get("lambda-runtime-function-error-type")

    @property
    def error_body(self) -> dict[str, Any]:
        raw = self.trailers.get("lambda-runtime-function-error-body", "")
        return json.loads(base64.b64decode(raw)) if raw else {}


@dataclass
class _Pending:
    event: dict[str, Any]
    deadline_in: float
    cut_after_bytes: int | None
    future: Future[Reply]
    on_part: Callable[[str, Any], None] | None = None
    reply: Reply | None = None

    def publish(self, kind: str, value: Any) -> None:
        if self.on_part is not None:
            self.on_part(kind, value)


class FakeRuntimeApi:
    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._queue: asyncio.Queue[_Pending] | None = None
        self._server: asyncio.Server | None = None
        self._in_flight: dict[str, _Pending] = {}
        self.init_errors: list[dict[str, Any]] = []
        self.next_calls = 0  # how many times the runtime asked for work
        self.first_next_at: float | None = None  # monotonic: the runtime was ready for work
        self.port = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(timeout=10)

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    async def _listen(self) -> None:
        self._queue = asyncio.Queue()
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def submit(
        self,
        event: dict[str, Any],
        *,
        deadline_in: float = 300,
        cut_after_bytes: int | None = None,
        on_part: Callable[[str, Any], None] | None = None,
    ) -> Future[Reply]:
        """Queue `event` for the runtime's next poll; `on_part(kind, value)` (called on
        the fake's own thread) follows the reply as it arrives."""
        future: Future[Reply] = Future()
        pending = _Pending(event, deadline_in, cut_after_bytes, future, on_part)
        assert self._queue is not None
        self._loop.call_soon_threadsafe(self._queue.put_nowait, pending)
        return future

    def invoke(self, event: dict[str, Any], *, timeout: float = 30, **options: Any) -> Reply:
        return self.submit(event, **options).result(timeout=timeout)

    def invoke_streaming(self, event: dict[str, Any], **options: Any) -> queue.Queue[Part]:
        """Hand out `event`; the reply's parts arrive on the returned queue as Lambda
        receives them (what a Function URL or API Gateway relays to its caller)."""
        parts: queue.Queue[Part] = queue.Queue()
        self.submit(event, on_part=lambda kind, value: parts.put((kind, value)), **options)
        return parts

    # ---- the HTTP side -------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # CancelledError too: stop() cancels a runtime's pending GET /next, and a handler
        # task that ends cancelled makes asyncio log a spurious error.
        with contextlib.suppress(
            ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError
        ):
            while True:
                request_line = await reader.readline()
                if not request_line:
                    break
                method, path, _ = request_line.decode().split(" ", 2)
                headers = await _read_headers(reader)
                keep_open = await self._route(method, path, headers, reader, writer)
                if not keep_open:
                    writer.transport.abort()
                    break
        writer.close()

    async def _route(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> bool:
        if method == "GET" and path.endswith("/runtime/invocation/next"):
            assert self._queue is not None
            self.next_calls += 1
            if self.first_next_at is None:
                self.first_next_at = time.monotonic()
            pending = await _next_unless_gone(self._queue, reader)
            if pending is None:
                return False  # the runtime went away while it waited for work
            request_id = str(uuid.uuid4())
            pending.reply = Reply(request_id=request_id, sent_at=time.monotonic())
            self._in_flight[request_id] = pending
            deadline_ms = int((time.time() + pending.deadline_in) * 1000)
            await _respond(
                writer,
                200,
                json.dumps(pending.event).encode(),
                {
                    "Lambda-Runtime-Aws-Request-Id": request_id,
                    "Lambda-Runtime-Deadline-Ms": str(deadline_ms),
                    "Lambda-Runtime-Invoked-Function-Arn": FUNCTION_ARN,
                    "Lambda-Runtime-Trace-Id": "Root=1-00000000-000000000000000000000000",
                },
            )
            return True
        if path.endswith("/runtime/init/error"):
            body = await _read_body(reader, headers)
            self.init_errors.append({"headers": headers, "body": json.loads(body)})
            await _respond(writer, 202, b'{"status":"OK"}')
            return True
        request_id = path.split("/")[-2]
        pending = self._in_flight.pop(request_id)
        assert pending.reply is not None
        reply = pending.reply
        reply.request_headers = headers
        if path.endswith("/error"):
            reply.error = json.loads(await _read_body(reader, headers))
            reply.error["type_header"] = headers.get("lambda-runtime-function-error-type")
            finished = True
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            finished = await _read_streamed(reader, pending)
        else:
            body = await _read_body(reader, headers)
            reply.chunks.append((time.monotonic(), body))
            pending.publish("data", body)
            finished = True
        reply.finished_at = time.monotonic()
        if finished:
            await _respond(writer, 202, b'{"status":"OK"}')
        pending.publish("end", reply)
        pending.future.set_result(reply)
        return finished


async def _next_unless_gone(
    work: asyncio.Queue[_Pending], reader: asyncio.StreamReader
) -> _Pending | None:
    """The next queued invocation, or None if the runtime's connection closes first (the
    event then waits for a runtime that is still there)."""
    get = asyncio.ensure_future(work.get())
    gone = asyncio.ensure_future(reader.read(1))  # a runtime waiting for work sends nothing
    try:
        await asyncio.wait({get, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not get.done():
            get.cancel()
        gone.cancel()
        # Let the read wind down before anything else reads from this connection.
        await asyncio.wait({gone})
    return get.result() if get.done() and not get.cancelled() else None


async def _read_headers(reader: asyncio.StreamReader) -> dict[str, str]:
    headers: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return headers


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    return await reader.readexactly(int(headers.get("content-length", "0")))


async def _read_streamed(reader: asyncio.StreamReader, pending: _Pending) -> bool:
    """Read a chunked reply as it arrives; False if we hung up on it on purpose."""
    assert pending.reply is not None
    reply = pending.reply
    before_prelude = b""
    received = 0
    while True:
        size = int((await reader.readline()).split(b";")[0], 16)
        if size == 0:
            reply.trailers = await _read_headers(reader)
            return True
        data = await reader.readexactly(size)
        await reader.readexactly(2)
        received += size
        arrived = time.monotonic()
        if not reply.prelude:
            before_prelude += data
            if PRELUDE_END in before_prelude:
                raw, _, rest = before_prelude.partition(PRELUDE_END)
                reply.prelude = json.loads(raw)
                pending.publish("prelude", reply.prelude)
                if rest:
                    reply.chunks.append((arrived, rest))
                    pending.publish("data", rest)
        else:
            reply.chunks.append((arrived, data))
            pending.publish("data", data)
        if pending.cut_after_bytes is not None and received >= pending.cut_after_bytes:
            reply.cut = True
            return False


async def _respond(
    writer: asyncio.StreamWriter, status: int, body: bytes, headers: dict[str, str] | None = None
) -> None:
    lines = [f"HTTP/1.1 {status} {'OK' if status == 200 else 'Accepted'}"]
    lines += [
        f"{k}: {v}" for k, v in {"Content-Type": "application/json", **(headers or {})}.items()
    ]
    lines.append(f"Content-Length: {len(body)}")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    await writer.drain()


@contextlib.contextmanager
def fake_runtime_api() -> Iterator[FakeRuntimeApi]:
    api = FakeRuntimeApi()
    api.start()
    try:
        yield api
    finally:
        api.stop()
