"""Gemini stream recovery (opt-in: GEMINI_STREAM_RECOVERY=true).

A Gemini stream (`:streamGenerateContent`, SSE or a JSON array) that ends without a
`finishReason` (the connection was cut, or the upstream simply stopped) is asked again:
the new request carries the text so far as the model's turn and a short instruction to
continue, in the language of the conversation. The caller keeps one stream: the
continuation's events follow the ones already sent, and nothing is sent twice.

The whole recovered request generates no more than the caller asked for: each continuation
asks for the output tokens that remain of the caller's maxOutputTokens (which MAX_TOKENS_CAP
bounds) after what the attempts before it generated, and when none remain the stream ends
as the upstream ends one that reached its cap (finishReason MAX_TOKENS), with no further
call. What an attempt generated is what its usage reported, and past its last report (or
without one) an upper bound from what it sent: one token a byte at most.

To splice streams, the relay forwards whole events only (an SSE event, or one element of
the JSON array, re-framed into one array): a cut mid-event never reaches the caller. Each
attempt gets an access-log line, and the usage settled is the sum of every attempt's.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from core.errors import ProxyError, UpstreamStreamBroken, forget_frames
from core.headers import content_coding
from core.protocols import UnreadableCount, UnreadableUsage, Usage, lenient_count
from core.proxy.access_log import access_logger

if TYPE_CHECKING:
    from core.request import ProxyRequest
    from core.stages import Outcome
    from core.upstream.client import UpstreamReply

    # Sends a request upstream (core/proxy/forward.py), asked for an uncompressed reply.
    Forward = Callable[[ProxyRequest, bytes], Awaitable[UpstreamReply]]

logger = logging.getLogger("llm_proxy")

# The continuation instruction, by the language of the last user message.
INSTRUCTIONS = {
    "en": "Continue exactly where you stopped, without repeating anything you already wrote.",
    "zh": "请从你刚才停下的地方继续写，不要重复已经写过的内容。",  # noqa: RUF001
    "ja": "中断したところからそのまま続けてください。すでに書いた内容は繰り返さないでください。",
    "ko": "중단된 곳에서 그대로 이어서 작성하고, 이미 쓴 내용은 반복하지 마세요.",
}
# One event longer than this cannot be spliced: the stream is given up.
_MAX_EVENT = 8 * 1024 * 1024


def conversation_language(contents: list[Any]) -> str:
    """A tiny heuristic on the last user message: kana means Japanese, Hangul Korean, other
    CJK ideographs Chinese; anything else gets English."""
    text = ""
    for content in reversed(contents):
        if isinstance(content, dict) and content.get("role", "user") == "user":
            text = "".join(
                part["text"]
                for part in content.get("parts") or []
                if isinstance(part, dict) and isinstance(part.get("text"), str)
            )
            if text:
                break
    if any("\u3040" <= ch <= "\u30ff" for ch in text):
        return "ja"
    if any("\uac00" <= ch <= "\ud7af" or "\u1100" <= ch <= "\u11ff" for ch in text):
        return "ko"
    if any("\u4e00" <= ch <= "\u9fff" or "\u3400" <= ch <= "\u4dbf" for ch in text):
        return "zh"
    return "en"


# Where a Gemini body caps its output, in either spelling protobuf JSON reads (the request
# checks refuse a body that names one twice, core/request.py: at most one of each is set).
_CONFIG_NAMES = ("generationConfig", "generation_config")
_CAP_NAMES = ("maxOutputTokens", "max_output_tokens")


def _output_cap(document: dict[str, Any]) -> tuple[str, str] | None:
    """The generation config's name and its output cap's name, where the body sets one."""
    for config_name in _CONFIG_NAMES:
        config = document.get(config_name)
        if isinstance(config, dict):
            for cap_name in _CAP_NAMES:
                if cap_name in config:
                    return config_name, cap_name
    return None


def asked_output(document: dict[str, Any]) -> int | None:
    """The output tokens the caller asked for at most (maxOutputTokens, read as leniently as
    the upstream reads it); None when it set no cap the proxy can read."""
    found = _output_cap(document)
    if found is None:
        return None
    config_name, cap_name = found
    return lenient_count(document[config_name][cap_name])


def continuation_body(document: dict[str, Any], text: str, max_output: int | None = None) -> bytes:
    """The request again, with the text so far as the model's turn and the instruction (no
    turns without text), and its output cap lowered to `max_output` (what remains of it)."""
    continued = dict(document)
    if text:
        contents = list(document["contents"])
        instruction = INSTRUCTIONS[conversation_language(contents)]
        contents.append({"role": "model", "parts": [{"text": text}]})
        contents.append({"role": "user", "parts": [{"text": instruction}]})
        continued["contents"] = contents
    found = _output_cap(document) if max_output is not None else None
    if found is not None:
        config_name, cap_name = found
        continued[config_name] = {**document[config_name], cap_name: max_output}
    return json.dumps(continued, ensure_ascii=False).encode()


class EventSplitter:
    """Whole events out of a stream's chunks: SSE events (with their blank line), or the
    elements of a JSON array (without the brackets and commas between them)."""

    def __init__(self, sse: bool) -> None:
        self.sse = sse
        self.buffer = bytearray()
        # JSON array scanning state.
        self._opened = False
        self._depth = 0
        self._in_string = False
        self._escape = False
        self._scanned = 0
        self._start = -1

    def feed(self, chunk: bytes) -> list[bytes]:
        self.buffer += chunk
        events = self._sse_events() if self.sse else self._array_elements()
        if len(self.buffer) > _MAX_EVENT:
            raise ValueError("an event too long to splice")
        return events

    def rest(self) -> bytes:
        """What is left after the stream ended (an SSE event without its blank line)."""
        rest = bytes(self.buffer).strip() if self.sse else b""
        self.buffer.clear()
        return rest

    def _sse_events(self) -> list[bytes]:
        events: list[bytes] = []
        buffer = self.buffer
        while True:
            ends = [
                at + len(mark) for mark in (b"\n\n", b"\r\n\r\n") if (at := buffer.find(mark)) >= 0
            ]
            if not ends:
                return events
            end = min(ends)
            events.append(bytes(buffer[:end]))
            del buffer[:end]

    def _array_elements(self) -> list[bytes]:
        elements = []
        buffer = self.buffer
        index = self._scanned
        while index < len(buffer):
            byte = buffer[index]
            if self._in_string:
                if self._escape:
                    self._escape = False
                elif byte == 0x5C:  # backslash
                    self._escape = True
                elif byte == 0x22:
                    self._in_string = False
            elif byte == 0x22:
                self._in_string = True
            elif byte in (0x7B, 0x5B):  # { [
                if not self._opened and byte == 0x5B:
                    self._opened = True
                else:
                    if self._depth == 0:
                        self._start = index
                    self._depth += 1
            elif byte in (0x7D, 0x5D) and self._depth > 0:  # } ]
                self._depth -= 1
                if self._depth == 0:
                    elements.append(bytes(buffer[self._start : index + 1]))
                    self._start = -1
            index += 1
        # Keep only the element in progress.
        keep = self._start if self._start >= 0 else len(buffer)
        del buffer[:keep]
        self._scanned = len(buffer)
        if self._start >= 0:
            self._start = 0
        return elements


def _event_json(raw: bytes, sse: bool) -> Any:
    if not sse:
        payload = raw
    else:
        lines = [line[5:].strip() for line in raw.splitlines() if line.startswith(b"data:")]
        payload = b"\n".join(lines)
    try:
        return json.loads(payload) if payload else None
    except ValueError:
        return None


class _Attempt:
    """What one upstream reply said: its text, whether it finished, its usage."""

    def __init__(self, wire: Any) -> None:
        self.wire = wire
        self.text: list[str] = []
        self.finished = False
        self.usage: Usage | None = None
        # Output tokens its last usage report that counted output said (a report may
        # count the prompt alone), and bytes of what it generated since that report (the
        # whole reply, without one): none of it counted by a report.
        self.reported_output = 0
        self.unreported = 0

    @property
    def generated(self) -> int:
        """Output tokens it generated, at most: those its usage reported, and one a byte of
        what it sent past that report (no token is shorter than a byte). An upper bound, so
        what remains of the caller's cap is never overstated."""
        return self.reported_output + self.unreported

    def read(self, event: Any) -> bool:
        """Reads one event; whether it reported usage."""
        if not isinstance(event, dict):
            return False
        usage = self.wire.usage_in(event)
        try:
            reported = self.wire.read_usage(usage, Usage()) if usage is not None else None
        except UnreadableUsage:
            reported = None  # a count that is no count: the bytes sent bound it instead
        counted = False
        if usage is not None and reported is not None:
            self.usage = reported
            # Gemini's figures are the reply's so far: this event's parts are in them, if
            # it counts output at all (protobuf JSON leaves a zero count out, and a chunk
            # may carry the prompt's count alone: no word on what was generated).
            counted = "candidatesTokenCount" in usage or "thoughtsTokenCount" in usage
            if counted:
                self.reported_output = reported.output_tokens
                self.unreported = 0
        self._read_candidate(event, not counted)
        return reported is not None

    def _read_candidate(self, event: dict[str, Any], unreported: bool) -> None:
        feedback = event.get("promptFeedback")
        if isinstance(feedback, dict) and feedback.get("blockReason"):
            self.finished = True  # refused: asking again would be refused again
        candidates = event.get("candidates")
        if not isinstance(candidates, list) or not candidates:
            return
        candidate = candidates[0]
        if not isinstance(candidate, dict):
            return
        if candidate.get("finishReason"):
            self.finished = True
        content = candidate.get("content")
        parts = content.get("parts") if isinstance(content, dict) else None
        for part in parts if isinstance(parts, list) else ():
            if not isinstance(part, dict):
                continue
            text = part.get("text")
            if isinstance(text, str):
                if not part.get("thought"):  # thoughts are not the answer's text
                    self.text.append(text)
                if unreported:
                    self.unreported += len(text.encode())
            elif unreported:
                # A function call, code, an image: its JSON is longer than its tokens.
                self.unreported += len(json.dumps(part).encode())


