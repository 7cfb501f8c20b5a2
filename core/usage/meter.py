"""The usage meter: reads the tokens a reply reports from a copy of the bytes relayed.

It sees every byte the upstream sends, also after the caller has left (ON_CLIENT_DISCONNECT
=drain keeps reading), in every shape a protocol uses: an event stream (OpenAI chat,
completions and Responses events, Anthropic message_start + message_delta, Gemini
`alt=sse`) or a JSON document of any size (whole replies, and Gemini's streamed JSON array).

Event streams are read line by line, and only lines that mention usage are parsed. A JSON
reply is kept whole up to `_KEEP_WHOLE`; past that only its last `_TAIL` bytes are kept,
since every protocol puts its usage object after the content. Usage is then read from the
last usage key at the document's root (or in a root array's element): a `usage` nested in
what a reply echoes of the request is the caller's to write. A token count in it that is no
whole number (negative, fractional, not a number) leaves the reply unread: charged its
reservation, not 0. An event line is kept whole up to `_MAX_LINE`; a data line past it may
have held the usage, and leaves the reply unread.

While metering, the proxy asks the upstream for an uncompressed reply (Accept-Encoding:
identity): cheaper than decompressing a copy of every reply, and the caller still gets the
same content. An upstream that compresses anyway is decompressed here, all of it (gzip, its
members one after another, and deflate); one
in an encoding the meter cannot read leaves the reply unread, and settlement then charges
the whole reservation.
"""

from __future__ import annotations

import heapq
import itertools
import json
import re
import zlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from core.headers import content_coding
from core.inflating import INFLATABLE, Inflater
from core.protocols import UnreadableUsage, Usage
from core.usage.jsonbytes import has_escaped_key

if TYPE_CHECKING:
    from core.protocols import Wire

_KEEP_WHOLE = 8 * 1024 * 1024
_TAIL = 1024 * 1024
# The longest event line read: a Gemini event may carry an image or audio beside its usage.
_MAX_LINE = _KEEP_WHOLE
# What a compressed reply is inflated by at a time (`UsageMeter.feed`).
_INFLATE_STEP = 1024 * 1024
_DECODER = json.JSONDecoder()
_NO_USAGE = b'"usage":null'
# Usage keys nested in a reply's echo of the request, passed over to find the reply's own.
_NESTED_KEYS = 4
# What may follow a reply's own usage: its last members (a Responses reply's metadata;
# Perplexity writes its usage before its answer).
_AFTER_USAGE = 64 * 1024


