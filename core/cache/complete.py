"""Whether a reply is an answer worth keeping: finished, and not an error dressed as a 200.

A stream can end cleanly at the HTTP level and still be unfinished: the provider closed it
early, a gateway cut it, a compatible server forgot its terminator. Replayed for the cache's
lifetime, it would give every caller the same half answer. So a reply is kept only when its
own protocol says it is done:

- OpenAI chat and completions streams: a `finish_reason` on every choice written and
  `data: [DONE]`;
- OpenAI Responses streams: a `response.completed` event;
- Anthropic streams: `message_stop`;
- Gemini (`alt=sse` or the streamed JSON array): a `finishReason` on every candidate written
  (with candidateCount above 1 they finish apart);
- any whole JSON reply: a JSON value that parses, with no top-level `error` member other
  than `null` (some vendors, OpenRouter among them, answer errors with a 200);
- nothing else: a reply that is neither JSON nor an event stream (an HTML page a gateway
  answered with a 200) is no answer of a metered route.

Any event or array item with a top-level `error` (a mid-stream failure) also keeps a
stream out. The check runs once per reply that would be stored, on the copy the cache holds
(at most CACHE_MAX_ENTRY_BYTES), and parses the JSON: no assumption about spacing, member
order or escapes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

_BOUNDARY = re.compile(rb"\r?\n\r?\n")


def _events(body: bytes) -> Iterator[tuple[bytes, Any]]:
    """(event name, parsed data) of every SSE event; data that is not JSON comes as bytes."""
    for raw in _BOUNDARY.split(body):
        name = b""
        lines = []
        for line in raw.replace(b"\r\n", b"\n").split(b"\n"):
            if line.startswith(b"event:"):
                name = line[6:].strip()
            elif line.startswith(b"data:"):
                lines.append(line[5:].strip())
        if not lines:
            continue
        data = b"\n".join(lines)
        try:
            yield name, json.loads(data)
        except ValueError:
            yield name, data


def _is_error(item: Any) -> bool:
    # Not the member's mere presence: every Responses API object carries `"error": null`.
    return isinstance(item, dict) and item.get("error") is not None


def _all_finished(items: list[Any], member: str, reason: str) -> bool:
    """Every answer written (`choices` / `candidates`, told apart by `index`) has a reason
    it finished, and there is one. Not merely some answer: with n or candidateCount above 1
    the answers are written side by side and finish apart, so a stream cut after the first
    finished still lacks the end of the others. (Gemini leaves out an `index` of 0.)"""
    seen: set[str] = set()
    done: set[str] = set()
    for item in items:
        if not isinstance(item, dict):
            continue
        for answer in item.get(member) or []:
            if not isinstance(answer, dict):
                continue
            index = repr(answer.get("index", 0))  # repr: any JSON value, hashable
            seen.add(index)
            if answer.get(reason):
                done.add(index)
    return bool(done) and seen <= done


def _openai_chat_done(items: list[tuple[bytes, Any]]) -> bool:
    done = any(data == b"[DONE]" for _, data in items)
    return done and _all_finished([data for _, data in items], "choices", "finish_reason")


def _gemini_done(items: list[Any]) -> bool:
    return _all_finished(items, "candidates", "finishReason")


def finished_stream(wire: str, body: bytes) -> bool:
    """Whether an event stream of this wire ("openai", "anthropic", "gemini") ended done."""
    items = list(_events(body))
    if not items or any(_is_error(data) or name == b"error" for name, data in items):
        return False
    kinds = {data.get("type") for _, data in items if isinstance(data, dict)}
    names = {name for name, _ in items}
    if wire == "anthropic":
        return "message_stop" in kinds or b"message_stop" in names
    if wire == "gemini":
        return _gemini_done([data for _, data in items])
    if any(isinstance(kind, str) and kind.startswith("response.") for kind in kinds):
        return "response.completed" in kinds
    return _openai_chat_done(items)


def finished_document(wire: str, body: bytes, stream: bool) -> bool:
    """Whether a whole JSON reply is an answer: parses, no `error`; a streamed Gemini array
    also needs a finishReason."""
    try:
        document = json.loads(body)
    except ValueError:
        return False
    if isinstance(document, list):
        if any(_is_error(item) for item in document):
            return False
        return not stream or wire != "gemini" or _gemini_done(document)
    return not _is_error(document)


def finished(wire: str, content_type: bytes, body: bytes, stream: bool) -> bool:
    """Whether a 200 reply may be kept (see the module's docstring)."""
    kind = content_type.lower()
    if kind.startswith(b"text/event-stream"):
        return finished_stream(wire, body)
    if b"json" in kind or not kind.strip():
        # Unlabelled: kept only if it parses as an answer.
        return finished_document(wire, body, stream)
    # A metered route answers JSON or an event stream: a 200 in any other shape (a
    # gateway's or captive portal's HTML page, plain text) is no answer, and replayed it
    # would stand in for the provider for the cache's whole lifetime.
    return False
