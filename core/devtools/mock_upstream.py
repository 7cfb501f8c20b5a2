"""A fake OpenAI + Anthropic + Gemini server for demos, tests and benchmarks.

Plain ASGI with no framework, so it is never the bottleneck of a benchmark. It speaks the
real wire formats (JSON, SSE, Gemini's streamed JSON array, multipart uploads) of the routes
the SDKs call by default, reports usage on each, and records what it received, so tests can
check that it saw the real key and never the caller's token.

Usage is deterministic, so tests can predict it: prompt tokens are the words in the request's
text fields (at least 1); output tokens are the chunks produced (one word each); reasoning
tokens, when the request asks for reasoning or thinking, equal the chunks too.

Per request, headers steer it:

| header | effect |
|---|---|
| `x-mock-chunks: N` | words in a reply (SSE events in a stream) |
| `x-mock-delay-ms: F` | pause before each chunk (a whole reply waits chunks x delay) |
| `x-mock-status: S` | answer an error with this status, in the protocol's own shape |
| `x-mock-gzip: 1` | gzip the reply (streams flush the compressor per event) |
| `x-mock-cut-after: N` | end a stream abruptly after N events (no terminating chunk) |
| `x-mock-continue: 1` | Gemini: a request whose model turn holds the reply's first words (then a user turn) gets the rest of the reply, as a model asked to continue would |
| `x-mock-usage-scale: K` | multiply every reported token count by K |
| `x-mock-cached-tokens: N` | N prompt tokens read from cache (OpenAI cached_tokens, Anthropic cache_read_input_tokens, Gemini cachedContentTokenCount) |
| `x-mock-cache-write-tokens: N` | N prompt tokens written to cache (Anthropic cache_creation_input_tokens) |

With `MockOptions(gzip=True)` (`llm-proxy mock-upstream --gzip`) every reply to a request
that sends `Accept-Encoding: gzip` is gzipped, as the real providers do.
`/_mock/requests`, `/_mock/streams` and `/_mock/reset` show and clear what it recorded.

Gemini's resumable upload (`files.upload`) is served at `/upload/v1beta/files`: the start
leg answers `x-goog-upload-url` on the host the request named (the mock's own), the upload
leg takes the bytes (`upload`, then `upload, finalize`) and answers the file resource.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import struct
import time
import zlib
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any
from urllib.parse import parse_qs

from core.devtools.mock_compat import serve_compat
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
    gzip: bool = False  # honour Accept-Encoding: gzip on every reply


# ---- request knobs and usage ------------------------------------------------------------


@dataclass
class Knobs:
    """What steers one reply: the x-mock-* headers, Accept-Encoding, Gemini's `alt=sse`."""

    chunks: int
    delay: float  # seconds before each chunk
    gzip: bool
    cut_after: int | None
    scale: int
    cached: int
    cache_write: int
    sse: bool = False  # Gemini streams: SSE (alt=sse) rather than a JSON array
    resume: bool = False  # Gemini: continue the reply begun in the request's model turn


def _int_header(headers: dict[str, str], name: str, default: int) -> int:
    try:
        return int(headers.get(name, "") or default)
    except ValueError:
        return default


def _knobs(headers: dict[str, str], query: str, options: MockOptions) -> Knobs:
    accepts_gzip = "gzip" in headers.get("accept-encoding", "").lower()
    try:
        delay_ms = float(headers.get("x-mock-delay-ms", options.delay_ms) or 0)
    except ValueError:
        delay_ms = options.delay_ms
    cut = _int_header(headers, "x-mock-cut-after", -1)
    return Knobs(
        chunks=max(0, _int_header(headers, "x-mock-chunks", options.chunks)),
        delay=max(0.0, delay_ms) / 1000,
        gzip=headers.get("x-mock-gzip", "") in ("1", "true") or (options.gzip and accepts_gzip),
        cut_after=cut if cut >= 0 else None,
        scale=max(1, _int_header(headers, "x-mock-usage-scale", 1)),
        cached=max(0, _int_header(headers, "x-mock-cached-tokens", 0)),
        cache_write=max(0, _int_header(headers, "x-mock-cache-write-tokens", 0)),
        sse=parse_qs(query).get("alt") == ["sse"],
        resume=headers.get("x-mock-continue", "") in ("1", "true"),
    )


# The keys whose values are the prompt, in any of the three protocols: chat messages,
# Responses input and instructions, legacy prompts, Anthropic system, Gemini contents/parts,
# embedding inputs, countTokens' wrapped request.
_TEXT_KEYS = frozenset(
    {
        "messages",
        "content",
        "text",
        "input",
        "instructions",
        "prompt",
        "system",
        "contents",
        "parts",
        "systemInstruction",
        "system_instruction",
        "generateContentRequest",
        "requests",
    }
)


def count_words(value: Any) -> int:
    """Words in the text fields of a request (token ids in a list count one each)."""
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        return sum(1 if _is_int(item) else count_words(item) for item in value)
    if isinstance(value, dict):
        return sum(count_words(item) for key, item in value.items() if key in _TEXT_KEYS)
    return 0


def prompt_tokens(request: dict[str, Any]) -> int:
    """The mock's prompt token count for a request: its words, at least 1."""
    return max(1, count_words(request))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class Usage:
    prompt: int  # all prompt tokens, cached ones included
    output: int  # visible output tokens
    reasoning: int = 0
    cached: int = 0  # read from cache (part of prompt)
    cache_write: int = 0  # written to cache (part of prompt; Anthropic only)

    @property
    def completion(self) -> int:  # OpenAI's output count: reasoning included
        return self.output + self.reasoning

    @property
    def total(self) -> int:
        return self.prompt + self.output + self.reasoning


