"""The mock's realtime sessions: OpenAI Realtime (`/v1/realtime`) and Gemini Live (its
BidiGenerateContent WebSocket), enough for `make demo` and the SDKs' realtime clients to
hold a session through the proxy with no account. A turn answers a few words of text and
reports usage the way each provider does; any key is accepted, as everywhere in the mock."""

from __future__ import annotations

import json
from typing import Any

from core.types import Receive, Scope, Send

REPLY_WORDS = ("Hello", " from", " the", " mock", " realtime", " upstream.")
# What one OpenAI `response.done` reports.
OPENAI_USAGE = {
    "total_tokens": 26,
    "input_tokens": 20,
    "output_tokens": 6,
    "input_token_details": {"cached_tokens": 0, "text_tokens": 20, "audio_tokens": 0},
    "output_token_details": {"text_tokens": 6, "audio_tokens": 0},
}
GEMINI_USAGE = {"promptTokenCount": 20, "responseTokenCount": 6, "totalTokenCount": 26}


def is_live_path(path: str) -> bool:
    return path.endswith("GenerativeService.BidiGenerateContent")


async def realtime_session(scope: Scope, receive: Receive, send: Send) -> None:
    """One WebSocket session, OpenAI's or Gemini's by its path, until the caller closes."""
    if (await receive())["type"] != "websocket.connect":
        return
    gemini = is_live_path(scope["path"])
    accept: dict[str, Any] = {"type": "websocket.accept"}
    if "realtime" in scope.get("subprotocols", []):
        accept["subprotocol"] = "realtime"
    await send(accept)
    if not gemini:
        await _send(send, {"type": "session.created", "session": {"model": "mock-realtime"}})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        frame = message.get("text") or message.get("bytes") or b""
        try:
            event = json.loads(frame)
        except (ValueError, TypeError):
            continue
        if not isinstance(event, dict):
            continue
        if gemini:
            await _gemini_turn(send, event)
        elif event.get("type") == "response.create":
            await _openai_turn(send)


async def _openai_turn(send: Send) -> None:
    await _send(send, {"type": "response.created", "response": {"id": "resp_mock"}})
    for word in REPLY_WORDS:
        delta = {"type": "response.output_text.delta", "response_id": "resp_mock", "delta": word}
        await _send(send, delta)
    text = "".join(REPLY_WORDS)
    await _send(send, {"type": "response.output_text.done", "text": text})
    done = {"type": "response.done", "response": {"id": "resp_mock", "usage": OPENAI_USAGE}}
    await _send(send, done)


async def _gemini_turn(send: Send, event: dict[str, Any]) -> None:
    if "setup" in event:
        await _send(send, {"setupComplete": {}}, binary=True)
    elif any(name in event for name in ("clientContent", "client_content", "realtimeInput")):
        for word in REPLY_WORDS:
            content = {"modelTurn": {"parts": [{"text": word}]}}
            await _send(send, {"serverContent": content}, binary=True)
        done = {"serverContent": {"turnComplete": True}, "usageMetadata": GEMINI_USAGE}
        await _send(send, done, binary=True)


async def _send(send: Send, event: dict[str, Any], *, binary: bool = False) -> None:
    data = json.dumps(event)
    if binary:  # Gemini Live sends its JSON in binary frames
        await send({"type": "websocket.send", "bytes": data.encode()})
    else:
        await send({"type": "websocket.send", "text": data})
