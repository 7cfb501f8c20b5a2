"""Asking an OpenAI stream for its usage without the caller noticing.

An OpenAI chat or completions stream reports usage only with
`stream_options.include_usage`. When a cap needs the figure and the caller did not ask,
the proxy splices the option into the body bytes (the rest of the body goes upstream as
sent, not re-serialised), and takes back out of the reply what the option adds: the
`"usage":null` member of every chunk and the final usage-only chunk (`"choices":[]`), so
the caller's stream is byte for byte what it would have been.
"""

from __future__ import annotations

import re
from typing import Any

_OPTION = b'"stream_options":{"include_usage":true}'
_NULL_USAGE = b',"usage":null'
_NULL_USAGE_SPACED = re.compile(rb',\s*"usage"\s*:\s*null')
_BOUNDARY = re.compile(rb"\r?\n\r?\n")
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
    # Rare (the caller set stream_options without include_usage): find the member.
    at = _top_level_member(body, b'"stream_options"')
    value_start = at + (len(body[at:]) - len(body[at:].lstrip()))
    options = document["stream_options"]
    if isinstance(options, dict) and body[value_start : value_start + 1] == b"{":
        inner = value_start + 1
        if "include_usage" in options:
            # `"include_usage":false`: the value is replaced, the rest kept.
            member = _top_level_member(body[value_start:], b'"include_usage"')
            rest = body[value_start + member :].lstrip()
            old = b"false" if rest.startswith(b"false") else b"null"
            begin = len(body) - len(rest)
            return body[:begin] + b"true" + body[begin + len(old) :]
        closing = body[inner:].lstrip()[:1] == b"}"
        return body[:inner] + b'"include_usage":true' + (b"" if closing else b",") + body[inner:]
    # `"stream_options":null`
    return body[:value_start] + b'{"include_usage":true}' + body[value_start + 4 :]


class UsageChunkFilter:
    """Takes out of an OpenAI event stream what include_usage added. Works on whole events:
    bytes of an unfinished event wait for its end (events arrive whole in practice)."""

    def __init__(self) -> None:
        self._pending = b""

    def __call__(self, chunk: bytes) -> bytes:
        if not self._pending and chunk.endswith(b"\n\n"):
            # Whole events whose only usage is the option's `"usage":null` (all but the
            # last chunk of a stream): one replace, no split into events.
            mentions = chunk.count(b'"usage"')
            if mentions == 0:
                return chunk
            if mentions == chunk.count(_NULL_USAGE):
                return chunk.replace(_NULL_USAGE, b"")
        data = self._pending + chunk if self._pending else chunk
        boundaries = list(_BOUNDARY.finditer(data))
        if not boundaries:
            if len(data) > _MAX_EVENT:
                self._pending = b""
                return data  # no event is this long: pass it on as it is
            self._pending = data
            return b""
        end = boundaries[-1].end()
        self._pending = data[end:]
        kept = []
        start = 0
        for boundary in boundaries:
            event = data[start : boundary.start()]
            separator = boundary.group()
            start = boundary.end()
            if b'"usage"' in event:
                if b'"choices":[]' in event and b'"usage":{' in event:
                    continue  # the usage-only chunk the caller did not ask for
                event = event.replace(_NULL_USAGE, b"")
                if b'"usage"' in event:
                    event = _NULL_USAGE_SPACED.sub(b"", event)
            kept.append(event + separator)
        return b"".join(kept)

    def flush(self) -> bytes:
        rest, self._pending = self._pending, b""
        return rest
