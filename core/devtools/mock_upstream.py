"""A fake OpenAI + Anthropic + Gemini server for demos, tests and benchmarks.

Plain ASGI with no framework, so it is never the bottleneck of a benchmark. It speaks the
real wire formats (JSON and SSE) and records what it received, so tests can check that it
saw the real key and never the caller's token. Per request, headers steer it:
`x-mock-chunks`, `x-mock-delay-ms` (stream shape), `x-mock-status` (an error reply).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import deque
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from core.types import Receive, Scope, Send

WORDS = (
    "Hello",
    " from",
    " the",
    " mock",
    " upstream",
    ",",
    " streamed",
    " token",
    " by",
    " token",
    ". ",  # the space keeps a long reply readable when the words come round again
)


@dataclass
class MockOptions:
    chunks: int = 8
    delay_ms: float = 0.0
    record: int = 200


def _json_headers(body: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]


_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
]


class MockUpstream:
    def __init__(self, options: MockOptions | None = None) -> None:
        self.options = options or MockOptions()
        self.requests: deque[dict[str, Any]] = deque(maxlen=self.options.record)
        # How each SSE stream ended: lets tests see that a caller leaving cancelled us.
        self.streams: deque[dict[str, Any]] = deque(maxlen=self.options.record)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        path: str = scope["path"]
        headers = {k.decode().lower(): v.decode("latin-1") for k, v in scope["headers"]}
        query = scope.get("query_string", b"").decode("latin-1")
        if path.startswith("/_mock/"):
            await self._control(path, send)
            return
        self.requests.append(
            {
                "method": scope["method"],
                "path": path,
                "raw_path": (scope.get("raw_path") or b"").decode("latin-1"),
                "query": query,
                "headers": headers,
                "body_sha256": hashlib.sha256(body).hexdigest(),
                "body_length": len(body),
            }
        )
        status = int(headers.get("x-mock-status", "0") or 0)
        if status:
            await self._error(path, status, send)
            return
        chunks = int(headers.get("x-mock-chunks", self.options.chunks))
        delay = float(headers.get("x-mock-delay-ms", self.options.delay_ms)) / 1000
        if "/echo" in path:
            await self._echo(scope, headers, query, body, send)
        elif "/bytes" in path:
            await self._bytes(parse_qs(query), send)
        elif path.endswith("/chat/completions"):
            request = _loads(body)
            if request.get("stream"):
                await self._stream(send, receive, _openai_events(request, chunks), delay)
            else:
                await asyncio.sleep(delay * chunks)  # the time a real model takes to generate
                await _send_json(send, 200, _openai_completion(request, chunks))
        elif path.endswith("/messages"):
            request = _loads(body)
            if request.get("stream"):
                await self._stream(send, receive, _anthropic_events(request, chunks), delay)
            else:
                await _send_json(send, 200, _anthropic_message(request, chunks))
        elif ":streamGenerateContent" in path:
            await self._stream(send, receive, _gemini_events(chunks), delay)
        elif ":generateContent" in path:
            await _send_json(send, 200, _gemini_response(_text(chunks)))
        elif path.endswith("/embeddings"):
            await _send_json(
                send,
                200,
                {
                    "object": "list",
                    "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2, 0.3]}],
                    "model": "mock-embedding",
                    "usage": {"prompt_tokens": 1, "total_tokens": 1},
                },
            )
        elif path.endswith("/models"):
            await _send_json(
                send,
                200,
                {
                    "object": "list",
                    "data": [
                        {"id": "mock-model", "object": "model", "created": 0, "owned_by": "mock"}
                    ],
                },
            )
        else:
            await _send_json(
                send,
                404,
                {
                    "error": {
                        "message": f"mock upstream has no {path}",
                        "type": "invalid_request_error",
                        "param": None,
                        "code": "unknown_url",
                    }
                },
            )

    async def _control(self, path: str, send: Send) -> None:
        if path == "/_mock/requests":
            await _send_json(send, 200, list(self.requests))
        elif path == "/_mock/streams":
            await _send_json(send, 200, list(self.streams))
        elif path == "/_mock/reset":
            self.requests.clear()
            self.streams.clear()
            await _send_json(send, 200, {"ok": True})
        else:
            await _send_json(send, 404, {"error": "unknown control path"})

    async def _error(self, path: str, status: int, send: Send) -> None:
        if path.endswith("/messages"):
            payload: dict[str, Any] = {
                "type": "error",
                "error": {"type": "api_error", "message": f"mock error {status}"},
            }
        elif "generateContent" in path:
            payload = {
                "error": {"code": status, "message": f"mock error {status}", "status": "INTERNAL"}
            }
        else:
            payload = {
                "error": {
                    "message": f"mock error {status}",
                    "type": "server_error",
                    "param": None,
                    "code": None,
                }
            }
        await _send_json(send, status, payload)

    async def _echo(
        self, scope: Scope, headers: dict[str, str], query: str, body: bytes, send: Send
    ) -> None:
        payload = {
            "method": scope["method"],
            "path": scope["path"],
            "query": query,
            "headers": headers,
            "body_sha256": hashlib.sha256(body).hexdigest(),
            "body_length": len(body),
        }
        await _send_json(send, 200, payload)

    async def _bytes(self, query: dict[str, list[str]], send: Send) -> None:
        total = int(query.get("n", ["1048576"])[0])
        chunk_size = int(query.get("chunk", ["65536"])[0])
        block = b"x" * chunk_size
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/octet-stream")],
            }
        )
        remaining = total
        while remaining > 0:
            piece = block if remaining >= chunk_size else block[:remaining]
            remaining -= len(piece)
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _stream(
        self, send: Send, receive: Receive, events: list[bytes], delay: float
    ) -> None:
        record: dict[str, Any] = {"events": len(events), "sent": 0, "completed": False}
        self.streams.append(record)
        gone = asyncio.Event()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        watcher = asyncio.ensure_future(watch())
        try:
            await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
            for event in events:
                if delay:
                    await asyncio.sleep(delay)
                if gone.is_set():
                    break
                await send({"type": "http.response.body", "body": event, "more_body": True})
                record["sent"] += 1
            else:
                record["completed"] = True
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            record["ended_at"] = time.time()
            watcher.cancel()


def _loads(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body or b"{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


async def _send_json(send: Send, status: int, payload: Any) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status, "headers": _json_headers(body)})
    await send({"type": "http.response.body", "body": body})


def _word(index: int) -> str:
    return WORDS[index % len(WORDS)]


def _text(chunks: int) -> str:
    return "".join(_word(i) for i in range(chunks))


def _sse(data: Any, event: str | None = None) -> bytes:
    prefix = f"event: {event}\n" if event else ""
    return f"{prefix}data: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _openai_completion(request: dict[str, Any], chunks: int) -> dict[str, Any]:
    return {
        "id": "chatcmpl-mock",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.get("model", "mock-model"),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": _text(chunks)},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": chunks, "total_tokens": 5 + chunks},
    }


def _openai_events(request: dict[str, Any], chunks: int) -> list[bytes]:
    model = request.get("model", "mock-model")
    base = {
        "id": "chatcmpl-mock",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
    }
    events = [
        _sse(
            {
                **base,
                "choices": [
                    {
                        "index": 0,
                        "delta": {"role": "assistant", "content": ""},
                        "finish_reason": None,
                    }
                ],
            }
        )
    ]
    events += [
        _sse(
            {
                **base,
                "choices": [{"index": 0, "delta": {"content": _word(i)}, "finish_reason": None}],
            }
        )
        for i in range(chunks)
    ]
    events.append(_sse({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
    if (request.get("stream_options") or {}).get("include_usage"):
        events.append(
            _sse(
                {
                    **base,
                    "choices": [],
                    "usage": {
                        "prompt_tokens": 5,
                        "completion_tokens": chunks,
                        "total_tokens": 5 + chunks,
                    },
                }
            )
        )
    events.append(b"data: [DONE]\n\n")
    return events


def _anthropic_message(request: dict[str, Any], chunks: int) -> dict[str, Any]:
    return {
        "id": "msg_mock",
        "type": "message",
        "role": "assistant",
        "model": request.get("model", "mock-model"),
        "content": [{"type": "text", "text": _text(chunks)}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 5, "output_tokens": chunks},
    }


def _anthropic_events(request: dict[str, Any], chunks: int) -> list[bytes]:
    message = {
        **_anthropic_message(request, 0),
        "content": [],
        "stop_reason": None,
        "usage": {"input_tokens": 5, "output_tokens": 0},
    }
    events = [
        _sse({"type": "message_start", "message": message}, "message_start"),
        _sse(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
            "content_block_start",
        ),
    ]
    events += [
        _sse(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": _word(i)},
            },
            "content_block_delta",
        )
        for i in range(chunks)
    ]
    events += [
        _sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
        _sse(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": chunks},
            },
            "message_delta",
        ),
        _sse({"type": "message_stop"}, "message_stop"),
    ]
    return events


def _gemini_response(text: str) -> dict[str, Any]:
    return {
        "candidates": [
            {
                "content": {"role": "model", "parts": [{"text": text}]},
                "finishReason": "STOP",
                "index": 0,
            }
        ],
        "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 1, "totalTokenCount": 6},
        "modelVersion": "mock-model",
    }


def _gemini_events(chunks: int) -> list[bytes]:
    return [_sse(_gemini_response(_word(i))) for i in range(chunks)]
