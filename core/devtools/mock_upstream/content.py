"""What every reply is made of, deterministic so tests can predict it: the words, the
usage figures, tool-call arguments that fit a schema, embedding vectors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.devtools.mock_upstream.knobs import Knobs

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
        return sum(1 if is_int(item) else count_words(item) for item in value)
    if isinstance(value, dict):
        return sum(count_words(item) for key, item in value.items() if key in _TEXT_KEYS)
    return 0


def prompt_tokens(request: dict[str, Any]) -> int:
    """The mock's prompt token count for a request: its words, at least 1."""
    return max(1, count_words(request))


def is_int(value: Any) -> bool:
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


def usage_for(request: dict[str, Any], knobs: Knobs, output: int, reasoning: bool = False) -> Usage:
    prompt = prompt_tokens(request) * knobs.scale
    cached = min(knobs.cached, prompt)
    return Usage(
        prompt=prompt,
        output=output * knobs.scale,
        reasoning=knobs.chunks * knobs.scale if reasoning else 0,
        cached=cached,
        cache_write=min(knobs.cache_write, prompt - cached),
    )


def word(index: int) -> str:
    return WORDS[index % len(WORDS)]


def reply_text(chunks: int) -> str:
    return "".join(word(i) for i in range(chunks))


def example_input(schema: dict[str, Any]) -> dict[str, Any]:
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


def split_text(text: str, pieces: int) -> list[str]:
    if pieces <= 0:
        return []
    return [text[len(text) * i // pieces : len(text) * (i + 1) // pieces] for i in range(pieces)]


def mock_vector(dimensions: int, seed: int) -> list[float]:
    return [round(((seed + i) % 10 + 1) / 10, 1) for i in range(dimensions)]
