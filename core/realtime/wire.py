"""What the proxy knows of each provider's realtime WebSocket protocol, by wire name.

- OpenAI Realtime: `GET <base>/realtime?model=...`; servers send their key as
  `Authorization: Bearer`, browsers (which cannot set headers on a WebSocket) as the
  subprotocol `openai-insecure-api-key.<key>` beside `realtime`. Usage: each
  `response.done` event's `response.usage`, summed over the session.
- Gemini Live: `<host>/ws/google.ai.generativelanguage.<version>.GenerativeService.
  BidiGenerateContent`, key in `x-goog-api-key` or `?key=`; the model is named in the
  client's first message, `{"setup": {"model": "models/..."}}`. Usage: `usageMetadata`
  on server messages, per turn (a turn may repeat growing figures: the largest of each
  turn counts, and turns add up).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from core.protocols import Usage

BROWSER_KEY_PREFIX = "openai-insecure-api-key."


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


class SessionMeter:
    """Reads usage from the upstream's frames as they pass; `total` is the session's."""

    def __init__(self) -> None:
        self.total = Usage()
        self.frames = 0

    def feed(self, frame: str | bytes) -> None:
        raise NotImplementedError

    def finish(self) -> Usage:
        return self.total


def _parse(frame: str | bytes) -> Any:
    try:
        return json.loads(frame)
    except ValueError:
        return None


def _add(one: Usage, other: Usage) -> Usage:
    return Usage(
        one.input_tokens + other.input_tokens,
        one.output_tokens + other.output_tokens,
        one.cached_input_tokens + other.cached_input_tokens,
    )


class OpenAIRealtimeMeter(SessionMeter):
    def feed(self, frame: str | bytes) -> None:
        marker = '"response.done"' if isinstance(frame, str) else b'"response.done"'
        if marker not in frame:  # type: ignore[operator]
            return  # audio deltas and the like: never parsed
        event = _parse(frame)
        if not isinstance(event, dict) or event.get("type") != "response.done":
            return
        response = event.get("response")
        usage = response.get("usage") if isinstance(response, dict) else None
        if not isinstance(usage, dict):
            return
        details = usage.get("input_token_details")
        cached = _int(details.get("cached_tokens")) if isinstance(details, dict) else 0
        self.total = _add(
            self.total,
            Usage(_int(usage.get("input_tokens")), _int(usage.get("output_tokens")), cached),
        )


class GeminiLiveMeter(SessionMeter):
    def __init__(self) -> None:
        super().__init__()
        self.turn = Usage()

    def feed(self, frame: str | bytes) -> None:
        text = frame if isinstance(frame, str) else frame.decode("utf-8", "replace")
        if "sageMetadata" not in text and "urnComplete" not in text:
            return
        message = _parse(text)
        if not isinstance(message, dict):
            return
        metadata = message.get("usageMetadata", message.get("usage_metadata"))
        if isinstance(metadata, dict):
            read = _gemini_usage(metadata)
            turn = self.turn
            self.turn = Usage(
                max(turn.input_tokens, read.input_tokens),
                max(turn.output_tokens, read.output_tokens),
                max(turn.cached_input_tokens, read.cached_input_tokens),
            )
        content = message.get("serverContent", message.get("server_content"))
        if isinstance(content, dict) and (
            content.get("turnComplete") is True or content.get("turn_complete") is True
        ):
            self.total = _add(self.total, self.turn)
            self.turn = Usage()

    def finish(self) -> Usage:
        return _add(self.total, self.turn)


def _gemini_usage(metadata: dict[str, Any]) -> Usage:
    def field(camel: str, snake: str) -> int:
        return _int(metadata.get(camel, metadata.get(snake)))

    prompt = field("promptTokenCount", "prompt_token_count") + field(
        "toolUsePromptTokenCount", "tool_use_prompt_token_count"
    )
    output = (
        field("responseTokenCount", "response_token_count")
        or field("candidatesTokenCount", "candidates_token_count")
    ) + field("thoughtsTokenCount", "thoughts_token_count")
    return Usage(prompt, output, field("cachedContentTokenCount", "cached_content_token_count"))


class RealtimeWire:
    """One provider's realtime protocol."""

    name = "openai"
    # The model comes with the first client message rather than the URL.
    model_in_first_message = False

    def is_session_path(self, path: str) -> bool:
        raise NotImplementedError

    def model_in_query(self, query: bytes) -> str | None:
        return None

    def model_in_setup(self, message: Any) -> str | None:
        return None

    def meter(self) -> SessionMeter:
        raise NotImplementedError


class OpenAIRealtime(RealtimeWire):
    name = "openai"

    def is_session_path(self, path: str) -> bool:
        return path.endswith("/realtime")

    def model_in_query(self, query: bytes) -> str | None:
        for name, value in parse_qsl(query.decode("latin-1")):
            if name == "model":
                return value
        return None

    def meter(self) -> SessionMeter:
        return OpenAIRealtimeMeter()


class GeminiLive(RealtimeWire):
    name = "gemini"
    model_in_first_message = True

    def is_session_path(self, path: str) -> bool:
        # Constrained sessions (ephemeral tokens) go to Google directly, not through here.
        return path.startswith("/ws/") and path.endswith(".generativeservice.bidigeneratecontent")

    def model_in_setup(self, message: Any) -> str | None:
        setup = message.get("setup") if isinstance(message, dict) else None
        model = setup.get("model") if isinstance(setup, dict) else None
        return model if isinstance(model, str) else None

    def meter(self) -> SessionMeter:
        return GeminiLiveMeter()


REALTIME_WIRES: dict[str, RealtimeWire] = {"openai": OpenAIRealtime(), "gemini": GeminiLive()}


def split_browser_key(subprotocols: list[str]) -> tuple[str | None, list[str]]:
    """The caller's credential from OpenAI's browser subprotocol, and the others to pass on."""
    credential = None
    kept = []
    for protocol in subprotocols:
        if protocol.startswith(BROWSER_KEY_PREFIX):
            credential = protocol[len(BROWSER_KEY_PREFIX) :]
        else:
            kept.append(protocol)
    return credential, kept
