"""Keeps the proxy's own keys out of every reply.

An upstream may echo the key it was sent: in a 401 body, a WWW-Authenticate header, an
echo of the request headers, a Location or upload URL carrying `?key=`. The proxy knows
its keys, so it replaces each with `[redacted]` in every response header value and in the
body of every non-2xx reply. Bodies are scrubbed as they stream, holding back only the
last few bytes that could begin a key, so memory stays bounded whatever the size.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from typing import Any

REDACTED = b"[redacted]"
# An error reply is inflated to at most this much: refusals are short, bombs are not.
_MAX_INFLATED = 1024 * 1024
# Shorter "keys" (test fixtures, local servers) would redact ordinary words.
_MIN_KEY_LENGTH = 8


class Scrubber:
    def __init__(self, keys: Iterable[str]) -> None:
        found = {key.encode() for key in keys if len(key) >= _MIN_KEY_LENGTH}
        # Longest first, so a key that contains another is replaced whole.
        self.keys = tuple(sorted(found, key=len, reverse=True))
        self._hold = max((len(key) for key in self.keys), default=1) - 1

    def __bool__(self) -> bool:
        return bool(self.keys)

    def __call__(self, data: bytes) -> bytes:
        for key in self.keys:
            if key in data:
                data = data.replace(key, REDACTED)
        return data

    def headers(self, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        keys = self.keys
        if not keys:
            return headers
        return [
            (name, self(value)) if any(key in value for key in keys) else (name, value)
            for name, value in headers
        ]

    def stream(self, encoding: bytes = b"") -> StreamScrubber:
        return StreamScrubber(self, encoding)


class StreamScrubber:
    """Scrubs a body that arrives in pieces: a key split across two chunks is still found.

    A compressed body (gzip, deflate: the codings the proxy lets callers ask upstreams for,
    core/proxy/headers.py) is inflated first and goes out uncompressed (`inflates`), at most
    `_MAX_INFLATED` bytes of it; a body in a coding the proxy cannot read is not passed on
    at all, since nothing in it can be checked."""

    def __init__(self, scrubber: Scrubber, encoding: bytes = b"") -> None:
        self._scrubber = scrubber
        self._held = b""
        encoding = encoding.strip().lower()
        self.inflates = encoding not in (b"", b"identity")
        self._inflater: Any = None
        self._readable = True
        self._room = _MAX_INFLATED
        if encoding in (b"gzip", b"x-gzip"):
            self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == b"deflate":
            self._inflater = zlib.decompressobj()
        elif self.inflates:
            self._readable = False

    def _inflate(self, chunk: bytes) -> bytes:
        if not self._readable or self._room <= 0:
            return b""
        try:
            data: bytes = self._inflater.decompress(chunk, self._room)
        except zlib.error:
            self._readable = False
            return b""
        self._room -= len(data)
        return data

    def __call__(self, chunk: bytes) -> bytes:
        if self.inflates:
            chunk = self._inflate(chunk)
        data = self._scrubber(self._held + chunk) if self._held else self._scrubber(chunk)
        hold = self._scrubber._hold
        if hold <= 0 or len(data) <= hold:
            self._held = data
            return b""
        self._held = data[-hold:]
        return data[:-hold]

    def flush(self) -> bytes:
        rest, self._held = self._held, b""
        return self._scrubber(rest)
