"""A fake OpenAI Realtime and Gemini Live upstream (an ASGI app served by uvicorn), plus the
two ephemeral-key routes. It refuses a handshake that lacks the real (fake) key, echoes
frames, reports usage the way each provider does, and closes with a code on request."""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from core.types import Receive, Scope, Send
from tests.support.servers import FAKE_UPSTREAM_KEY

GEMINI_KEY = "fake-gemini-upstream-key-not-real"
LIVE_PATH = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
# What `response.create` earns: the usage of one `response.done`.
OPENAI_USAGE = {
    "total_tokens": 70,
    "input_tokens": 50,
    "output_tokens": 20,
    "input_token_details": {"cached_tokens": 8, "text_tokens": 42, "audio_tokens": 0},
    "output_token_details": {"text_tokens": 20, "audio_tokens": 0},
}
# What one Gemini turn reports: a growing snapshot, then the final figures.
GEMINI_TURN = [
    {"promptTokenCount": 30, "responseTokenCount": 4, "totalTokenCount": 34},
    {"promptTokenCount": 30, "responseTokenCount": 9, "totalTokenCount": 39},
]


@dataclass
class FakeRealtime:
    sessions: list[dict[str, Any]] = field(default_factory=list)
    minted: list[dict[str, Any]] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
        elif scope["type"] == "http":
            await self.mint(scope, receive, send)
        elif scope["type"] == "websocket":
            await self.session(scope, receive, send)

    async def mint(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        if not body:  # a read (GET /v1/models): nothing minted
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"{}"})
            return
        self.minted.append({"path": scope["path"], "headers": headers, "body": json.loads(body)})
        if scope["path"].endswith("auth_tokens"):
            reply = {"name": "auth_tokens/fake-ephemeral"}
        else:
            reply = {"value": "ek_fake_ephemeral", "expires_at": 1_900_000_000}
        data = json.dumps(reply).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": data})

    async def session(self, scope: Scope, receive: Receive, send: Send) -> None:
        await receive()  # websocket.connect
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        query = parse_qs(scope["query_string"].decode())
        seen = {
            "path": scope["path"],
            "headers": headers,
            "query": query,
            "subprotocols": list(scope.get("subprotocols", [])),
            "received": [],
            "closed_with": None,
        }
        self.sessions.append(seen)
        gemini = scope["path"].startswith("/ws/google.ai.generativelanguage.")
        good = (
            headers.get("x-goog-api-key") == GEMINI_KEY
            if gemini
            else headers.get("authorization") == f"Bearer {FAKE_UPSTREAM_KEY}"
        )
        if not good or "key" in query:
            body = b'{"error":{"message":"bad key"}}'
            await send({"type": "websocket.http.response.start", "status": 401, "headers": []})
            await send({"type": "websocket.http.response.body", "body": body})
            return
        accept: dict[str, Any] = {"type": "websocket.accept"}
        if "realtime" in seen["subprotocols"]:
            accept["subprotocol"] = "realtime"
        await send(accept)
        if not gemini:
            await send_json(send, {"type": "session.created", "session": {"model": "fake"}})
        pending: list[asyncio.Future[None]] = []
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                seen["closed_with"] = message.get("code")
                for task in pending:
                    task.cancel()
                return
            frame = message.get("text")
            if frame is None:
                frame = message.get("bytes")
            seen["received"].append(frame)
            try:
                event = json.loads(frame)
            except (ValueError, TypeError):
                event = None
            if not isinstance(event, dict):
                await send(echo(frame))
            elif event.get("type") == "test.close":
                await send(
                    {"type": "websocket.close", "code": event["code"], "reason": event["reason"]}
                )
                return
            elif event.get("type") == "test.quote_key":
                # A provider quoting the key it was sent, as providers' refusals do: whole
                # in a text and a binary frame, masked in its close reason.
                key = (headers.get("authorization") or "")[len("Bearer ") :]
                await send_json(send, {"type": "error", "error": {"message": f"bad key {key}"}})
                await send_bytes(send, {"error": {"message": f"bad key {key}"}})
                masked = key[:3] + "*" * 10 + key[-4:]
                await send({"type": "websocket.close", "code": 4001, "reason": f"key {masked}"})
                return
            elif event.get("type") == "test.key_in_session":
                # A provider echoing the key it was sent into the session it reports (the
                # model field telemetry reads), then a usual response.
                key = (headers.get("authorization") or "")[len("Bearer ") :]
                session = {"model": f"gpt-realtime-for-{key}"}
                await send_json(send, {"type": "session.updated", "session": session})
            elif event.get("type") == "test.slow_response":
                # A long answer: begun at once, its usage only after `seconds`.
                await send_json(send, {"type": "response.created", "response": {"id": "r2"}})
                response = {"id": "r2", "status": "completed", "usage": OPENAI_USAGE}
                pending.append(asyncio.ensure_future(send_later(send, event["seconds"], response)))
            elif event.get("type") == "test.unmetered_response":
                # A response whose `response.done` reports no usage the proxy can read.
                await send_json(send, {"type": "response.created", "response": {"id": "r3"}})
                done = {"type": "response.done", "response": {"id": "r3", "status": "completed"}}
                await send_json(send, done)
            elif event.get("type") == "response.create":
                await send_json(send, {"type": "response.created", "response": {"id": "r1"}})
                response = {"id": "r1", "status": "completed", "usage": OPENAI_USAGE}
                done = {"type": "response.done", "response": response}
                await send_json(send, done)
            elif "setup" in event:
                await send_bytes(send, {"setupComplete": {}})
            elif "clientContent" in event and event.get("testUnmetered"):
                # A Live turn that answers and completes without any usageMetadata.
                content = {"modelTurn": {"parts": [{"text": "Hello from Live"}]}}
                await send_bytes(send, {"serverContent": content})
                await send_bytes(send, {"serverContent": {"turnComplete": True}})
            elif "clientContent" in event or "client_content" in event:
                content = {"modelTurn": {"parts": [{"text": "Hello from Live"}]}}
                await send_bytes(send, {"serverContent": content, "usageMetadata": GEMINI_TURN[0]})
                await send_bytes(
                    send,
                    {"serverContent": {"turnComplete": True}, "usageMetadata": GEMINI_TURN[1]},
                )
            else:
                await send(echo(frame))


async def send_later(send: Send, seconds: float, response: dict[str, Any]) -> None:
    await asyncio.sleep(seconds)
    with contextlib.suppress(Exception):  # the session may be gone by then
        await send_json(send, {"type": "response.done", "response": response})


def echo(frame: str | bytes) -> dict[str, Any]:
    if isinstance(frame, str):
        return {"type": "websocket.send", "text": frame}
    return {"type": "websocket.send", "bytes": frame}


async def send_json(send: Send, event: dict[str, Any]) -> None:
    await send({"type": "websocket.send", "text": json.dumps(event)})


async def send_bytes(send: Send, event: dict[str, Any]) -> None:
    # Gemini Live sends its JSON in binary frames.
    await send({"type": "websocket.send", "bytes": json.dumps(event).encode()})
