"""Reading JSON as bytes without assuming it compact.

The proxy looks at reply bytes without parsing every event (the meter, the usage-chunk
filter, the cache's completion check). JSON allows whitespace around `:` `,` `[` `]`
(Python's json.dumps writes `"choices": []`), members in any order, and any character of
a key written as a `\\uXXXX` escape. These helpers are the tolerant byte patterns, and the
cheap pre-check that says when an event must be parsed after all.
"""

from __future__ import annotations

import json
import re
from typing import Any

# A member name written with an escape (`"us\u0061ge"`): only then does a byte pattern
# miss a key, so only then is an event parsed.
_ESCAPED_KEY = re.compile(rb'"(?:[^"\\]|\\.)*\\u[0-9A-Fa-f]{4}(?:[^"\\]|\\.)*"\s*:')


def member(name: bytes) -> bytes:
    """The pattern of `"name":` with any whitespace JSON allows around the colon."""
    return b'"' + re.escape(name) + rb'"\s*:\s*'


def has_escaped_key(data: bytes) -> bool:
    """Whether some member name in `data` is written with a `\\u` escape."""
    return data.find(b"\\u") >= 0 and _ESCAPED_KEY.search(data) is not None


def event_json(event: bytes) -> Any:
    """The JSON of an SSE event's data lines, or None (not JSON, or no data)."""
    lines = [
        line[5:].strip()
        for line in event.replace(b"\r\n", b"\n").split(b"\n")
        if line.startswith(b"data:")
    ]
    if not lines:
        return None
    try:
        return json.loads(b"\n".join(lines))
    except ValueError:
        return None
