"""The answered model and the finish reasons, read from the relayed reply: a tap.

gen_ai.response.model and gen_ai.response.finish_reasons are in the reply, not the request:
OpenAI chat and completions (`model`, `choices[].finish_reason`), OpenAI Responses (the
response object's `model`, and its `status` or `incomplete_details.reason` once it ended),
Anthropic (`message_start`'s `message.model`, `message_delta`'s `delta.stop_reason`, or the
whole message's), Gemini (`modelVersion`, `candidates[].finishReason`), in an event stream
or a whole JSON document.

Built only when OpenTelemetry is on (core/proxy/endpoint.py), so a deployment without it
pays nothing. With it, a chunk costs a few `count`/`find` scans in C: an event is parsed
only when it may hold a field still wanted (the model once, a finish reason that is not
null), and only lines, never a whole stream, are held back. A whole reply is kept up to
`_KEEP_WHOLE` and parsed once at its end. Telemetry is informational: a key spelt with
`\\u` escapes, which the meter must catch, is not looked for here.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

from core.telemetry.hub import RECORD_KEY

if TYPE_CHECKING:
    from core.protocols import Usage
    from core.request import ProxyRequest
    from core.telemetry.record import RequestRecord
    from core.types import Scope

    Meter = TypeVar("Meter", bound="SessionMeter")


class SessionMeter(Protocol):
    """A realtime session's usage meter (core/realtime/wire.py), as far as it is read here."""

    def feed(self, frame: str | bytes) -> None: ...

    def finish(self) -> Usage: ...

    def cut_short(self) -> bool: ...

    def unread_turns(self) -> int: ...

    def responses_begun(self) -> int: ...


# A whole reply longer than this is not parsed for its model (it is an image or a file).
_KEEP_WHOLE = 1024 * 1024
# No line holding a model or a finish reason is this long; a content line may be.
_MAX_LINE = 1024 * 1024
# A request asks for a handful of choices or candidates at most; this bounds the attribute.
_MAX_REASONS = 16
# The longest finish reason kept, as the span's other values are cut (the models, the
# caller): the reply is the upstream's to write, and a reason no provider writes could
# otherwise be as long as a line (_MAX_LINE), on every span the export queue holds.
_REASON_CHARS = 200
# How each protocol's events name the model (an event that holds it is parsed once).
_MODEL_KEY = {"gemini": b'"modelVersion"'}
# What an event that states a finish reason holds, and an event still going does not:
# OpenAI's finish_reason and Anthropic's stop_reason are null until then (a string value,
# written compact or with one space after the colon, as the providers and Python's json
# do), Gemini's finishReason is absent. Responses: the events that end a response.
_REASON_STRING = (b'_reason":"', b'_reason": "')
_FINISH = {"openai": _REASON_STRING, "anthropic": _REASON_STRING, "gemini": (b'"finishReason"',)}
# OpenAI's and Anthropic's reason written as a string, in one search (an OpenAI event holds
# `"finish_reason":null` until the last): a call into C costs more than its scan, so one
# search, not a scan per spelling. Elsewhere `bytes.find`, not `in`: `in` first tries the
# needle as an integer, which raises and clears a TypeError inside every call.
_REASON_STATED = re.compile(rb'_reason": ?"')
_RESPONSES_END = (b'response.completed"', b'response.incomplete"', b'response.failed"')
_ENDED = frozenset({"completed", "incomplete", "failed", "cancelled"})


def reply_facts_tap(
    request: ProxyRequest, headers: list[tuple[bytes, bytes]], inflated: bool
) -> ReplyFacts | None:
    """The tap for one reply, or None when nothing would read what it finds. `inflated`:
    a tap before it sends a compressed body on uncompressed (the scrubber)."""
    record: RequestRecord | None = request.scope.get(RECORD_KEY)
    if record is None:
        return None
    stream = document = False
    for name, value in headers:
        if name == b"content-type":
            lowered = value.lower()
            stream = lowered.startswith(b"text/event-stream")
            document = not stream and b"json" in lowered
        elif name == b"content-encoding" and not inflated:
            # Compressed, and no tap before this one inflated it: not read.
            identity = value.strip().lower() in (b"", b"identity")
            if not identity:
                return None
    if not (stream or document):
        return None
    wire = request.wire.name
    return ReplyFacts(record, wire, stream, responses=request.route.name == "responses")


