"""How replies go on the wire: compact JSON (OpenAI, Anthropic) or Google's pretty JSON,
SSE events, whole bodies with optional gzip, streams that honour the delay, gzip and cut
knobs; and how request bodies are read (JSON, multipart forms)."""

from __future__ import annotations

import asyncio
import json
import time
import zlib
from collections import deque
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

from core.devtools.mock_upstream.knobs import Knobs
from core.types import Receive, Send


def dumps(payload: Any) -> bytes:
    """Compact, as OpenAI and Anthropic serialise."""
    return json.dumps(payload, separators=(",", ":")).encode()


def gemini_dumps(payload: Any) -> bytes:
    """Google's APIs pretty-print their JSON."""
    return json.dumps(payload, indent=2).encode()


async def send_whole(
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


SSE_TYPE = b"text/event-stream; charset=utf-8"


GEMINI_JSON = b"application/json; charset=UTF-8"


class Reply:
    """One request's way back: whole bodies and streams, with the gzip and cut knobs."""

    def __init__(
        self, streams: deque[dict[str, Any]], send: Send, receive: Receive, knobs: Knobs
    ) -> None:
        self.streams = streams  # how each stream ended, for /_mock/streams
        self.send = send
        self.receive = receive
        self.knobs = knobs

    async def json(self, status: int, payload: Any, gemini: bool = False) -> None:
        body = gemini_dumps(payload) if gemini else dumps(payload)
        await send_whole(
            self.send,
            status,
            body,
            self.knobs.gzip,
            GEMINI_JSON if gemini else b"application/json",
        )

    async def body(self, body: bytes, content_type: bytes) -> None:
        await send_whole(self.send, 200, body, self.knobs.gzip, content_type)

    async def generating(self) -> None:
        """The time a real model takes to generate a whole reply."""
        if self.knobs.delay:
            await asyncio.sleep(self.knobs.delay * self.knobs.chunks)

    async def stream(self, events: list[bytes], content_type: bytes = SSE_TYPE) -> None:
        knobs = self.knobs
        record: dict[str, Any] = {"events": len(events), "sent": 0, "completed": False}
        self.streams.append(record)
        gone = asyncio.Event()

        async def watch() -> None:
            while (await self.receive())["type"] != "http.disconnect":
                pass
            gone.set()

        headers = [(b"content-type", content_type)]
        if content_type == SSE_TYPE:
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


def loads(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body or b"{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def json_body(content_type: str, body: bytes) -> dict[str, Any]:
    """A JSON request body as an object ({} when it is not one)."""
    return loads(body)


def read_form(content_type: str, body: bytes) -> dict[str, Any]:
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


def sse(data: Any, event: str | None = None) -> bytes:
    prefix = f"event: {event}\n" if event else ""
    return prefix.encode() + b"data: " + dumps(data) + b"\n\n"
