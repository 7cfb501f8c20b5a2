"""Prompt content on spans: only with the standard switch, truncated, every key scrubbed.

OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true puts the request's messages on the
span as `gen_ai.input.messages` (JSON, at most MAX_CHARS). Off by default: a prompt may hold
anything a user typed. Before it leaves, the proxy's own keys and callers' tokens are
replaced, and so is anything shaped like a provider key or a bearer token.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from core.access.tokens import TOKEN_PREFIX

MAX_CHARS = 4096
SWITCH = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
# Provider key shapes (OpenAI sk-..., Anthropic sk-ant-..., Google AIza..., and the vendors'
# Groq gsk_, xAI xai-, Fireworks fw_, Perplexity pplx-: every shape core/config.py masks in
# its problems), JWTs, bearer credentials and this proxy's own per-caller tokens
# (TOKEN_PREFIX + 43 url-safe characters: the proxy keeps only their hashes, so their shape
# is what finds them): a prompt that quotes one does not carry it to a collector.
_KEY_SHAPES = re.compile(
    r"sk-[A-Za-z0-9_\-]{8,}|AIza[0-9A-Za-z_\-]{20,}|eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-.]+"
    r"|(?:gsk_|xai-|fw_|pplx-)[A-Za-z0-9_\-]{12,}"
    r"|(?i:bearer)\s+[A-Za-z0-9._\-~+/=]{8,}|fake-[A-Za-z0-9_\-]{4,}"
    rf"|{re.escape(TOKEN_PREFIX)}[A-Za-z0-9_\-]{{16,}}"
)
REDACTED = "[redacted]"


def capture_wanted(env: Mapping[str, str]) -> bool:
    return env.get(SWITCH, "").strip().lower() in ("true", "1", "yes")


class ContentCapture:
    def __init__(self, secrets: Iterable[str]) -> None:
        # Longest first, so a secret that contains another is replaced whole.
        self.secrets = sorted({s for s in secrets if len(s) >= 8}, key=len, reverse=True)

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return _KEY_SHAPES.sub(REDACTED, text)

    def capture(self, document: Any) -> dict[str, str] | None:
        if not isinstance(document, dict):
            return None
        messages = document.get("messages") or document.get("contents") or document.get("input")
        if messages is None:
            return None
        text = json.dumps(messages, ensure_ascii=False, separators=(",", ":"))
        # Scrubbed before it is cut, so half a key never survives the cut.
        text = self.scrub(text)
        if len(text) > MAX_CHARS:
            text = text[:MAX_CHARS] + "...[truncated]"
        return {"gen_ai.input.messages": text}
