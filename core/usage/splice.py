"""Asking an OpenAI stream for its usage without the caller noticing.

An OpenAI chat or completions stream reports usage only with
`stream_options.include_usage`. When a cap needs the figure and the caller did not ask,
the proxy splices the option into the body bytes (the rest of the body goes upstream as
sent, not re-serialised), and takes back out of the reply what the option adds: the
`"usage":null` member of every chunk and the final usage-only chunk (`"choices":[]`), so
the caller's stream is byte for byte what it would have been.

Both are found with byte patterns that allow whatever whitespace JSON does (an
OpenAI-compatible server writing `"choices": []`, as Python's json.dumps does, is common),
in either member order; an event whose member names are written with `\\u` escapes is parsed
instead (core/usage/jsonbytes.py). A usage-only chunk left in would crash the caller's
`chunk.choices[0]`.
"""

from __future__ import annotations

import json
import re
from typing import Any

from core.usage.jsonbytes import event_json, has_escaped_key, member

_OPTION = b'"stream_options":{"include_usage":true}'
_NULL_USAGE = b',"usage":null'
# `"usage":null` after another member, or first with another after it.
_NULL_USAGE_SPACED = re.compile(rb",\s*" + member(b"usage") + rb"null(?=\s*[,}])")
_NULL_USAGE_FIRST = re.compile(rb"(?<=\{)\s*" + member(b"usage") + rb"null\s*,\s*")
_USAGE_OBJECT = re.compile(member(b"usage") + rb"\{")
_EMPTY_CHOICES = re.compile(member(b"choices") + rb"\[\s*\]")
_ANY_CHOICES = re.compile(member(b"choices"))
_MAX_EVENT = 1024 * 1024


def _top_level_member(body: bytes, name: bytes) -> int:
    """The offset just after the `:` of the top-level member `name`, or -1."""
    depth = 0
    in_string = False
    escaped = False
    index = 0
    length = len(body)
    while index < length:
        byte = body[index]
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            if depth == 1 and body.startswith(name, index):
                after = index + len(name)
                rest = body[after:].lstrip()
                if rest[:1] == b":":
                    return length - len(rest) + 1
            in_string = True
        elif byte in (0x7B, 0x5B):
            depth += 1
        elif byte in (0x7D, 0x5D):
            depth -= 1
        index += 1
    return -1


def ask_for_stream_usage(body: bytes, document: dict[str, Any]) -> bytes:
    """`body` with include_usage turned on; `document` is the body parsed."""
    if "stream_options" not in document:
        start = body.index(b"{") + 1
        return body[:start] + _OPTION + b"," + body[start:]
    # Rare (the caller set stream_options without include_usage): the member is found in
    # the bytes; when its spelling defeats that (a `\u` escape in a name, an odd value),
    # the body is written again from the document instead.
    try:
        spliced = _splice_options(body, document)
        expected = {**document, "stream_options": _with_usage(document["stream_options"])}
        if json.loads(spliced) == expected:
            return spliced
    except (ValueError, IndexError):
        pass
    rewritten = {**document, "stream_options": _with_usage(document["stream_options"])}
    return json.dumps(rewritten, ensure_ascii=False, separators=(",", ":")).encode()


def _with_usage(options: Any) -> dict[str, Any]:
    return (
        {**options, "include_usage": True} if isinstance(options, dict) else {"include_usage": True}
    )


def _splice_options(body: bytes, document: dict[str, Any]) -> bytes:
    at = _top_level_member(body, b'"stream_options"')
    if at < 0:
        raise ValueError("stream_options not found in the bytes")
    value_start = at + (len(body[at:]) - len(body[at:].lstrip()))
    options = document["stream_options"]
    if isinstance(options, dict) and body[value_start : value_start + 1] == b"{":
        inner = value_start + 1
        if "include_usage" in options:
            # `"include_usage":false`: the value is replaced, the rest kept.
            member_at = _top_level_member(body[value_start:], b'"include_usage"')
            if member_at < 0:
                raise ValueError("include_usage not found in the bytes")
            rest = body[value_start + member_at :].lstrip()
            old = b"false" if rest.startswith(b"false") else b"null"
            begin = len(body) - len(rest)
            return body[:begin] + b"true" + body[begin + len(old) :]
        closing = body[inner:].lstrip()[:1] == b"}"
        return body[:inner] + b'"include_usage":true' + (b"" if closing else b",") + body[inner:]
    # `"stream_options":null`
    return body[:value_start] + b'{"include_usage":true}' + body[value_start + 4 :]