class ReplyFacts:
    """Reads a copy of the reply; the chunk goes on unchanged."""

    __slots__ = ("document", "finish", "model_key", "pending", "reasons", "record", "stream")

    def __init__(self, record: RequestRecord, wire: str, stream: bool, *, responses: bool) -> None:
        self.record = record
        self.stream = stream
        self.model_key: bytes | None = _MODEL_KEY.get(wire, b'"model"')
        self.finish = _RESPONSES_END if responses else _FINISH.get(wire, _REASON_STRING)
        self.pending = b""
        self.document: bytearray | None = bytearray()
        self.reasons: list[str] = []

    def feed(self, chunk: bytes) -> bytes:
        if self.stream:
            # Inline, as it runs for every event: a few scans in C and no call of our own
            # (`_wanted`, written out), and most events end here (the model was read from
            # the first, no finish reason yet).
            data = self.pending + chunk if self.pending else chunk
            key = self.model_key
            if key is not None and data.find(key) != -1:
                self._lines(data)
                return chunk
            if self.finish is _REASON_STRING:
                if _REASON_STATED.search(data) is not None:
                    self._lines(data)
                    return chunk
            else:
                for needle in self.finish:
                    if data.find(needle) != -1:
                        self._lines(data)
                        return chunk
            if data[-1:] == b"\n":  # a slice of one byte is a cached object: no call
                self.pending = b""
            else:
                self._keep_tail(data)
        elif self.document is not None:
            if len(self.document) + len(chunk) > _KEEP_WHOLE:
                self.document = None  # too long to parse: not read
            else:
                self.document += chunk
        return chunk

    def flush(self) -> bytes:
        if self.stream:
            if self.pending.startswith(b"data:"):
                self._read_line(self.pending[5:])
            self.pending = b""
        elif self.document:
            try:
                document = json.loads(self.document)
            except ValueError:
                document = None
            self._read(document)
            self.document = bytearray()
        return b""

    # ---- event streams --------------------------------------------------------------

    def _wanted(self, data: bytes) -> bool:
        """Whether `data` may hold a field still wanted: scans in C, nothing parsed."""
        if self.model_key is not None and data.find(self.model_key) != -1:
            return True
        # A loop, not any(): a generator would cost a frame.
        for needle in self.finish:  # noqa: SIM110
            if data.find(needle) != -1:
                return True
        return False

    def _keep_tail(self, data: bytes) -> None:
        """The unfinished last line waits for the rest (a field may straddle chunks)."""
        tail = data[data.rfind(b"\n") + 1 :]
        self.pending = tail if len(tail) <= _MAX_LINE else b""

    def _lines(self, data: bytes) -> None:
        lines = data.split(b"\n")
        pending = lines.pop()
        self.pending = pending if len(pending) <= _MAX_LINE else b""
        for line in lines:
            if line.startswith(b"data:") and self._wanted(line):
                self._read_line(line[5:])

    def _read_line(self, raw: bytes) -> None:
        try:
            event = json.loads(raw)
        except ValueError:
            return
        self._read(event)

    # ---- what an event or a document says -------------------------------------------

    def _read(self, event: Any) -> None:
        if isinstance(event, list):  # Gemini's streamed JSON array
            for item in event:
                self._read(item)
            return
        if not isinstance(event, dict):
            return
        model, reasons = facts_of(event)
        record = self.record
        if model and self.model_key is not None:
            record.response_model = model
            self.model_key = None  # found: no later event is parsed for it
        if reasons and len(self.reasons) < _MAX_REASONS:
            room = _MAX_REASONS - len(self.reasons)
            self.reasons += [reason[:_REASON_CHARS] for reason in reasons[:room]]
            record.finish_reasons = tuple(self.reasons)


