"""The mock's ASGI app: what it records, its control paths, and the route table.

A route is a path suffix and the function that answers it (`handler(request, knobs,
reply)`); the first match wins. A new surface is a module of handlers and one line here.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from core.devtools.mock_upstream import anthropic, audio, gemini, openai
from core.devtools.mock_upstream.compat import serve_compat
from core.devtools.mock_upstream.errors import error_payload, is_gemini_path, not_found
from core.devtools.mock_upstream.framing import Reply, dumps, json_body, read_form, send_whole
from core.devtools.mock_upstream.knobs import Knobs, MockOptions, int_header, read_knobs
from core.devtools.mock_upstream.model_lists import serve_model_lists
from core.devtools.mock_upstream.realtime import realtime_session
from core.devtools.mock_upstream.uploads import ResumableUploads
from core.types import Receive, Scope, Send

Handler = Callable[[dict[str, Any], Knobs, Reply], Awaitable[None]]
BodyReader = Callable[[str, bytes], dict[str, Any]]  # (content type, body) -> request


@dataclass(frozen=True)
class Route:
    suffixes: tuple[str, ...]
    handler: Handler
    read: BodyReader = json_body


def route(suffix: str | tuple[str, ...], handler: Handler, read: BodyReader = json_body) -> Route:
    return Route((suffix,) if isinstance(suffix, str) else suffix, handler, read)


# First match wins: /chat/completions before /completions.
ROUTES: list[Route] = [
    route("/chat/completions", openai.chat),
    route("/responses", openai.responses),
    route("/responses/input_tokens", openai.responses_input_tokens),
    route("/responses/compact", openai.responses_compact),
    route("/completions", openai.completions),
    route(("/audio/transcriptions", "/audio/translations"), audio.transcription, read_form),
    route("/audio/speech", audio.speech),
    route("/embeddings", openai.embeddings),
    route("/models", openai.models),
    route("/messages/count_tokens", anthropic.count_tokens),
    route("/messages", anthropic.messages),
    route(":streamGenerateContent", gemini.stream_generate_content),
    route(":generateContent", gemini.generate_content),
    route(":countTokens", gemini.count_tokens),
    route(":embedContent", gemini.embed_content),
    route(":batchEmbedContents", gemini.batch_embed_contents),
]


def find_route(path: str) -> Route | None:
    return next((r for r in ROUTES if path.endswith(r.suffixes)), None)


class MockUpstream:
    def __init__(self, options: MockOptions | None = None) -> None:
        self.options = options or MockOptions()
        self.requests: deque[dict[str, Any]] = deque(maxlen=self.options.record)
        # How each stream ended: lets tests see that a caller leaving cancelled us.
        self.streams: deque[dict[str, Any]] = deque(maxlen=self.options.record)
        self.uploads = ResumableUploads(keep=self.options.record)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] == "websocket":  # OpenAI Realtime, Gemini Live
            await realtime_session(scope, receive, send)
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
                # As they arrived, repeats kept: `headers` holds only a repeated name's last
                # value, which would hide a caller's credential sent beside the real key.
                "header_list": _header_list(scope),
                "body_sha256": hashlib.sha256(body).hexdigest(),
                "body_length": len(body),
            }
        )
        knobs = read_knobs(headers, query, self.options)
        reply = Reply(self.streams, send, receive, knobs)
        status = int_header(headers, "x-mock-status", 0)
        if status:
            await reply.json(status, error_payload(path, status), gemini=is_gemini_path(path))
            return
        if await serve_model_lists(scope["method"], path, headers, query, reply):
            return
        if await serve_compat(path, headers, body, reply):  # other providers' OpenAI surfaces
            return
        if "/echo" in path:
            await reply.json(200, _echo(scope, headers, query, body))
            return
        if "/bytes" in path:
            await _bytes(parse_qs(query), send)
            return
        if path.startswith("/upload/") and path.endswith("/files"):
            await self.uploads(headers, query, body, send)
            return
        route = find_route(path)
        if route is None:
            await reply.json(404, not_found(path), gemini=is_gemini_path(path))
            return
        await route.handler(route.read(headers.get("content-type", ""), body), knobs, reply)

    async def _control(self, path: str, send: Send) -> None:
        if path == "/_mock/requests":
            await send_whole(send, 200, dumps(list(self.requests)), False)
        elif path == "/_mock/streams":
            await send_whole(send, 200, dumps(list(self.streams)), False)
        elif path == "/_mock/reset":
            self.requests.clear()
            self.streams.clear()
            await send_whole(send, 200, dumps({"ok": True}), False)
        else:
            await send_whole(send, 404, dumps({"error": "unknown control path"}), False)


def _header_list(scope: Scope) -> list[list[str]]:
    return [[k.decode("latin-1").lower(), v.decode("latin-1")] for k, v in scope["headers"]]


def _echo(scope: Scope, headers: dict[str, str], query: str, body: bytes) -> dict[str, Any]:
    return {
        "method": scope["method"],
        "path": scope["path"],
        "query": query,
        "headers": headers,
        "header_list": _header_list(scope),
        "body_sha256": hashlib.sha256(body).hexdigest(),
        "body_length": len(body),
    }


async def _bytes(query: dict[str, list[str]], send: Send) -> None:
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