def event_ends(data: bytes) -> list[tuple[int, int]]:
    """Where each event of `data` ends: the start and end of every blank line (`\\n\\n`,
    `\\r\\n\\r\\n`, or a mix), as `re.finditer(rb"\\r?\\n\\r?\\n", data)` spans them. Found
    from each newline with `bytes.find`: the regex tries every byte of the chunk (some
    40 000 instructions for a 250-byte event, against a few thousand here)."""
    spans: list[tuple[int, int]] = []
    find = data.find
    at = find(b"\n")
    while at >= 0:
        following = data[at + 1 : at + 3]
        if following[:1] == b"\n":
            end = at + 2
        elif following == b"\r\n":
            end = at + 3
        else:
            at = find(b"\n", at + 1)
            continue
        # A CR before is the blank line's (never the last one's: that ends in LF).
        start = at - 1 if at and data[at - 1] == 0x0D else at
        spans.append((start, end))
        at = find(b"\n", end)
    return spans


def is_usage_only(event: bytes) -> bool:
    """Whether an SSE event is the usage-only chunk include_usage adds: a usage object and
    no choice (`"choices":[]`, any spacing, either order; or no choices member at all)."""
    if _USAGE_OBJECT.search(event) is not None:
        if _EMPTY_CHOICES.search(event) is not None:
            return True
        if _ANY_CHOICES.search(event) is None and not has_escaped_key(event):
            return True
    elif not has_escaped_key(event):
        return False
    # Member names spelt with escapes, or a usage object beside some choices: parse.
    chunk = event_json(event)
    return (
        isinstance(chunk, dict)
        and isinstance(chunk.get("usage"), dict)
        and not chunk.get("choices")
    )


class UsageChunkFilter:
    """Takes out of an OpenAI event stream what include_usage added. Works on whole events:
    bytes of an unfinished event wait for its end (events arrive whole in practice)."""

    def __init__(self) -> None:
        self._pending = b""

    def __call__(self, chunk: bytes) -> bytes:
        # `x.replace(needle, b"") is x` is `needle not in x` (core/byte_tests.py).
        if not self._pending and chunk[-2:] == b"\n\n" and chunk.replace(b"\\u", b"") is chunk:
            # Whole events whose only usage is the option's `"usage":null` (all but the
            # last chunk of a stream): one replace, no split into events. Each `"usage"`
            # the option wrote lies inside it, so none left once it is out means no other.
            stripped = chunk.replace(_NULL_USAGE, b"")
            if stripped.replace(b'"usage"', b"") is stripped:
                return stripped
        data = self._pending + chunk if self._pending else chunk
        boundaries = event_ends(data)
        if not boundaries:
            if len(data) > _MAX_EVENT:
                self._pending = b""
                return data  # no event is this long: pass it on as it is
            self._pending = data
            return b""
        end = boundaries[-1][1]
        self._pending = data[end:]
        kept = []
        start = 0
        for blank, after in boundaries:
            event = data[start:blank]
            separator = data[blank:after]
            start = after
            if event.find(b"usage") >= 0 or event.find(b"\\u") >= 0:
                if is_usage_only(event):
                    continue  # the usage-only chunk the caller did not ask for
                event = event.replace(_NULL_USAGE, b"")
                if event.find(b'"usage"') >= 0:
                    event = _NULL_USAGE_SPACED.sub(b"", event)
                    event = _NULL_USAGE_FIRST.sub(b"", event)
            kept.append(event + separator)
        return b"".join(kept)

    def flush(self) -> bytes:
        rest, self._pending = self._pending, b""
        return rest
