"""A small client for the Lambda Runtime API, including its response-streaming mode.

Plain HTTP/1.1 over one asyncio connection to `$AWS_LAMBDA_RUNTIME_API`, written by hand
because a streamed reply ends with HTTP trailers (how a failure mid-stream is reported)
and no Python HTTP client sends request trailers. The protocol follows AWS's own runtime
clients (aws-lambda-nodejs-runtime-interface-client, aws-lambda-rust-runtime).
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
from dataclasses import dataclass
from typing import Any

API_VERSION = "/2018-06-01"
# Function URLs read a JSON prelude (status, headers, cookies) before the body.
HTTP_INTEGRATION_CONTENT_TYPE = "application/vnd.awslambda.http-integration-response"
PRELUDE_DELIMITER = b"\0" * 8
# The error document type of the Runtime API's OpenAPI spec.
ERROR_CONTENT_TYPE = "application/vnd.aws.lambda.error+json"


class RuntimeApiError(Exception):
    """The Runtime API answered with an unexpected status or closed the connection."""


@dataclass
class Invocation:
    request_id: str
    deadline_ms: int
    event: dict[str, Any]
    trace_id: str | None = None


def error_document(error_type: str, message: str) -> bytes:
    return json.dumps({"errorType": error_type, "errorMessage": message, "stackTrace": []}).encode()


class ResponseStream:
    """One streamed reply: the request body is sent as chunks while the app produces it.

    Bytes that carry nothing the caller could use on their own (the request head, the
    last chunk before the terminator) wait to share a write with what follows, so a
    small reply costs two writes instead of four.
    """

    def __init__(self, api: RuntimeApi, writer: asyncio.StreamWriter, head: bytes) -> None:
        self._api = api
        self._writer = writer
        self._pending = head

    async def write(self, data: bytes, *, flush: bool = True) -> None:
        self._pending += b"%X\r\n%b\r\n" % (len(data), data)
        if flush:
            self._writer.write(self._pending)
            self._pending = b""
            await self._writer.drain()

    async def close(self, error: tuple[str, str] | None = None) -> None:
        """End the reply; `error` (type, message) goes into the trailers Lambda reads."""
        trailers = b""
        if error is not None:
            body = base64.b64encode(error_document(*error))
            trailers = b"Lambda-Runtime-Function-Error-Type: %b\r\n" % error[0].encode()
            trailers += b"Lambda-Runtime-Function-Error-Body: %b\r\n" % body
        self._writer.write(self._pending + b"0\r\n" + trailers + b"\r\n")
        self._pending = b""
        await self._writer.drain()
        await self._api.read_response(expect=(200, 202))


class RuntimeApi:
    def __init__(self, address: str) -> None:
        host, _, port = address.rpartition(":")
        self._host = host or "127.0.0.1"
        self._port = int(port)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None or self._writer.is_closing():
            self._reader, self._writer = await asyncio.open_connection(self._host, self._port)
            sock = self._writer.get_extra_info("socket")
            if sock is not None:  # small SSE chunks must not wait for Nagle's algorithm
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self._reader, self._writer

    def reset(self) -> None:
        """Drop the connection (after a failure); the next call opens a fresh one."""
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None

    def _head(self, method: str, path: str, headers: dict[str, str]) -> bytes:
        lines = [f"{method} {API_VERSION}{path} HTTP/1.1", f"Host: {self._host}:{self._port}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def _send_head(self, method: str, path: str, headers: dict[str, str]) -> None:
        _, writer = await self._connect()
        writer.write(self._head(method, path, headers))

    async def read_response(self, expect: tuple[int, ...]) -> tuple[dict[str, str], bytes]:
        reader, _ = await self._connect()
        status_line = await reader.readline()
        if not status_line:
            self.reset()
            raise RuntimeApiError("the Runtime API closed the connection")
        status = int(status_line.split()[1])
        headers: dict[str, str] = {}
        while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body = await _read_chunked(reader)
        else:
            body = b""
        if headers.get("connection", "").lower() == "close":
            self.reset()
        if status not in expect:
            raise RuntimeApiError(f"Runtime API answered {status}: {body[:300]!r}")
        return headers, body

    async def _request(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> bytes:
        for attempt in (1, 2):  # a kept-alive connection may have been closed meanwhile
            try:
                await self._send_head(method, path, {**headers, "Content-Length": str(len(body))})
                assert self._writer is not None
                self._writer.write(body)
                await self._writer.drain()
                return (await self.read_response(expect=(200, 202)))[1]
            except (ConnectionError, RuntimeApiError, asyncio.IncompleteReadError):
                self.reset()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def next_invocation(self) -> Invocation:
        for attempt in (1, 2):
            try:
                await self._send_head("GET", "/runtime/invocation/next", {})
                headers, body = await self.read_response(expect=(200,))
                break
            except (ConnectionError, RuntimeApiError, asyncio.IncompleteReadError):
                self.reset()
                if attempt == 2:
                    raise
        return Invocation(
            request_id=headers["lambda-runtime-aws-request-id"],
            deadline_ms=int(headers.get("lambda-runtime-deadline-ms", "0")),
            event=json.loads(body),
            trace_id=headers.get("lambda-runtime-trace-id"),
        )

    async def start_stream(self, request_id: str) -> ResponseStream:
        _, writer = await self._connect()
        head = self._head(
            "POST",
            f"/runtime/invocation/{request_id}/response",
            {
                "Lambda-Runtime-Function-Response-Mode": "streaming",
                "Content-Type": HTTP_INTEGRATION_CONTENT_TYPE,
                "Transfer-Encoding": "chunked",
                "Trailer": "Lambda-Runtime-Function-Error-Type, Lambda-Runtime-Function-Error-Body",
            },
        )
        return ResponseStream(self, writer, head)

    async def invocation_error(self, request_id: str, error_type: str, message: str) -> None:
        await self._request(
            "POST",
            f"/runtime/invocation/{request_id}/error",
            error_document(error_type, message),
            {"Lambda-Runtime-Function-Error-Type": error_type, "Content-Type": ERROR_CONTENT_TYPE},
        )

    async def init_error(self, error_type: str, message: str) -> None:
        await self._request(
            "POST",
            "/runtime/init/error",
            error_document(error_type, message),
            {"Lambda-Runtime-Function-Error-Type": error_type, "Content-Type": ERROR_CONTENT_TYPE},
        )


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size = int((await reader.readline()).split(b";")[0], 16)
        if size == 0:
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass  # trailers: none expected from the Runtime API
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readline()
