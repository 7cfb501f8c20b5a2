"""The relay: a reply's bytes from their source, through the taps, to the caller.

One relay serves every reply: a whole body (small, with a known length: sent in one
piece) and a stream (each chunk sent as it arrives, never re-chunked). The source is an
upstream reply or anything shaped like one (stream recovery's spliced stream,
core/proxy/recovery.py); the taps are built by core/proxy/taps.py. The relay settles
before the last message, so a caller's next request sees this one's figures.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

from core.errors import ProxyError, UpstreamStreamBroken, forget_frames, map_transport_error
from core.headers import client_response_headers
from core.proxy.taps import SMALL_BODY
from core.stages import Outcome

if TYPE_CHECKING:
    from core.config import Settings
    from core.proxy.scrub import Scrubber
    from core.proxy.taps import Taps
    from core.stages import RawHeaders, ReplyTicket, Ticket
    from core.types import DirectBody, Send
    from core.usage.meter import UsageMeter

logger = logging.getLogger("llm_proxy")

# A reply this small with a known length goes out in one piece.


class ReplySource(Protocol):
    """What the relay reads: an upstream reply (core/upstream/client.py) or a stream made
    from several of them (stream recovery)."""

    # Read-only: a source may hold a more precise type (an async generator).
    @property
    def status_code(self) -> int: ...
    @property
    def raw_headers(self) -> RawHeaders: ...
    @property
    def stream(self) -> AsyncIterable[bytes]: ...
    # What reading `stream` raises when the body breaks.
    @property
    def stream_errors(self) -> tuple[type[BaseException], ...]: ...


class Exchange:
    """What the relay and the disconnect listener share. State, not a value: compared by
    identity (a plain class: a dataclass's methods are compiled at every cold start)."""

    __slots__ = (
        "awaiting_upstream_end",
        "copy",
        "error",
        "head_sent",
        "meter",
        "outcome",
        "response_done",
        "settled",
        "stopped_by",
    )

    def __init__(
        self,
        outcome: Outcome | None = None,
        *,
        settled: bool = False,
        copy: ReplyTicket | None = None,
    ) -> None:
        self.outcome = Outcome() if outcome is None else outcome
        # Set before the last body message: some servers answer receive() with a
        # disconnect as soon as the response is complete, which is not the caller leaving.
        self.response_done = False
        self.settled = settled
        # The stream's last event went out (core/proxy/stream_end.py), settled, and the
        # upstream's end of body is still to come.
        self.awaiting_upstream_end = False
        self.error: BaseException | None = None
        # The refusal of a rule that stopped the reply while it was relayed
        # (open_checks.py), and whether the head went out before (then the connection is
        # aborted instead).
        self.stopped_by: ProxyError | None = None
        self.head_sent = False
        self.meter: UsageMeter | None = None
        # The response cache's copy of the reply (core/cache), fed what the caller gets.
        self.copy = copy


def reply_headers(
    raw_headers: RawHeaders, scrubber: Scrubber, tickets: list[Ticket]
) -> tuple[RawHeaders, int | None]:
    """The headers the caller gets, and the body's length if the upstream said it."""
    headers, length = client_response_headers(raw_headers, scrubber)
    extra = [header for ticket in tickets for header in ticket.headers]
    if extra:
        if any(name.startswith(b"x-ratelimit-") for name, _ in extra):
            # The provider's own x-ratelimit-* describe the key owner's account, not
            # this caller: ours replace them.
            headers[:] = [(n, v) for n, v in headers if not n.startswith(b"x-ratelimit-")]
        headers.extend(extra)
    return headers, length


def _drop(headers: RawHeaders, name: bytes) -> None:
    """`name` taken out of `headers` in place. The head is held (by the endpoint and here)
    for as long as its stream lasts: one list a reply, not one more per change."""
    headers[:] = [(n, v) for n, v in headers if n != name]


async def relay(
    source: ReplySource,
    headers: RawHeaders,
    length: int | None,
    taps: Taps,
    exchange: Exchange,
    send: Send,
    body_send: Send,
    settle: Callable[[], Awaitable[None]],
    settings: Settings,
    direct: DirectBody | None = None,
) -> None:
    """Send the reply: `send` for the head, `body_send` (the server's own, past the
    wrappers that only touch the head) for the body, and `direct` (the server's writer of
    chunks, where it has one: core/types.py) for a streamed body's chunks. `settle` runs
    before the last byte."""
    status = source.status_code
    outcome = exchange.outcome
    if taps.inflates:
        _drop(headers, b"content-encoding")
    stream = source.stream

    if length is not None and length <= SMALL_BODY:
        try:
            body = b"".join([chunk async for chunk in stream])
        except source.stream_errors as exc:
            raise map_transport_error(exc, settings) from None
        if taps.feed is not None:
            body = taps.feed(body) + taps.flush()
        if len(body) != length:
            _drop(headers, b"content-length")
            headers.append((b"content-length", str(len(body)).encode()))
        if taps.copy is not None:
            taps.copy.start(status, headers, source.raw_headers)
        outcome.complete = True
        await settle()
        exchange.response_done = exchange.head_sent = True
        await send({"type": "http.response.start", "status": status, "headers": headers})
        if taps.log is not None and body:
            taps.log.body_sent(len(body))
        await body_send({"type": "http.response.body", "body": body})
        return

    if taps.changes_length and length is not None:
        # The body changes length: it goes out chunked. (A Content-Length is in the head
        # only where `length` says it: core/headers.py client_response_headers.)
        _drop(headers, b"content-length")
    if taps.copy is not None:
        taps.copy.start(status, headers, source.raw_headers)
    exchange.head_sent = True
    await send({"type": "http.response.start", "status": status, "headers": headers})
    write = direct.writer() if direct is not None else None
    feed = taps.feed
    log = taps.log
    last_event = taps.last_event
    tail = last_event.tail if last_event is not None else None
    # `chunk[cut:] == tail` is `chunk.endswith(tail)` at a fifth less: endswith parses its
    # arguments as a tuple on every call (CPython 3.12).
    cut = -len(tail) if tail else 0
    previous = b""
    settled = False
    sent = 0
    try:
        # The transport's own stream: raw bytes as they arrive, no re-chunking.
        async for chunk in stream:
            # `tail` is set only with `last_event`: one local test per chunk, not two.
            ends = (
                tail is not None and chunk[cut:] == tail and last_event(chunk, previous)  # type: ignore[misc]
            )
            previous = chunk
            if feed is not None:
                chunk = feed(chunk)
            if ends:
                # The stream's last event (core/proxy/stream_end.py): the SDKs stop reading
                # there and may ask again at once, so the figures go in before it goes out.
                outcome.complete = True
                await settle()
                settled = True
            if chunk and not outcome.caller_left:
                if not sent and log is not None:
                    log.body_sent(0)  # the first byte's time
                sent += len(chunk)
                if write is None:
                    await body_send(
                        {"type": "http.response.body", "body": chunk, "more_body": True}
                    )
                elif write(chunk):  # the caller's socket is full: wait, as `send` would
                    await direct.drain()  # type: ignore[union-attr]
            if ends:
                # A hang-up from here on is a caller done reading, not one leaving early.
                exchange.awaiting_upstream_end = exchange.response_done = True
    except source.stream_errors as exc:
        logger.warning("upstream stream broke after %d bytes: %s", sent, type(exc).__name__)
        forget_frames(exc)
        raise UpstreamStreamBroken(f"upstream stream broke after {sent} bytes") from None
    finally:
        exchange.awaiting_upstream_end = False
        # What the caller was sent, however the stream ended (the access log, telemetry).
        if log is not None:
            log.bytes_out += sent
    outcome.complete = True
    tail = taps.flush() if taps.chain else b""
    if not tail:
        # The caller has every byte but the body's end. The openai SDKs hang up as soon as
        # they read [DONE], which can land while this settles: that is not leaving early,
        # and the log and the ledger must not call a complete stream a disconnect.
        exchange.response_done = True
    # Settled before the last message, not after: the caller's next request then sees
    # these figures, and a function platform cannot freeze us before the write.
    if not settled:
        await settle()
    exchange.response_done = True
    if not outcome.caller_left:
        if tail and log is not None:
            log.body_sent(len(tail))
        await body_send({"type": "http.response.body", "body": tail, "more_body": False})