def _add(total: Usage | None, usage: Usage) -> Usage:
    return usage if total is None else total.plus(usage)


class StreamRecovery:
    def __init__(self, attempts: int, access_log: bool) -> None:
        # Continuations after the first reply.
        self.attempts = attempts
        self.access_log = access_log

    @staticmethod
    def wanted(request: ProxyRequest) -> bool:
        return request.provider.stream_recovery and request.route.name == "stream-generate"

    async def applies(self, request: ProxyRequest, response: UpstreamReply) -> bool:
        """A stream this can splice: a 200 in a shape it reads, for one answer."""
        if response.status_code != 200:
            return False
        coded = content_coding(response.raw_headers)  # every line (core/headers.py)
        kind = _header(response, b"content-type").lower()
        if coded or not ("event-stream" in kind or "json" in kind):
            return False
        try:
            document = await request.document()
        except ProxyError:
            return False
        if not isinstance(document, dict) or not isinstance(document.get("contents"), list):
            return False
        try:
            return request.wire.answers(document) == 1
        except UnreadableCount:
            return False  # not known to be one answer: never spliced

    def source(
        self,
        request: ProxyRequest,
        response: UpstreamReply,
        outcome: Outcome,
        metering: bool,
        forward: Forward,
        body: bytes,
        may_continue: Callable[[bytes], Awaitable[bool]],
    ) -> RecoveredStream:
        """The caller's one stream, made of `response` and the continuations it needs.
        `body` is what went upstream (file addresses restored); `may_continue` says whether
        another upstream call may be made for it with a continuation's body (the endpoint's
        rules, checked again)."""
        return RecoveredStream(
            self, request, response, outcome, metering, forward, body, may_continue
        )

    def _log(
        self,
        request: ProxyRequest,
        number: int,
        response: UpstreamReply | None,
        started: float,
        attempt: _Attempt | None,
        broken: bool,
    ) -> None:
        if not self.access_log:
            return
        log = request.log
        if attempt is None:
            ended = "failed"
        else:
            ended = "finished" if attempt.finished else ("cut" if broken else "stopped")
        fields: dict[str, Any] = {
            "event": "stream_attempt",
            "request_id": log.request_id if log is not None else None,
            "route": request.provider.name,
            "attempt": number,
            "upstream_status": response.status_code if response is not None else None,
            "upstream_ms": round((time.perf_counter() - started) * 1000, 2),
            "ended": ended,
        }
        if attempt is not None and attempt.usage is not None:
            fields["input_tokens"] = attempt.usage.input_tokens
            fields["output_tokens"] = attempt.usage.output_tokens
        access_logger.info(json.dumps(fields, separators=(",", ":")))


