"""Keeps the proxy's own keys out of every reply.

An upstream may echo the key it was sent: in a 401 body, a WWW-Authenticate header, an
echo of the request headers in a 200 body, a Location or upload URL carrying `?key=`. It
may also quote it masked, the way providers do in their refusals: the first few characters,
a run of `*`, `.` or `…`, and the last four (`sk-proj-****…abcd`, `sk-...abcd`). The proxy
knows its keys, so it replaces each, whole or masked, with `[redacted]` in every response
header value and in the body of every reply, 2xx included.

Every key is found through its last four characters (a whole key and a masked one both end
with them): one `bytes.find` per key per chunk is the whole cost of a chunk that quotes no
key. Bodies are scrubbed as they stream, holding back only a tail that could begin a key or
a masked key, so memory stays bounded whatever the size; an event stream's chunks end in a
blank line, which begins no key, so nothing is held back and no event is delayed.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable
from typing import TypeVar

from core.inflating import INFLATABLE, Inflater

Frame = TypeVar("Frame", str, bytes)

REDACTED = b"[redacted]"
# An error reply is inflated to at most this much: refusals are short, bombs are not.
_MAX_INFLATED = 1024 * 1024
# A 2xx reply compressed although asked for identity (core/headers.py) is inflated in
# steps of at most this much: each step's output is bounded, the whole is not (it is the
# reply the caller asked for).
_INFLATE_STEP = 4 * 1024 * 1024
# Shorter "keys" (test fixtures, local servers) would redact ordinary words.
_MIN_KEY_LENGTH = 8
# What providers mask the middle of a key with: `*`, `.`, `…` (U+2026) and `•` (U+2022) in
# UTF-8. A masked key needs a run of at least three such bytes before its last four.
_MASK_BYTES = frozenset(b"*.\xe2\x80\xa6\xa2")
_MIN_MASK_RUN = 3
_WORD_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
# The last characters every masked form shows.
_SHOWN_TAIL = 4


_NO_BYTES: frozenset[int] = frozenset()


def _same_length(size: int) -> bytes:
    return (REDACTED + b"*" * size)[:size] if size >= len(REDACTED) else b"*" * size


class _Key:
    """One key and what finds it: its last four bytes, and the forms JSON may write it in."""

    __slots__ = ("forms", "tail")

    def __init__(self, key: bytes) -> None:
        self.tail = key[-_SHOWN_TAIL:]
        forms = {key}
        if b"/" in key:
            forms.add(key.replace(b"/", b"\\/"))  # JSON may escape a solidus
        self.forms = tuple(sorted(forms, key=len, reverse=True))


class Scrubber:
    def __init__(self, keys: Iterable[str], upstreams: Iterable[str] = ()) -> None:
        # `//host[:port]` of every configured upstream, in lower case: a reply header naming
        # one is dropped (a Location, a Link...: it would send the caller around the proxy),
        # whatever the scheme, none (`//host/...` is relative to the scheme) or the case
        # (`HTTPS://API.OPENAI.COM` is the same address).
        self.upstreams = tuple(
            {
                b"//" + origin.partition("://")[2].lower().encode("latin-1")
                for origin in upstreams
                if "://" in origin  # never a bare `//`, which every URL holds
            }
        )
        found = {key.encode() for key in keys if len(key) >= _MIN_KEY_LENGTH}
        # Longest first, so a key that contains another is replaced whole.
        self.keys = tuple(sorted(found, key=len, reverse=True))
        self._entries = tuple(_Key(key) for key in self.keys)
        self._tails = tuple({entry.tail for entry in self._entries})
        # Keys are ASCII in practice; one that is not makes every text frame encoded.
        ascii_tails = all(tail.isascii() for tail in self._tails)
        self._text_tails = tuple(t.decode() for t in self._tails) if ascii_tails else None
        # Every byte a key or a mask may contain: a chunk ending in any other byte ends no
        # key's beginning, so holds nothing back (the common case: SSE ends in "\n\n").
        alphabet = set(_MASK_BYTES) | {b"\\"[0]}
        for key in self.keys:
            alphabet.update(key)
        self._alphabet = frozenset(alphabet)
        # The same bytes, each as a one-byte string: what `chunk[-1:]` is tested against.
        self._alphabet_ends = frozenset(bytes([byte]) for byte in alphabet)
        # The bytes a key, or a masked key, may begin with.
        self._starts = frozenset(_MASK_BYTES | {form[0] for e in self._entries for form in e.forms})
        longest = max((len(key) for key in self.keys), default=0)
        # A masked key is at most the key's length plus a generous mask.
        self._reach = 2 * longest + 16
        klass = b"".join(re.escape(bytes([byte])) for byte in sorted(alphabet))
        self._trailing = re.compile(b"[" + klass + b"]+\\Z") if self.keys else None

    def __bool__(self) -> bool:
        return bool(self.keys or self.upstreams)

    def __call__(self, data: bytes, *, keep_length: bool = False) -> bytes:
        """`data` with every key, whole or masked, replaced. `keep_length`: by a
        replacement as long as what it replaces, so a declared Content-Length stays true."""
        for tail in self._tails:
            if data.find(tail) >= 0:  # not `in`: see StreamScrubber.__call__
                return self._redact(data, keep_length)
        return data

    def frame(self, frame: Frame) -> Frame:
        """A WebSocket frame (text or bytes) or close reason, scrubbed whole: frames come
        whole, so nothing is held back. A text frame is encoded only when it holds a key's
        last four characters (keys are ASCII)."""
        if isinstance(frame, bytes):
            return self(frame)
        if self._text_tails is None:
            return self(frame.encode()).decode("utf-8", "replace")
        for tail in self._text_tails:
            if tail in frame:
                return self._redact(frame.encode(), False).decode("utf-8", "replace")
        return frame

    def _redact(self, data: bytes, keep_length: bool) -> bytes:
        for entry in self._entries:
            tail = entry.tail
            at = data.find(tail)
            if at < 0:
                continue
            out = []
            start = 0
            while at >= 0:
                end = at + len(tail)
                begin = self._match_start(data, entry, start, end)
                if begin is None:
                    at = data.find(tail, at + 1)
                    continue
                out.append(data[start:begin])
                out.append(_same_length(end - begin) if keep_length else REDACTED)
                start = end
                at = data.find(tail, end)
            out.append(data[start:])
            data = b"".join(out)
        return data

    @staticmethod
    def _match_start(data: bytes, entry: _Key, floor: int, end: int) -> int | None:
        """Where the key (or its masked form) ending at `end` begins, or None."""
        for form in entry.forms:
            begin = end - len(form)
            if begin >= floor and data[begin:end] == form:
                return begin
        # Masked: a run of mask bytes before the tail, and before that any prefix of the key;
        # the tail ends a word (`...really` is prose, not a key ending in `real`).
        if end < len(data) and data[end] in _WORD_BYTES:
            return None
        at = end - _SHOWN_TAIL
        run = at
        while run > floor and data[run - 1] in _MASK_BYTES:
            run -= 1
        if at - run < _MIN_MASK_RUN:
            return None
        key = entry.forms[-1]
        shown = min(len(key) - _SHOWN_TAIL, run - floor)
        while shown > 0 and data[run - shown : run] != key[:shown]:
            shown -= 1
        return run - shown

    def holdback(self, data: bytes) -> int:
        """How many bytes at the end of `data` could begin a key or a masked key."""
        if not data or data[-1] not in self._alphabet or self._trailing is None:
            return 0
        window = len(data) - min(len(data), self._reach)
        found = self._trailing.search(data, window)
        if found is None:
            return 0
        run = data[found.start() :]
        # The longest suffix of the run that could still grow into a key or a masked key.
        starts = self._starts
        for offset in range(len(run)):
            if run[offset] in starts and self._could_begin(run[offset:]):
                return len(run) - offset
        return 0

    def _could_begin(self, text: bytes) -> bool:
        for entry in self._entries:
            for form in entry.forms:
                if form.startswith(text):
                    return True
            key = entry.forms[-1]
            shown = 0
            limit = min(len(text), len(key) - _SHOWN_TAIL)
            while shown < limit and text[shown] == key[shown]:
                shown += 1
            run = shown
            while run < len(text) and text[run] in _MASK_BYTES:
                run += 1
            if run > shown and entry.tail.startswith(text[run:]):
                return True
        return False

    def headers(self, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        # Almost no reply names an upstream or holds a key in a header: one search of all
        # the values at once tells, and only then is each header judged on its own (a
        # match across two values only costs that). `find`, not `in`: see
        # StreamScrubber.__call__.
        values = b"\n".join([value for _, value in headers])
        upstreams = self.upstreams
        lowered = values.lower() if upstreams else b""
        if any(lowered.find(origin) >= 0 for origin in upstreams):
            headers = [
                (name, value)
                for name, value in headers
                if all(value.lower().find(origin) < 0 for origin in upstreams)
            ]
        if not any(values.find(tail) >= 0 for tail in self._tails):
            return headers
        return [(name, self(value)) for name, value in headers]

    def stream(
        self,
        encoding: bytes = b"",
        *,
        error: bool = True,
        keep_length: bool = False,
        rewrites: tuple[tuple[bytes, bytes], ...] = (),
    ) -> StreamScrubber:
        return StreamScrubber(
            self, encoding, error=error, keep_length=keep_length, rewrites=rewrites
        )


class StreamScrubber:
    """Scrubs a body that arrives in pieces: a key split across two chunks is still found.

    A compressed body (gzip, deflate: the codings the proxy can read, core/headers.py)
    is inflated first and goes out uncompressed (`inflates`); an error body at most
    `_MAX_INFLATED` bytes of it. A body in a coding the proxy cannot read is not passed on
    at all, since nothing in it can be checked. `keep_length`: a body of declared length
    stays that long (a key is replaced by as many bytes), so it need not go out chunked."""

    def __init__(
        self,
        scrubber: Scrubber,
        encoding: bytes = b"",
        *,
        error: bool = True,
        keep_length: bool = False,
        rewrites: tuple[tuple[bytes, bytes], ...] = (),
    ) -> None:
        self._scrubber = scrubber
        # (old, new) byte strings replaced too: the upstream's address by the proxy's
        # (core/proxy/uploads.py). They change the body's length.
        self._rewrites = tuple((old, new) for old, new in rewrites if old and old != new)
        self._rewrite_bytes = (
            frozenset(byte for old, _ in self._rewrites for byte in old)
            if self._rewrites
            else _NO_BYTES
        )
        self._keep_length = keep_length and not self._rewrites
        # Read once per chunk in the common case: kept here to spare the lookups.
        self._tails = scrubber._tails
        self._alphabet = scrubber._alphabet
        self._plain = not self._rewrites
        # The end of the body so far that could begin a key: held back until the next
        # chunk says (read by the reply's fused feed, core/proxy/taps.py).
        self.held = b""
        if encoding:
            encoding = encoding.strip().lower()
        self.inflates = encoding not in (b"", b"identity")
        self._inflater: Inflater | None = None
        self._readable = True
        self._room: int | None = _MAX_INFLATED if error else None
        if encoding in INFLATABLE:
            self._inflater = Inflater(encoding)
        elif self.inflates:
            self._readable = False

    def _inflate(self, chunk: bytes) -> bytes:
        room = self._room
        if not self._readable or (room is not None and room <= 0):
            return b""
        assert self._inflater is not None
        try:
            # Every byte, member after member (core/inflating.py): after the first gzip
            # member the rest of the reply was dropped, and the caller got a part of it.
            if room is None:
                return b"".join(self._inflater.pieces(chunk, _INFLATE_STEP))
            # An error body is inflated to its bound only (a small body may stand for GiBs).
            kept = []
            for piece in self._inflater.pieces(chunk, min(room, _INFLATE_STEP)):
                kept.append(piece[:room])
                room -= len(piece)
                if room <= 0:
                    break
            self._room = room
            return b"".join(kept)
        except zlib.error:
            self._readable = False
            return b""

    def __call__(self, chunk: bytes) -> bytes:
        if self.inflates:
            chunk = self._inflate(chunk)
        held = self.held
        if held:
            chunk = held + chunk
        # The common case, inline: no key's last four in the chunk, and a last byte that
        # begins no key (an event stream's "\n"): one test per key, nothing held back.
        # `replace(...) is not chunk` is `tail in chunk` at a fraction of the cost of `in`
        # or `find` (core/byte_tests.py).
        for tail in self._tails:
            if chunk.replace(tail, b"") is not chunk:
                break
        else:
            if self._plain and (not chunk or chunk[-1] not in self._alphabet):
                if held:
                    self.held = b""
                return chunk
        scrubber = self._scrubber
        data = scrubber(chunk, keep_length=self._keep_length)
        hold = scrubber.holdback(data)
        if self._rewrites:
            data = self._rewrite(data)
            hold = max(hold, self._rewrite_holdback(data))
        if not hold:
            self.held = b""
            return data
        self.held = data[-hold:]
        return data[:-hold]

    def one_key(self) -> tuple[bytes, frozenset[bytes]] | None:
        """For a feed that inlines this scrubber's common case (core/proxy/taps.py): the
        one key's last bytes, and the last bytes of a chunk that may begin a key; None
        where more than that is to test (several keys, an inflated or rewritten body)."""
        if self.inflates or not self._plain or len(self._tails) != 1:
            return None
        return self._tails[0], self._scrubber._alphabet_ends

    @property
    def changes_length(self) -> bool:
        """Whether the body may come out another length than it came in."""
        return self.inflates or bool(self._rewrites)

    def _rewrite(self, data: bytes) -> bytes:
        for old, new in self._rewrites:
            if old in data:
                data = data.replace(old, new)
        return data

    def _rewrite_holdback(self, data: bytes) -> int:
        """The longest end of `data` that begins one of the rewritten strings."""
        if not data or data[-1] not in self._rewrite_bytes:
            return 0
        longest = 0
        for old, _ in self._rewrites:
            for size in range(min(len(old) - 1, len(data)), longest, -1):
                if data.endswith(old[:size]):
                    longest = size
                    break
        return longest

    def flush(self) -> bytes:
        rest, self.held = self.held, b""
        rest = self._scrubber(rest, keep_length=self._keep_length)
        return self._rewrite(rest) if self._rewrites else rest