def _usage(request: dict[str, Any], knobs: Knobs, output: int, reasoning: bool = False) -> Usage:
    prompt = prompt_tokens(request) * knobs.scale
    cached = min(knobs.cached, prompt)
    return Usage(
        prompt=prompt,
        output=output * knobs.scale,
        reasoning=knobs.chunks * knobs.scale if reasoning else 0,
        cached=cached,
        cache_write=min(knobs.cache_write, prompt - cached),
    )


# ---- the ASGI app -----------------------------------------------------------------------

Handler = Callable[[dict[str, Any], Knobs, "Reply"], Awaitable[None]]


class MockUpstream:
    def __init__(self, options: MockOptions | None = None) -> None:
        self.options = options or MockOptions()
        self.requests: deque[dict[str, Any]] = deque(maxlen=self.options.record)
        # How each stream ended: lets tests see that a caller leaving cancelled us.
        self.streams: deque[dict[str, Any]] = deque(maxlen=self.options.record)
        # Resumable upload sessions by upload_id (the oldest dropped past `record`).
        self.uploads: dict[str, UploadSession] = {}

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
        knobs = _knobs(headers, query, self.options)
        reply = Reply(self, send, receive, knobs)
        status = _int_header(headers, "x-mock-status", 0)
        if status:
            await reply.json(status, _error_payload(path, status), gemini=_is_gemini(path))
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
            await self._upload(headers, query, body, send)
            return
        handler = _route(path)
        if handler is None:
            await reply.json(404, _not_found(path), gemini=_is_gemini(path))
            return
        if handler is _transcription:
            request = _form(headers.get("content-type", ""), body)
        else:
            request = _loads(body)
        await handler(request, knobs, reply)

    async def _upload(self, headers: dict[str, str], query: str, body: bytes, send: Send) -> None:
        """Gemini's resumable upload protocol, both legs."""
        command = {c.strip() for c in headers.get("x-goog-upload-command", "").split(",")}
        if "start" in command:
            upload_id = "mock-upload-" + secrets.token_urlsafe(16)
            file = _loads(body).get("file") or {}
            self.uploads[upload_id] = UploadSession(
                size=_int_header(headers, "x-goog-upload-header-content-length", 0),
                mime_type=headers.get("x-goog-upload-header-content-type", ""),
                display_name=str(file.get("displayName", file.get("display_name", ""))),
            )
            while len(self.uploads) > self.options.record:
                del self.uploads[next(iter(self.uploads))]
            # On the host the request named: the mock's own, as the real API names its own.
            host = headers.get("host", "127.0.0.1")
            url = (
                f"http://{host}/upload/v1beta/files?upload_id={upload_id}&upload_protocol=resumable"
            )
            await _send_upload(send, 200, b"", url=url, status="active")
            return
        [upload_id] = parse_qs(query).get("upload_id") or [""]
        session = self.uploads.get(upload_id)
        if session is None:
            payload = {"error": {"code": 404, "message": "no such upload", "status": "NOT_FOUND"}}
            await _send_upload(send, 404, _gemini_dumps(payload), status="final")
            return
        if "upload" in command:
            if _int_header(headers, "x-goog-upload-offset", -1) != session.received:
                await _send_upload(send, 400, b"", status="final")
                return
            session.digest.update(body)
            session.received += len(body)
        if "finalize" in command:
            del self.uploads[upload_id]
            resource = session.resource(upload_id)
            await _send_upload(send, 200, _gemini_dumps({"file": resource}), status="final")
            return
        await _send_upload(send, 200, b"", status="active", received=session.received)

    async def _control(self, path: str, send: Send) -> None:
        if path == "/_mock/requests":
            await _send_whole(send, 200, _dumps(list(self.requests)), False)
        elif path == "/_mock/streams":
            await _send_whole(send, 200, _dumps(list(self.streams)), False)
        elif path == "/_mock/reset":
            self.requests.clear()
            self.streams.clear()
            await _send_whole(send, 200, _dumps({"ok": True}), False)
        else:
            await _send_whole(send, 404, _dumps({"error": "unknown control path"}), False)


def _route(path: str) -> Handler | None:
    if path.endswith("/chat/completions"):
        return _chat
    if path.endswith("/responses"):
        return _responses
    if path.endswith("/responses/input_tokens"):
        return _responses_input_tokens
    if path.endswith("/completions"):
        return _completions
    if path.endswith(("/audio/transcriptions", "/audio/translations")):
        return _transcription
    if path.endswith("/audio/speech"):
        return _speech
    if path.endswith("/embeddings"):
        return _embeddings
    if path.endswith("/models"):
        return _models
    if path.endswith("/messages/count_tokens"):
        return _anthropic_count_tokens
    if path.endswith("/messages"):
        return _anthropic
    if path.endswith(":streamGenerateContent"):
        return _gemini_stream
    if path.endswith(":generateContent"):
        return _gemini
    if path.endswith(":countTokens"):
        return _gemini_count_tokens
    if path.endswith(":embedContent"):
        return _gemini_embed
    if path.endswith(":batchEmbedContents"):
        return _gemini_batch_embed
    return None


@dataclass
class UploadSession:
    size: int
    mime_type: str
    display_name: str
    received: int = 0

    def __post_init__(self) -> None:
        self.digest = hashlib.sha256()

    def resource(self, upload_id: str) -> dict[str, Any]:
        """The file resource Gemini answers an upload's finalize with."""
        name = "files/" + hashlib.sha256(upload_id.encode()).hexdigest()[:12]
        now = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
        later = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(time.time() + 172800))
        resource = {
            "name": name,
            "mimeType": self.mime_type,
            "sizeBytes": str(self.received),
            "createTime": now,
            "updateTime": now,
            "expirationTime": later,
            "sha256Hash": base64.b64encode(self.digest.hexdigest().encode()).decode(),
            # The canonical file URI models read, not a host to reach.
            "uri": f"https://generativelanguage.googleapis.com/v1beta/{name}",
            "state": "ACTIVE",
            "source": "UPLOADED",
        }
        if self.display_name:
            resource["displayName"] = self.display_name
        return resource