class RecoveredStream:
    """A reply source (core/proxy/relay.py) that is one stream to the caller: the first
    reply's whole events, then each continuation's, framed as one SSE stream or one JSON
    array. Continuations are asked through `forward` (core/proxy/forward.py). A stream that
    cannot be completed raises UpstreamStreamBroken after its last whole event."""

    # Reading the upstream's streams, failures are caught here, not by the relay.
    stream_errors: tuple[type[BaseException], ...] = ()
    status_code = 200

    def __init__(
        self,
        recovery: StreamRecovery,
        request: ProxyRequest,
        response: UpstreamReply,
        outcome: Outcome,
        metering: bool,
        forward: Forward,
        body: bytes,
        may_continue: Callable[[bytes], Awaitable[bool]],
    ) -> None:
        self.recovery = recovery
        self.request = request
        self.response = response
        self.outcome = outcome
        self.metering = metering
        self.forward = forward
        self.body = body
        self.may_continue = may_continue
        # The events go out as they are spliced: the length is not the first reply's.
        self.raw_headers = [
            (n, v) for n, v in response.raw_headers if n.lower() != b"content-length"
        ]
        self.sse = "event-stream" in _header(response, b"content-type").lower()
        self.stream = self._events()

    async def aclose(self) -> None:
        """Stops the splicing (the caller left mid-stream): the attempt open is closed."""
        await self.stream.aclose()

    def _charge(self, total: Usage | None, unread: int, attempt: _Attempt) -> None:
        """The outcome as the attempts so far leave it: kept current while an attempt is
        read, so a caller who leaves mid-continuation is charged that continuation too (its
        usage so far, or its reservation while it has reported none)."""
        if not self.metering:
            return
        if attempt.usage is None:
            unread += 1
        else:
            total = _add(total, attempt.usage)
        outcome = self.outcome
        # None while no attempt was read: the whole reservation, as for any reply. Past
        # that, each unread attempt is charged its reservation on top of the metered ones
        # (Outcome.tokens), not lost in a single one.
        outcome.usage = total
        outcome.unread_calls = unread if total is not None else max(0, unread - 1)

    async def _events(self) -> AsyncGenerator[bytes, None]:
        recovery, request, outcome, sse = self.recovery, self.request, self.outcome, self.sse
        response = self.response
        # The body as it went upstream (a fileUri naming the proxy restored), not as sent.
        document = await request.document() if self.body is request.body else json.loads(self.body)
        # The caller's output cap (within MAX_TOKENS_CAP: core/access/policy.py), which
        # every attempt together stays within.
        asked = asked_output(document)
        generated = 0
        text: list[str] = []
        sent_events = 0
        # What the attempts that reported usage used, and how many reported none.
        total: Usage | None = None
        unread = 0
        current = response
        number = 1
        started = time.perf_counter()
        while True:
            attempt = _Attempt(request.wire)
            self._charge(total, unread, attempt)
            splitter = EventSplitter(sse)
            broken = False
            try:
                async for chunk in current.stream:
                    for raw in splitter.feed(chunk):
                        if attempt.read(_event_json(raw, sse)):
                            self._charge(total, unread, attempt)
                        yield _framed(raw, sse, sent_events)
                        sent_events += 1
                rest = splitter.rest()
                if rest:
                    if attempt.read(_event_json(rest, sse)):
                        self._charge(total, unread, attempt)
                    yield _framed(rest, sse, sent_events)
                    sent_events += 1
            except (*current.stream_errors, ValueError) as exc:  # type: ignore[misc]
                broken = True
                logger.warning("gemini stream broke on attempt %d: %s", number, type(exc).__name__)
                forget_frames(exc)
            finally:
                if current is not response:
                    await current.aclose()
            text.extend(attempt.text)
            generated += attempt.generated
            if attempt.usage is None:
                unread += 1
            else:
                total = _add(total, attempt.usage)
            recovery._log(request, number, current, started, attempt, broken)
            if attempt.finished:
                broken = False  # a cut after the last word lost nothing
                break
            remaining = None if asked is None else asked - generated
            if remaining is not None and remaining <= 0:
                # The caller's cap is spent: the upstream would have ended here too. The
                # stream ends as it ends one that reached its cap, and nothing is asked.
                yield _framed(_max_tokens_event(sse), sse, sent_events)
                sent_events += 1
                broken = False
                break
            if number > recovery.attempts or outcome.caller_left:
                break  # out of attempts, or nobody is left to read a continuation
            # Only what remains of the caller's cap is asked for.
            body = (
                continuation_body(document, "".join(text), remaining)
                if text or remaining is not None
                else self.body
            )
            if not await self.may_continue(body):
                break  # revoked, switched off, over a cap, or its reservation used up
            number += 1
            started = time.perf_counter()
            try:
                current = await self.forward(request, body)
            except ProxyError:
                recovery._log(request, number, None, started, None, True)
                broken = True
                break
            if not await recovery.applies(request, current):
                recovery._log(request, number, current, started, None, True)
                await current.aclose()
                broken = True
                break
        if broken:
            # Recovery ran out: the caller sees a truncated stream, as without it.
            raise UpstreamStreamBroken(f"gemini stream broke after {number} attempts")
        if not sse:
            yield b"\r\n]" if sent_events else b"[]"


def _max_tokens_event(sse: bool) -> bytes:
    """The event that ends a Gemini stream whose answer reached its output cap."""
    candidate = {
        "content": {"role": "model", "parts": [{"text": ""}]},
        "finishReason": "MAX_TOKENS",
        "index": 0,
    }
    event = json.dumps({"candidates": [candidate]}, separators=(",", ":")).encode()
    return b"data: " + event + b"\r\n\r\n" if sse else event


def _framed(raw: bytes, sse: bool, sent: int) -> bytes:
    """An event as the caller's one stream carries it: a JSON array's elements get the
    bracket or comma that places them in one array."""
    if sse:
        return raw
    return (b"[" if sent == 0 else b"\r\n,") + raw


def _header(response: UpstreamReply, name: bytes, default: str = "") -> str:
    for key, value in response.raw_headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return default
