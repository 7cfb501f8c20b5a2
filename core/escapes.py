"""A URL's percent escapes, decoded as far as any reader of it could decode them.

A router may decode a path once, twice (a gateway, then the framework behind it), or in a
loop. A check that decodes a fixed number of times reads `%25252D` as `%2D` while some
reader gets `-`: the route checks, the credential-in-URL test and the access log's
redaction would each miss what is escaped one more time than they decode. So each of
them reads what is left once every escape is decoded, and a URL still escaped after
`MAX_DECODES` rounds (no client escapes that deep; only someone hiding a token or a `..`
does) is refused where it is checked (core/request.py), not guessed at.

Each round is a pass in C only while a `%` is left: an ordinary URL costs one test.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import unquote, unquote_to_bytes

MAX_DECODES = 8


def decoded(text: str) -> str:
    """`text` with its percent escapes decoded, round after round until none is left or
    MAX_DECODES rounds ran (`escaped_past_limit` tells the second case)."""
    for _ in range(MAX_DECODES):
        if "%" not in text:
            return text
        once = unquote(text)
        if once == text:  # only `%` signs that escape nothing: what every reader gets
            return text
        text = once
    return text


def escaped_past_limit(text: str) -> bool:
    """Whether `decoded(text)` still holds an escape some reader would decode."""
    return still_escaped(decoded(text))


def still_escaped(plain: str) -> bool:
    """Whether `plain`, as `decoded` left it, holds an escape still: for a caller that has
    the decoding already, so the path is not decoded twice."""
    return "%" in plain and unquote(plain) != plain


def decodings(data: bytes) -> Iterator[bytes]:
    """`data`, then each further decoding of its escapes while one changes it, at most
    MAX_DECODES of them: every spelling some reader of the URL may get."""
    yield data
    for _ in range(MAX_DECODES):
        if data.replace(b"%", b"") is data:  # no `%` (core/byte_tests.py)
            return
        once = unquote_to_bytes(data)
        if once == data:
            return
        data = once
        yield data