async def _send_upload(
    send: Send,
    code: int,
    body: bytes,
    *,
    status: str,
    url: str | None = None,
    received: int | None = None,
) -> None:
    """A resumable upload's reply: `x-goog-upload-status` always, the session's URL on start."""
    headers = [
        (b"content-type", _GEMINI_JSON),
        (b"content-length", str(len(body)).encode()),
        (b"x-goog-upload-status", status.encode()),
    ]
    if url is not None:
        headers += [
            (b"x-goog-upload-url", url.encode()),
            (b"x-goog-upload-control-url", url.encode()),
            (b"x-goog-upload-chunk-granularity", b"8388608"),
        ]
    if received is not None:
        headers.append((b"x-goog-upload-size-received", str(received).encode()))
    await send({"type": "http.response.start", "status": code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# ---- sending ----------------------------------------------------------------------------


def _dumps(payload: Any) -> bytes:
    """Compact, as OpenAI and Anthropic serialise."""
    return json.dumps(payload, separators=(",", ":")).encode()


def _gemini_dumps(payload: Any) -> bytes:
    """Google's APIs pretty-print their JSON."""
    return json.dumps(payload, indent=2).encode()


async def _send_whole(
    send: Send, status: int, body: bytes, gzip: bool, content_type: bytes = b"application/json"
) -> None:
    headers = [(b"content-type", content_type)]
    if gzip:
        compressor = zlib.compressobj(wbits=31)
        body = compressor.compress(body) + compressor.flush()
        headers.append((b"content-encoding", b"gzip"))
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


_SSE_TYPE = b"text/event-stream; charset=utf-8"
_GEMINI_JSON = b"application/json; charset=UTF-8"


class Reply:
    """One request's way back: whole bodies and streams, with the gzip and cut knobs."""

    def __init__(self, mock: MockUpstream, send: Send, receive: Receive, knobs: Knobs) -> None:
        self.mock = mock
        self.send = send
        self.receive = receive
        self.knobs = knobs

    async def json(self, status: int, payload: Any, gemini: bool = False) -> None:
        body = _gemini_dumps(payload) if gemini else _dumps(payload)
        await _send_whole(
            self.send,
            status,
            body,
            self.knobs.gzip,
            _GEMINI_JSON if gemini else b"application/json",
        )

    async def body(self, body: bytes, content_type: bytes) -> None:
        await _send_whole(self.send, 200, body, self.knobs.gzip, content_type)

    async def generating(self) -> None:
        """The time a real model takes to generate a whole reply."""
        if self.knobs.delay:
            await asyncio.sleep(self.knobs.delay * self.knobs.chunks)

    async def stream(self, events: list[bytes], content_type: bytes = _SSE_TYPE) -> None:
        knobs = self.knobs
        record: dict[str, Any] = {"events": len(events), "sent": 0, "completed": False}
        self.mock.streams.append(record)
        gone = asyncio.Event()

        async def watch() -> None:
            while (await self.receive())["type"] != "http.disconnect":
                pass
            gone.set()

        headers = [(b"content-type", content_type)]
        if content_type == _SSE_TYPE:
            headers.append((b"cache-control", b"no-cache"))
        compressor = None
        if knobs.gzip:
            compressor = zlib.compressobj(wbits=31)
            headers.append((b"content-encoding", b"gzip"))
        watcher = asyncio.ensure_future(watch())
        try:
            await self.send({"type": "http.response.start", "status": 200, "headers": headers})
            for event in events:
                if knobs.cut_after is not None and record["sent"] >= knobs.cut_after:
                    # Return without finishing the body: the server closes the connection
                    # with no terminating chunk, as an upstream that drops would.
                    record["cut"] = True
                    return
                if knobs.delay:
                    await asyncio.sleep(knobs.delay)
                if gone.is_set():
                    break
                if compressor is not None:
                    event = compressor.compress(event) + compressor.flush(zlib.Z_SYNC_FLUSH)
                await self.send({"type": "http.response.body", "body": event, "more_body": True})
                record["sent"] += 1
            else:
                record["completed"] = True
                tail = compressor.flush() if compressor is not None else b""
                await self.send({"type": "http.response.body", "body": tail, "more_body": False})
        finally:
            record["ended_at"] = time.time()
            watcher.cancel()


def _loads(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body or b"{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _form(content_type: str, body: bytes) -> dict[str, Any]:
    """A multipart/form-data upload as {field: text}, files as {"__files": {field: bytes}}."""
    form: dict[str, Any] = {"__files": {}}
    if not content_type.lower().startswith("multipart/"):
        return form
    message = BytesParser(policy=HTTP).parsebytes(
        b"content-type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    )
    for part in message.iter_parts():  # type: ignore[attr-defined]
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str) or not name:
            continue
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            payload = b""
        if part.get_filename() is not None:
            form["__files"][name] = payload
        else:
            form[name] = payload.decode("utf-8", "replace")
    return form


def _sse(data: Any, event: str | None = None) -> bytes:
    prefix = f"event: {event}\n" if event else ""
    return prefix.encode() + b"data: " + _dumps(data) + b"\n\n"


def _word(index: int) -> str:
    return WORDS[index % len(WORDS)]


def _text(chunks: int) -> str:
    return "".join(_word(i) for i in range(chunks))


def _is_gemini(path: str) -> bool:
    return "/models/" in path and ":" in path.rsplit("/", 1)[-1]


_ANTHROPIC_ERRORS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}
_GOOGLE_STATUSES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    501: "NOT_IMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def _error_payload(path: str, status: int) -> dict[str, Any]:
    """An error in the shape (and with the type names) each provider uses for the status."""
    message = f"mock error {status}"
    if "/messages" in path:
        kind = _ANTHROPIC_ERRORS.get(status, "api_error")
        return {
            "type": "error",
            "error": {"type": kind, "message": message},
            "request_id": "req_mock",
        }
    if _is_gemini(path):
        google = _GOOGLE_STATUSES.get(status, "INTERNAL")
        return {"error": {"code": status, "message": message, "status": google}}
    if status == 429:
        kind, code = "requests", "rate_limit_exceeded"
    elif status < 500:
        kind, code = "invalid_request_error", None
    else:
        kind, code = "server_error", None
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _not_found(path: str) -> dict[str, Any]:
    if _is_gemini(path):
        return {"error": {"code": 404, "message": f"mock has no {path}", "status": "NOT_FOUND"}}
    return {
        "error": {
            "message": f"mock upstream has no {path}",
            "type": "invalid_request_error",
            "param": None,
            "code": "unknown_url",
        }
    }


def _echo(scope: Scope, headers: dict[str, str], query: str, body: bytes) -> dict[str, Any]:
    return {
        "method": scope["method"],
        "path": scope["path"],
        "query": query,
        "headers": headers,
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


# ---- tool calls (every protocol) --------------------------------------------------------


def _example_input(schema: dict[str, Any]) -> dict[str, Any]:
    """Arguments that satisfy a tool's JSON schema: every property with a plain value."""
    values: dict[str, Any] = {}
    for name, prop in (schema.get("properties") or {}).items():
        prop = prop if isinstance(prop, dict) else {}
        kind = prop.get("type")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), None)
        kind = kind.lower() if isinstance(kind, str) else None  # Gemini writes STRING
        if prop.get("enum"):
            values[name] = prop["enum"][0]
        else:
            values[name] = {
                "string": "mock",
                "integer": 1,
                "number": 1,
                "boolean": True,
                "array": [],
                "object": {},
            }.get(kind or "string")
    return values


def _split(text: str, pieces: int) -> list[str]:
    if pieces <= 0:
        return []
    return [text[len(text) * i // pieces : len(text) * (i + 1) // pieces] for i in range(pieces)]


# ---- OpenAI -----------------------------------------------------------------------------


def _openai_usage(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt,
        "completion_tokens": usage.completion,
        "total_tokens": usage.total,
        "prompt_tokens_details": {"cached_tokens": usage.cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": usage.reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _wants_usage(request: dict[str, Any]) -> bool:
    options = request.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _wants_obfuscation(request: dict[str, Any]) -> bool:
    """OpenAI pads streamed deltas with an `obfuscation` string unless asked not to."""
    options = request.get("stream_options")
    return not (isinstance(options, dict) and options.get("include_obfuscation") is False)


_PAD = "mK3xQ9vL2pR7tW4zB8nF6hJ1"


def _obfuscation(index: int) -> str:
    """Deterministic stand-in for OpenAI's random padding (1 to 16 characters)."""
    return _PAD[index % 8 : index % 8 + 1 + (7 * index) % 16]


def _chat_reasoning(request: dict[str, Any]) -> bool:
    return request.get("reasoning_effort") not in (None, "none")


def _openai_tool(request: dict[str, Any], responses: bool) -> tuple[str, str] | None:
    """The function a request with `tools` gets called, and its arguments as JSON: the one
    tool_choice names, else the first; none when tool_choice is "none". Chat nests each
    function under "function"; the Responses API does not."""
    choice = request.get("tool_choice")
    if choice == "none":
        return None
    named = None
    if isinstance(choice, dict):
        named = choice.get("name") if responses else (choice.get("function") or {}).get("name")
    functions = []
    for tool in request.get("tools") or []:
        if not isinstance(tool, dict) or tool.get("type") != "function":
            continue
        function = tool if responses else tool.get("function")
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            functions.append(function)
    for function in functions:
        if named is None or function["name"] == named:
            schema = function.get("parameters")
            arguments = _example_input(schema if isinstance(schema, dict) else {})
            return function["name"], _dumps(arguments).decode()
    return None


async def _chat(request: dict[str, Any], knobs: Knobs, reply: Reply) -> None:
    usage = _usage(request, knobs, knobs.chunks, _chat_reasoning(request))
    tool = _openai_tool(request, responses=False)
    if request.get("stream"):
        await reply.stream(_chat_events(request, knobs.chunks, usage, tool))
        return
    await reply.generating()
    message: dict[str, Any] = {
        "role": "assistant",
        "content": _text(knobs.chunks),
        "refusal": None,
        "annotations": [],
    }
    if tool:
        call = {"id": "call_mock", "type": "function"}
        message["content"] = None
        message["tool_calls"] = [{**call, "function": {"name": tool[0], "arguments": tool[1]}}]
    await reply.json(
        200,
        {
            "id": "chatcmpl-mock",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.get("model", "mock-model"),
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": "tool_calls" if tool else "stop",
                }
            ],
            "usage": _openai_usage(usage),
            "service_tier": "default",
            "system_fingerprint": "fp_mock",
        },
    )


def _chat_events(
    request: dict[str, Any], chunks: int, usage: Usage, tool: tuple[str, str] | None
) -> list[bytes]:
    base: dict[str, Any] = {
        "id": "chatcmpl-mock",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": request.get("model", "mock-model"),
        "service_tier": "default",
        "system_fingerprint": "fp_mock",
    }
    with_usage = _wants_usage(request)
    padded = _wants_obfuscation(request)
    events: list[bytes] = []

    def chunk(choices: list[dict[str, Any]], usage_json: dict[str, Any] | None = None) -> None:
        event: dict[str, Any] = {**base, "choices": choices}
        if with_usage:
            # As the real API: every chunk carries usage, null until the last.
            event["usage"] = usage_json
        if padded:
            event["obfuscation"] = _obfuscation(len(events))
        events.append(_sse(event))

    def choice(delta: dict[str, Any], finish: str | None = None) -> list[dict[str, Any]]:
        return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]

    if tool:
        name, arguments = tool
        call = {"index": 0, "id": "call_mock", "type": "function"}
        first = {**call, "function": {"name": name, "arguments": ""}}
        chunk(choice({"role": "assistant", "content": None, "tool_calls": [first]}))
        for piece in _split(arguments, chunks):
            chunk(choice({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}))
        chunk(choice({}, "tool_calls"))
    else:
        chunk(choice({"role": "assistant", "content": "", "refusal": None}))
        for i in range(chunks):
            chunk(choice({"content": _word(i)}))
        chunk(choice({}, "stop"))
    if with_usage:
        chunk([], _openai_usage(usage))
    events.append(b"data: [DONE]\n\n")
    return events


async def _completions(request: dict[str, Any], knobs: Knobs, reply: Reply) -> None:
    """The legacy text completions API."""
    usage = _usage(request, knobs, knobs.chunks)
    base: dict[str, Any] = {
        "id": "cmpl-mock",
        "object": "text_completion",
        "created": int(time.time()),
        "model": request.get("model", "mock-model"),
        "system_fingerprint": "fp_mock",
    }
    if not request.get("stream"):
        await reply.generating()
        whole = {
            "text": _text(knobs.chunks),
            "index": 0,
            "logprobs": None,
            "finish_reason": "stop",
        }
        await reply.json(200, {**base, "choices": [whole], "usage": _openai_usage(usage)})
        return
    with_usage = _wants_usage(request)
    padded = _wants_obfuscation(request)
    events: list[bytes] = []

    def chunk(choices: list[dict[str, Any]], usage_json: dict[str, Any] | None = None) -> None:
        event: dict[str, Any] = {**base, "choices": choices}
        if with_usage:
            event["usage"] = usage_json
        if padded:
            event["obfuscation"] = _obfuscation(len(events))
        events.append(_sse(event))

    def choice(text: str, finish: str | None = None) -> list[dict[str, Any]]:
        return [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}]

    for i in range(knobs.chunks):
        chunk(choice(_word(i)))
    chunk(choice("", "stop"))
    if with_usage:
        chunk([], _openai_usage(usage))
    events.append(b"data: [DONE]\n\n")
    await reply.stream(events)


# -- Responses API


def _responses_reasoning(request: dict[str, Any]) -> bool:
    reasoning = request.get("reasoning")
    return isinstance(reasoning, dict) and reasoning.get("effort") != "none"


def _response_object(
    request: dict[str, Any], status: str, output: list[dict[str, Any]], usage: Usage | None
) -> dict[str, Any]:
    reasoning = request.get("reasoning")
    if not isinstance(reasoning, dict):
        reasoning = {}
    return {
        "id": "resp_mock",
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "max_tool_calls": request.get("max_tool_calls"),
        "model": request.get("model", "mock-model"),
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": request.get("previous_response_id"),
        "prompt_cache_key": request.get("prompt_cache_key"),
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "safety_identifier": request.get("safety_identifier"),
        "service_tier": "default",
        "store": request.get("store", True),
        "temperature": request.get("temperature", 1.0),
        "text": {"format": {"type": "text"}, "verbosity": "medium", **(request.get("text") or {})},
        "tool_choice": request.get("tool_choice", "auto"),
        "tools": request.get("tools", []),
        "top_logprobs": request.get("top_logprobs", 0),
        "top_p": request.get("top_p", 1.0),
        "truncation": request.get("truncation", "disabled"),
        "usage": None
        if usage is None
        else {
            "input_tokens": usage.prompt,
            "input_tokens_details": {"cached_tokens": usage.cached},
            "output_tokens": usage.completion,
            "output_tokens_details": {"reasoning_tokens": usage.reasoning},
            "total_tokens": usage.total,
        },
        "user": request.get("user"),
        "metadata": request.get("metadata") or {},
    }


_REASONING_ITEM = {"id": "rs_mock", "type": "reasoning", "summary": []}


def _output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


def _message_item(status: str, content: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": "msg_mock",
        "type": "message",
        "status": status,
        "content": content,
        "role": "assistant",
    }


def _function_call_item(status: str, name: str, arguments: str) -> dict[str, Any]:
    return {
        "id": "fc_mock",
        "type": "function_call",
        "status": status,
        "arguments": arguments,
        "call_id": "call_mock",
        "name": name,
    }


async def _responses(request: dict[str, Any], knobs: Knobs, reply: Reply) -> None:
    reasoning = _responses_reasoning(request)
    usage = _usage(request, knobs, knobs.chunks, reasoning)
    text = _text(knobs.chunks)
    tool = _openai_tool(request, responses=True)
    output = [_REASONING_ITEM] if reasoning else []
    if tool:
        output.append(_function_call_item("completed", *tool))
    else:
        output.append(_message_item("completed", [_output_text(text)]))
    if not request.get("stream"):
        await reply.generating()
        await reply.json(200, _response_object(request, "completed", output, usage))
        return
    events: list[tuple[str, dict[str, Any]]] = []
    started = _response_object(request, "in_progress", [], None)
    events.append(("response.created", {"response": started}))
    events.append(("response.in_progress", {"response": started}))
    index = 0
    if reasoning:
        item = {"output_index": 0, "item": _REASONING_ITEM}
        events.append(("response.output_item.added", item))
        events.append(("response.output_item.done", item))
        index = 1
    padded = _wants_obfuscation(request)
    if tool:
        name, arguments = tool
        at = {"item_id": "fc_mock", "output_index": index}
        started_item = _function_call_item("in_progress", name, "")
        events.append(("response.output_item.added", {"output_index": index, "item": started_item}))
        for i, piece in enumerate(_split(arguments, knobs.chunks)):
            delta = {**at, "delta": piece}
            if padded:
                delta["obfuscation"] = _obfuscation(i)
            events.append(("response.function_call_arguments.delta", delta))
        events.append(("response.function_call_arguments.done", {**at, "arguments": arguments}))
    else:
        _message_events(events, index, text, knobs.chunks, padded)
    events.append(("response.output_item.done", {"output_index": index, "item": output[-1]}))
    final = _response_object(request, "completed", output, usage)
    events.append(("response.completed", {"response": final}))
    await reply.stream(
        [
            _sse({"type": name, "sequence_number": number, **data}, name)
            for number, (name, data) in enumerate(events)
        ]
    )


async def _responses_input_tokens(request: dict[str, Any], knobs: Knobs, reply: Reply) -> None:
    tokens = prompt_tokens(request) * knobs.scale
    await reply.json(200, {"object": "response.input_tokens", "input_tokens": tokens})


def _message_events(
    events: list[tuple[str, dict[str, Any]]], index: int, text: str, chunks: int, padded: bool
) -> None:
    """The events of one streamed message item, up to (not including) its output_item.done."""
    where = {"item_id": "msg_mock", "output_index": index, "content_index": 0}
    events.append(
        (
            "response.output_item.added",
            {"output_index": index, "item": _message_item("in_progress", [])},
        )
    )
    events.append(("response.content_part.added", {**where, "part": _output_text("")}))
    for i in range(chunks):
        delta = {**where, "delta": _word(i), "logprobs": []}
        if padded:
            delta["obfuscation"] = _obfuscation(i)
        events.append(("response.output_text.delta", delta))
    events.append(("response.output_text.done", {**where, "text": text, "logprobs": []}))
    events.append(("response.content_part.done", {**where, "part": _output_text(text)}))


# -- audio, embeddings, models


async def _transcription(form: dict[str, Any], knobs: Knobs, reply: Reply) -> None:
    """Transcriptions (and translations) of a multipart upload. gpt-4o-* models report
    token usage (about one audio token per kB); whisper-1 reports seconds (16 kB a second:
    8 kHz 16-bit mono)."""
    audio = b"".join(form["__files"].values())
    output = knobs.chunks * knobs.scale
    usage: dict[str, Any]
    if form.get("model") == "whisper-1":
        usage = {"type": "duration", "seconds": max(1, len(audio) // 16000) * knobs.scale}
    else:
        audio_tokens = max(1, len(audio) // 1000) * knobs.scale
        usage = {
            "type": "tokens",
            "input_tokens": audio_tokens,
            "input_token_details": {"text_tokens": 0, "audio_tokens": audio_tokens},
            "output_tokens": output,
            "total_tokens": audio_tokens + output,
        }
    text = _text(knobs.chunks)
    if form.get("stream") == "true":
        events = [
            _sse({"type": "transcript.text.delta", "delta": _word(i), "logprobs": []})
            for i in range(knobs.chunks)
        ]
        done = {"type": "transcript.text.done", "text": text, "logprobs": [], "usage": usage}
        await reply.stream([*events, _sse(done)])
        return
    await reply.generating()
    response_format = form.get("response_format", "json")
    if response_format in ("text", "srt", "vtt"):
        await reply.body(_subtitles(response_format, text), b"text/plain; charset=utf-8")
    elif response_format == "verbose_json":
        seconds = max(1, len(audio) // 16000)
        segment = {
            "id": 0,
            "seek": 0,
            "start": 0.0,
            "end": float(seconds),
            "text": text,
            "tokens": list(range(knobs.chunks)),
            "temperature": 0.0,
            "avg_logprob": -0.1,
            "compression_ratio": 1.0,
            "no_speech_prob": 0.0,
        }
        verbose = {
            "task": "transcribe",
            "language": "english",
            "duration": float(seconds),
            "text": text,
            "segments": [segment],
            "usage": {"type": "duration", "seconds": seconds * knobs.scale},
        }
        await reply.json(200, verbose)
    else:
        await reply.json(200, {"text": text, "usage": usage})


def _subtitles(response_format: str, text: str) -> bytes:
    if response_format == "srt":
        return f"1\n00:00:00,000 --> 00:00:01,000\n{text}\n\n".encode()
    if response_format == "vtt":
        return f"WEBVTT\n\n00:00:00.000 --> 00:00:01.000\n{text}\n\n".encode()
    return text.encode()


def _wav(samples: int, rate: int = 8000) -> bytes:
    """A mono 16-bit PCM WAV of silence."""
    data = b"\0\0" * samples
    header = struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + len(data),
        b"WAVE",
        b"fmt ",
        16,
        1,  # PCM
        1,  # mono
        rate,
        rate * 2,
        2,
        16,
        b"data",
        len(data),
    )
    return header + data


async def _speech(request: dict[str, Any], knobs: Knobs, reply: Reply) -> None:
    # A tenth of a second of silence per word of input.
    samples = 800 * max(1, count_words({"input": request.get("input", "")}))
    await reply.generating()
    await reply.body(_wav(samples), b"audio/wav")


def _vector(dimensions: int, seed: int) -> list[float]:
    return [round(((seed + i) % 10 + 1) / 10, 1) for i in range(dimensions)]


async def _embeddings(request: dict[str, Any], knobs: Knobs, reply: Reply) -> None:
    raw = request.get("input", "")
    # One string, a list of strings, one list of token ids, or a list of those.
    if isinstance(raw, str) or (isinstance(raw, list) and raw and all(map(_is_int, raw))):
        inputs: list[Any] = [raw]
    else:
        inputs = raw if isinstance(raw, list) else [raw]
    dimensions = request.get("dimensions") or 3
    data = []
    for index, _ in enumerate(inputs):
        vector = _vector(dimensions, index)
        embedding: Any = vector
        if request.get("encoding_format") == "base64":
            embedding = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    tokens = prompt_tokens({"input": raw}) * knobs.scale
    await reply.json(
        200,
        {
            "object": "list",
            "data": data,
            "model": request.get("model", "mock-embedding"),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        },
    )


async def _models(request: dict[str, Any], knobs: Knobs, reply: Reply) -> None:
    model = {"id": "mock-model", "object": "model", "created": 0, "owned_by": "mock"}
    await reply.json(200, {"object": "list", "data": [model]})


# ---- Anthropic --------------------------------------------------------------------------


def _anthropic_usage(usage: Usage, output: int, delta: bool = False) -> dict[str, Any]:
    counts: dict[str, Any] = {
        "input_tokens": usage.prompt - usage.cached - usage.cache_write,
        "cache_creation_input_tokens": usage.cache_write,
        "cache_read_input_tokens": usage.cached,
        "output_tokens": output,
    }
    if not delta:
        counts["service_tier"] = "standard"
    return counts


def _chosen_tool(request: dict[str, Any]) -> dict[str, Any] | None:
    """The client tool a request with `tools` gets called: the one tool_choice names, else
    the first; none when tool_choice is none."""
    choice = request.get("tool_choice") or {}
    if not isinstance(choice, dict) or choice.get("type") == "none":
        return None
    tools = [
        tool
        for tool in request.get("tools") or []
        if isinstance(tool, dict) and isinstance(tool.get("input_schema"), dict)
    ]
    for tool in tools:
        if choice.get("type") == "tool" and tool.get("name") == choice.get("name"):
            return tool
    return tools[0] if tools else None


def _anthropic_message(
    request: dict[str, Any], content: list[dict[str, Any]], stop: str | None, usage: dict[str, Any]
) -> dict[str, Any]:
    return {
        "id": "msg_mock",
        "type": "message",
        "role": "assistant",
        "model": request.get("model", "mock-model"),
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": usage,
    }


def _anthropic_thinking(request: dict[str, Any]) -> bool:
    thinking = request.get("thinking")
    return isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive")


_SIGNATURE = "bW9jay1zaWduYXR1cmU="


async def _anthropic(request: dict[str, Any], knobs: Knobs, reply: Reply) -> None:
    thinking = _anthropic_thinking(request)
    usage = _usage(request, knobs, knobs.chunks, thinking)
    tool = _chosen_tool(request)
    stop = "tool_use" if tool else "end_turn"
    # Each content block: (its whole form, its form in content_block_start, its deltas).
    blocks: list[tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]] = []
    if thinking:
        whole: dict[str, Any] = {
            "type": "thinking",
            "thinking": _text(knobs.chunks),
            "signature": _SIGNATURE,
        }
        deltas = [{"type": "thinking_delta", "thinking": _word(i)} for i in range(knobs.chunks)]
        deltas.append({"type": "signature_delta", "signature": _SIGNATURE})
        blocks.append((whole, {**whole, "thinking": "", "signature": ""}, deltas))
    if tool:
        tool_input = _example_input(tool["input_schema"])
        whole = {"type": "tool_use", "id": "toolu_mock", "name": tool["name"], "input": tool_input}
        deltas = [
            {"type": "input_json_delta", "partial_json": piece}
            for piece in _split(_dumps(tool_input).decode(), knobs.chunks)
        ]
        blocks.append((whole, {**whole, "input": {}}, deltas))
    else:
        whole = {"type": "text", "text": _text(knobs.chunks)}
        deltas = [{"type": "text_delta", "text": _word(i)} for i in range(knobs.chunks)]
        blocks.append((whole, {**whole, "text": ""}, deltas))
    # Output tokens include thinking, as Anthropic counts them.
    output = usage.completion
    if not request.get("stream"):
        await reply.generating()
        content = [whole for whole, _, _ in blocks]
        usage_json = _anthropic_usage(usage, output)
        await reply.json(200, _anthropic_message(request, content, stop, usage_json))
        return
    start = _anthropic_message(request, [], None, _anthropic_usage(usage, 1 * knobs.scale))
    events = [_sse({"type": "message_start", "message": start}, "message_start")]
    for index, (_, opening, deltas) in enumerate(blocks):
        events.append(
            _sse(
                {"type": "content_block_start", "index": index, "content_block": opening},
                "content_block_start",
            )
        )
        if index == 0:
            events.append(_sse({"type": "ping"}, "ping"))
        events += [
            _sse(
                {"type": "content_block_delta", "index": index, "delta": delta},
                "content_block_delta",
            )
            for delta in deltas
        ]
        events.append(_sse({"type": "content_block_stop", "index": index}, "content_block_stop"))
    events += [
        _sse(
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                # Running totals, as the API sends them now: the final counts, not increments.
                "usage": _anthropic_usage(usage, output, delta=True),
            },
            "message_delta",
        ),
        _sse({"type": "message_stop"}, "message_stop"),
    ]
    await reply.stream(events)


async def _anthropic_count_tokens(request: dict[str, Any], knobs: Knobs, reply: Reply) -> None:
    await reply.json(200, {"input_tokens": prompt_tokens(request) * knobs.scale})


# ---- Gemini -----------------------------------------------------------------------------


def _gemini_thinking(request: dict[str, Any]) -> bool:
    config = _either(request, "generationConfig", "generation_config")
    thinking = _either(config, "thinkingConfig", "thinking_config")
    budget = thinking.get("thinkingBudget", thinking.get("thinking_budget"))
    return bool(
        thinking.get("includeThoughts")
        or thinking.get("include_thoughts")
        or thinking.get("thinkingLevel")
        or thinking.get("thinking_level")
        or (_is_int(budget) and budget != 0)
    )


def _gemini_usage(usage: Usage, candidates: int) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "promptTokenCount": usage.prompt,
        "candidatesTokenCount": candidates,
        "totalTokenCount": usage.prompt + candidates + usage.reasoning,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": usage.prompt}],
    }
    if usage.reasoning:
        metadata["thoughtsTokenCount"] = usage.reasoning
    if usage.cached:
        metadata["cachedContentTokenCount"] = usage.cached
    return metadata


def _either(value: Any, camel: str, snake: str) -> dict[str, Any]:
    """value[camel] or value[snake] when it is an object, else {}."""
    if not isinstance(value, dict):
        return {}
    found = value.get(camel, value.get(snake))
    return found if isinstance(found, dict) else {}


def _gemini_function(request: dict[str, Any]) -> dict[str, Any] | None:
    """The function a request with functionDeclarations gets called (the first allowed),
    as a functionCall part; none when function calling is off (mode NONE)."""
    # Google's JSON accepts camelCase and snake_case names alike; the SDKs send both.
    config = _either(request, "toolConfig", "tool_config")
    calling = _either(config, "functionCallingConfig", "function_calling_config")
    if calling.get("mode") == "NONE":
        return None
    allowed = calling.get("allowedFunctionNames") or calling.get("allowed_function_names")
    for tool in request.get("tools") or []:
        declarations = tool.get("functionDeclarations") if isinstance(tool, dict) else None
        for function in declarations or []:
            if not isinstance(function, dict) or not isinstance(function.get("name"), str):
                continue
            if allowed and function["name"] not in allowed:
                continue
            schema = (
                function.get("parametersJsonSchema")
                or function.get("parameters_json_schema")
                or function.get("parameters")
                or {}
            )
            arguments = _example_input(schema if isinstance(schema, dict) else {})
            return {"functionCall": {"name": function["name"], "args": arguments}}
    return None


def _gemini_response(
    request: dict[str, Any],
    text: str,
    finished: bool,
    metadata: dict[str, Any],
    part: dict[str, Any] | None = None,
) -> dict[str, Any]:
    candidate: dict[str, Any] = {
        "content": {"role": "model", "parts": [part or {"text": text}]},
        "index": 0,
    }
    if finished:
        candidate["finishReason"] = "STOP"
    return {
        "candidates": [candidate],
        "usageMetadata": metadata,
        "modelVersion": "mock-model",
        "responseId": "mock-response",
    }


async def _gemini(request: dict[str, Any], knobs: Knobs, reply: Reply) -> None:
    usage = _usage(request, knobs, knobs.chunks, _gemini_thinking(request))
    await reply.generating()
    metadata = _gemini_usage(usage, usage.output)
    part = _gemini_function(request)
    payload = _gemini_response(request, _text(knobs.chunks), True, metadata, part)
    await reply.json(200, payload, gemini=True)


def _words_written(request: dict[str, Any]) -> int:
    """How many of the reply's words the request's model turn already holds, when it asks
    to continue (a model turn, then a user turn, last)."""
    contents = request.get("contents")
    if not isinstance(contents, list) or len(contents) < 2:
        return 0
    model = contents[-2]
    if not isinstance(model, dict) or model.get("role") != "model":
        return 0
    text = "".join(
        part.get("text", "") for part in model.get("parts") or [] if isinstance(part, dict)
    )
    count = 0
    while text.startswith(_word(count)):
        text = text[len(_word(count)) :]
        count += 1
    return count


async def _gemini_stream(request: dict[str, Any], knobs: Knobs, reply: Reply) -> None:
    first = min(_words_written(request), knobs.chunks) if knobs.resume else 0
    usage = _usage(request, knobs, knobs.chunks - first, _gemini_thinking(request))
    chunks = [
        _gemini_response(
            request,
            _word(i),
            i == knobs.chunks - 1,
            _gemini_usage(usage, (i + 1 - first) * knobs.scale),  # candidates so far
        )
        for i in range(first, knobs.chunks)
    ]
    function = _gemini_function(request)
    if function:
        # Gemini sends a function call whole, in one chunk.
        metadata = _gemini_usage(usage, usage.output)
        chunks = [_gemini_response(request, "", True, metadata, function)]
    if knobs.sse:
        await reply.stream([_sse(chunk) for chunk in chunks])
        return
    # Without alt=sse: one JSON array, written element by element as the real API does.
    pieces = [
        (b"[" if i == 0 else b"\r\n,") + _gemini_dumps(chunk) for i, chunk in enumerate(chunks)
    ]
    pieces.append(b"\r\n]" if chunks else b"[]")
    await reply.stream(pieces, _GEMINI_JSON)


async def _gemini_count_tokens(request: dict[str, Any], knobs: Knobs, reply: Reply) -> None:
    tokens = prompt_tokens(request) * knobs.scale
    details = [{"modality": "TEXT", "tokenCount": tokens}]
    await reply.json(200, {"totalTokens": tokens, "promptTokensDetails": details}, gemini=True)


def _gemini_vector(request: dict[str, Any], seed: int) -> dict[str, Any]:
    dimensions = request.get("outputDimensionality") or 3
    return {"values": _vector(dimensions, seed)}


async def _gemini_embed(request: dict[str, Any], knobs: Knobs, reply: Reply) -> None:
    await reply.json(200, {"embedding": _gemini_vector(request, 0)}, gemini=True)


async def _gemini_batch_embed(request: dict[str, Any], knobs: Knobs, reply: Reply) -> None:
    requests = [r for r in request.get("requests") or [] if isinstance(r, dict)]
    embeddings = [_gemini_vector(r, index) for index, r in enumerate(requests)]
    await reply.json(200, {"embeddings": embeddings}, gemini=True)