class UsageMeter:
    def __init__(self, wire: Wire) -> None:
        self.wire = wire
        self.usage = Usage()
        # False until a usage object has been read: an unread reply is charged in full.
        self.found = False
        # Whether the last usage read counts the whole reply (`Wire.usage_final`): False
        # after Anthropic's message_start alone, whose output count is only the first token.
        self.final = True
        self.readable = True
        self._stream = False
        self._json = False
        self._pending = b""
        # The rest of a long line held in `_pending` (`_feed_lines`), and its length.
        self._parts: list[bytes] = []
        self._held = 0
        self._buffer = bytearray()
        self._inflate: Inflater | None = None
        self._truncated = False

    def start(self, headers: list[tuple[bytes, bytes]], encoding: bytes | None = None) -> None:
        """Reads the reply's type and, unless given (`content_coding(headers)`, as the
        reply's taps read it once for all of them), its coding."""
        for name, value in headers:
            if name == b"content-type":
                lowered = value.lower()
                self._stream = lowered.startswith(b"text/event-stream")
                self._json = not self._stream and lowered.find(b"json") >= 0
        # Every Content-Encoding line, as the scrubber reads them (core/headers.py).
        if encoding is None:
            encoding = content_coding(headers)
        if encoding in INFLATABLE:
            self._inflate = Inflater(encoding)
        elif encoding:
            self.readable = False

    def feed(self, chunk: bytes) -> None:
        if not self.readable:
            return
        if self._inflate is None:
            self._take(chunk)
            return
        # Every byte the chunk stands for, member after member (core/inflating.py): only
        # the first 8 MiB of a chunk, or the first gzip member, was read, the usage after
        # it never seen, and the figures read before it (a Gemini stream's first events)
        # were the bill. Data after a deflate stream's end is no deflate: unreadable.
        try:
            for piece in self._inflate.pieces(chunk, _INFLATE_STEP):
                self._take(piece)
        except zlib.error:
            self.readable = False

    def _take(self, chunk: bytes) -> None:
        if self._stream:
            self._feed_lines(chunk)
        elif self._json:
            buffer = self._buffer
            buffer += chunk
            if len(buffer) > _KEEP_WHOLE:
                del buffer[: len(buffer) - _TAIL]
                self._truncated = True

    def _feed_lines(self, chunk: bytes) -> None:
        if self._pending and chunk.find(b"\n") < 0:
            # The middle of a long line (an image or audio in one Gemini event): its parts
            # are held and joined once, when its end comes, not copied on every chunk.
            self._parts.append(chunk)
            self._held += len(chunk)
            if len(self._pending) + self._held > _MAX_LINE:
                self._drop_line()
            return
        if self._parts:
            data = b"".join([self._pending, *self._parts, chunk])
            self._parts = []
            self._held = 0
        else:
            data = self._pending + chunk if self._pending else chunk
        # Cheap test first, on the whole chunk: most events carry no usage, and an OpenAI
        # stream asked for usage says `"usage":null` in every event but the last. Two scans
        # in C, and no line is split or parsed.
        mentions = data.count(b"sage")
        # A name spelt with `\u` escapes may hide "sage" (issue 19, class 5): such chunks
        # take the line-by-line path.
        # `find` rather than `in` for bytes: see core/usage/usage_tap.py.
        if (mentions == 0 or mentions == data.count(_NO_USAGE)) and data.find(b"\\u") < 0:
            self._pending = data[data.rfind(b"\n") + 1 :]
            if len(self._pending) > _MAX_LINE:
                self._drop_line()
            return
        lines = data.split(b"\n")
        self._pending = lines.pop()
        if len(self._pending) > _MAX_LINE:
            self._drop_line()
        for line in lines:
            if not line.startswith(b"data:"):
                continue
            # The same cheap test, line by line: a chunk that holds the usage event often
            # holds others too (a relay that fell behind reads several events at once),
            # and each of those says `"usage":null`; only a line naming usage otherwise is
            # parsed. A key spelt with `\u` escapes is the rare case the byte test would
            # miss.
            mentions = line.count(b"sage")
            if mentions and mentions == line.count(_NO_USAGE) and line.find(b"\\u") < 0:
                continue
            if mentions or has_escaped_key(line):
                self._read_event(line[5:])

    def _drop_line(self) -> None:
        """A line past _MAX_LINE is not kept. A data line may hold the usage (a Gemini event
        reports it beside its content, an image of megabytes included): the reply is then
        unread, charged its reservation. Dropped unread, it left the figures of the events
        before it for the bill."""
        if self._pending.startswith(b"data:"):
            self.readable = False
        self._pending = b""
        self._parts = []
        self._held = 0

    def _read_event(self, raw: bytes) -> None:
        try:
            event = json.loads(raw)
        except ValueError:
            return
        usage = self.wire.usage_in(event)
        if usage is not None and self._read_usage(usage):
            self.final = self.wire.usage_final(event)

    def _read_usage(self, usage: dict[str, Any]) -> bool:
        """`usage` read into the figures (whether it reported any); a count that is no
        count (negative, fractional, not a number) leaves the whole reply unread, charged
        its reservation."""
        try:
            read = self.wire.read_usage(usage, self.usage)
        except UnreadableUsage:
            self.readable = False
            return False
        if read is None:
            return False
        self.usage = read
        self.found = True
        return True

    def finish(self) -> Usage | None:
        """The usage the reply reported, or None if none could be read."""
        if self._stream and self._pending.startswith(b"data:"):
            self._read_event(b"".join([self._pending[5:], *self._parts]))
            self._pending = b""
            self._parts = []
        elif self._json and self._buffer:
            self._read_document(bytes(self._buffer))
            self._buffer = bytearray()
        return self.usage if self.found and self.readable else None

    def _read_document(self, text: bytes) -> None:
        """The usage of the reply itself (of its root object, or of the last element of a
        root array that has one: Gemini's streamed JSON), never a `usage` member nested in
        what the reply echoes of the request. A Responses reply echoes the caller's tools
        and schemas as objects, which may hold a `usage` of any figures; a background
        response answers `"usage": null`, and reading on to an earlier key took the
        caller's figures for the bill (a queued response charged 2 tokens, then run)."""
        if not self._truncated and has_escaped_key(text):
            # A key spelt with escapes: the document is parsed whole (it was kept).
            try:
                document = json.loads(text)
            except (ValueError, RecursionError):
                pass
            else:
                roots = document if isinstance(document, list) else [document]
                for root in reversed(roots):
                    usage = self.wire.usage_in(root)
                    if usage is not None:
                        self._read_usage(usage)
                        return
                return
        decoded = text.decode("utf-8", "replace")
        # The usage keys from the last: the first one at the root decides (a usage, or a
        # null that leaves the reply unread). Those nested in an echo are passed over, at
        # most _NESTED_KEYS of them: each costs a scan of what follows it.
        found = heapq.merge(
            *(_key_positions(decoded, key.decode()) for key in self.wire.usage_keys),
            reverse=True,
        )
        for at in itertools.islice(found, _NESTED_KEYS + 1):
            name_end = decoded.find('"', at + 1) + 1
            colon = decoded.find(":", name_end)
            start = colon + 1
            while start < len(decoded) and decoded[start] in " \t\r\n":
                start += 1
            try:
                value, end = _DECODER.raw_decode(decoded, start)
            except ValueError:
                continue
            if not _at_root(decoded, end):
                continue
            if isinstance(value, dict):
                self._read_usage(value)
            return


def _key_positions(text: str, name: str) -> Iterator[int]:
    """Where `name` (a quoted key) starts as a member name (followed by its colon), from
    the last."""
    end = len(text)
    while (at := text.rfind(name, 0, end)) >= 0:
        end = at
        # Only whitespace may stand between a name and its colon: looking further for the
        # next colon cost a scan of the rest for each `"usage"` written as a value (an enum
        # of a hundred thousand of them in an echoed schema: seconds).
        if _COLON.match(text, at + len(name)) is not None:
            yield at


_COLON = re.compile(r"[ \t\r\n]*:")


# A string, or a bracket outside one.
_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def _at_root(text: str, end: int) -> bool:
    """Whether the member whose value ends at `end` belongs to the document's root object
    (or to an object in a root array, Gemini's streamed JSON): what follows closes exactly
    that, `}` or `}` then `]`, within _AFTER_USAGE characters (every protocol writes its
    usage among the reply's last members). Documents one after another (NDJSON, an event
    stream sent as JSON) each close their own."""
    if len(text) - end > _AFTER_USAGE:
        return False
    depth = 0
    closed = ""
    for match in _JSON_TOKEN.finditer(text, end):
        piece = match.group()
        if piece in ("{", "["):
            depth += 1
        elif piece in ("}", "]"):
            if depth:
                depth -= 1
                continue
            closed += piece
            if closed not in ("}", "}]"):
                return False  # nested deeper: the scan stops where its parent ends
    return closed in ("}", "}]")