def facts_of(event: dict[str, Any]) -> tuple[str | None, list[str]]:
    """The model and the finish reasons one event (or whole reply) states, in any protocol."""
    model = event.get("model") or event.get("modelVersion")
    reasons: list[str] = []
    for key, name in (("choices", "finish_reason"), ("candidates", "finishReason")):
        items = event.get(key)
        if isinstance(items, list):
            for item in items:
                reason = item.get(name) if isinstance(item, dict) else None
                if isinstance(reason, str) and reason:
                    reasons.append(reason)
    # Anthropic: the whole message's stop_reason, or message_delta's.
    delta = event.get("delta")
    stop = delta.get("stop_reason") if isinstance(delta, dict) else event.get("stop_reason")
    if isinstance(stop, str) and stop:
        reasons.append(stop)
    # Responses: a whole response object, ended.
    status = event.get("status")
    if event.get("object") == "response" and status in _ENDED:
        details = event.get("incomplete_details")
        reason = details.get("reason") if isinstance(details, dict) else None
        reasons.append(reason if isinstance(reason, str) and reason else status)
    # Anthropic's message_start holds the message; a Responses event, the response.
    inner = event.get("message") or event.get("response")
    if isinstance(inner, dict):
        inner_model, inner_reasons = facts_of(inner)
        model = model or inner_model
        reasons += inner_reasons
    return (model if isinstance(model, str) else None), reasons


# ---- realtime sessions ----------------------------------------------------------------


def session_facts(scope: Scope, wire: str, meter: Meter) -> Meter:
    """A realtime session's meter, also reading the session's model and each response's
    end; Gemini Live names neither in its frames, so its meter is left as it is."""
    record: RequestRecord | None = scope.get(RECORD_KEY)
    if record is None or wire != "openai":
        return meter
    return cast("Meter", SessionFacts(record, meter))


class SessionFacts:
    """OpenAI Realtime: `session.created` (and `session.updated`) name the model, each
    `response.done` ends a response with a status (and a reason when incomplete or
    cancelled). Any other frame costs two `in` scans; audio deltas are never parsed."""

    __slots__ = ("meter", "reasons", "record")

    def __init__(self, record: RequestRecord, meter: SessionMeter) -> None:
        self.record = record
        self.meter = meter
        self.reasons: list[str] = []

    def feed(self, frame: str | bytes) -> None:
        self.meter.feed(frame)
        text = frame if isinstance(frame, str) else frame.decode("utf-8", "replace")
        if '"session.' not in text and '"response.done"' not in text:
            return
        try:
            event = json.loads(text)
        except ValueError:
            return
        if not isinstance(event, dict):
            return
        kind = event.get("type")
        if kind in ("session.created", "session.updated"):
            session = event.get("session")
            model = session.get("model") if isinstance(session, dict) else None
            if isinstance(model, str) and model:
                self.record.response_model = model
        elif kind == "response.done" and len(self.reasons) < _MAX_REASONS:
            response = event.get("response")
            if not isinstance(response, dict):
                return
            details = response.get("status_details")
            reason = details.get("reason") if isinstance(details, dict) else None
            status = response.get("status")
            said = reason if isinstance(reason, str) and reason else status
            if isinstance(said, str) and said:
                self.reasons.append(said[:_REASON_CHARS])
                self.record.finish_reasons = tuple(self.reasons)

    def finish(self) -> Usage:
        return self.meter.finish()

    def cut_short(self) -> bool:
        return self.meter.cut_short()

    def unread_turns(self) -> int:
        return self.meter.unread_turns()

    def responses_begun(self) -> int:
        return self.meter.responses_begun()
