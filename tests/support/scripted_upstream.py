"""An upstream whose replies each test scripts: the shapes a meter must read (gzip, JSON
arrays, replies of many MiB, usage sent late) that a polite mock never sends."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from core.types import Receive, Scope, Send

Reply = Callable[[dict[str, Any]], Any]


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class ScriptedUpstream:
    """`reply(request)` returns (status, headers, list of (delay seconds, bytes))."""

    reply: Reply
    seen: list[Seen] = field(default_factory=list)
    finished: list[bool] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        query = scope.get("query_string", b"").decode("latin-1")
        request = {"path": scope["path"], "headers": headers, "body": body, "query": query}
        self.seen.append(Seen(scope["path"], headers, body))
        status, reply_headers, parts = self.reply(request)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(k.encode(), v.encode()) for k, v in reply_headers],
            }
        )
        try:
            for delay, chunk in parts:
                if delay:
                    await asyncio.sleep(delay)
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            self.finished.append(True)
        except (OSError, asyncio.CancelledError):
            self.finished.append(False)
            raise


def sse(*events: dict[str, Any] | str) -> list[bytes]:
    out = []
    for event in events:
        data = event if isinstance(event, str) else json.dumps(event, separators=(",", ":"))
        out.append(f"data: {data}\n\n".encode())
    return out


def openai_chunks(words: int, usage: dict[str, int] | None) -> list[bytes]:
    base = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    events: list[dict[str, Any] | str] = []
    for i in range(words):
        chunk = {**base, "choices": [{"index": 0, "delta": {"content": f"w{i} "}}]}
        if usage is not None:
            chunk["usage"] = None
        events.append(chunk)
    if usage is not None:
        events.append({**base, "choices": [], "usage": usage})
    events.append("[DONE]")
    return sse(*events)


def gzipped(data: bytes) -> bytes:
    return gzip.compress(data)
