"""The reply's taps: small transforms the body passes through on its way to the caller.

Each tap has `feed(chunk) -> bytes` (what goes on) and `flush() -> bytes` (what it held
back, once the body ended), like httpx's content decoders. `build_taps` is the one place
that decides which taps a reply gets and in which order; the relay (core/proxy/relay.py)
only runs the chain and never knows which taps are in it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from core.headers import content_coding
from core.usage.usage_tap import NULL_USAGE, UsageTap

# A reply this small with a known length is read whole and sent in one piece (relay.py).
SMALL_BODY = 64 * 1024

if TYPE_CHECKING:
    from core.proxy.scrub import Scrubber, StreamScrubber
    from core.proxy.stream_end import StreamEnd
    from core.stages import RawHeaders, ReplyTicket
    from core.types import RequestLog
    from core.usage.meter import UsageMeter
    from core.usage.splice import UsageChunkFilter


class Tap(Protocol):
    def feed(self, chunk: bytes) -> bytes: ...

    def flush(self) -> bytes: ...


class Transform:
    """A tap made of a transform's own feed and flush (the usage-chunk filter, the
    scrubber): bound methods kept as attributes, so a chunk costs no extra call."""

    __slots__ = ("feed", "flush")

    def __init__(self, feed: Callable[[bytes], bytes], flush: Callable[[], bytes]) -> None:
        self.feed = feed
        self.flush = flush


class CopyTap:
    """The response cache's copy of the reply, as the caller gets it.

    The cache keeps the headers the caller got, which the relay knows for sure only once
    it decided the content length (after the chain ran, for a small whole body): chunks fed
    before `start` wait for it."""

    __slots__ = ("started", "ticket", "waiting")

    def __init__(self, ticket: ReplyTicket) -> None:
        self.ticket = ticket
        self.started = False
        self.waiting: list[bytes] = []

    def start(self, status: int, headers: RawHeaders, upstream_headers: RawHeaders) -> None:
        self.ticket.start(status, headers, upstream_headers)
        self.started = True
        for chunk in self.waiting:
            self.ticket.feed(chunk)
        self.waiting = []

    def feed(self, chunk: bytes) -> bytes:
        if chunk:
            if self.started:
                self.ticket.feed(chunk)
            else:
                self.waiting.append(chunk)
        return chunk

    def flush(self) -> bytes:
        return b""


class ReaderFactory(Protocol):
    """Builds a tap that reads the reply as the caller gets it (telemetry's reply facts),
    or None; told whether an earlier tap sends a compressed body on uncompressed."""

    def __call__(self, headers: RawHeaders, inflated: bool) -> Tap | None: ...


class Taps:
    """The chain built for one reply."""

    __slots__ = (
        "chain",
        "changes_length",
        "copy",
        "feed",
        "inflates",
        "last_event",
        "log",
        "meter",
    )

    def __init__(
        self,
        chain: tuple[Tap, ...],
        meter: UsageMeter | None,
        copy: CopyTap | None,
        changes_length: bool,
        inflates: bool,
        log: RequestLog | None = None,
        last_event: StreamEnd | None = None,
        fused: Callable[[bytes], bytes] | None = None,
    ) -> None:
        self.chain = chain
        # Tells the chunk that holds the stream's last event, read before the chain runs:
        # the relay settles before sending it (core/proxy/stream_end.py).
        self.last_event = last_event
        self.meter = meter
        self.copy = copy
        # The access log's byte count and first-byte time: what the caller is sent, counted
        # by the relay after the chain (a tap of its own cost a call on every event).
        self.log = log
        # Some tap may change the body's length: it cannot go out with the upstream's.
        self.changes_length = changes_length
        # The scrubber sends a compressed body uncompressed: content-encoding goes.
        self.inflates = inflates
        # What a chunk goes through: nothing, the chain's common case inlined in one
        # function (`fused`, below), the one tap's own feed (no loop on the relay's hot
        # path), or every tap in turn.
        self.feed: Callable[[bytes], bytes] | None = None
        if fused is not None:
            self.feed = fused
        elif len(chain) == 1:
            self.feed = chain[0].feed
        elif chain:
            self.feed = _in_turn(tuple(tap.feed for tap in chain))

    def flush(self) -> bytes:
        """What every tap held back, each flushed tail passed through the taps after it."""
        data = b""
        for tap in self.chain:
            if data:  # nothing to feed is nothing for any tap (and spares each a pass)
                data = tap.feed(data)
            data += tap.flush()
        return data


def _in_turn(feeds: tuple[Callable[[bytes], bytes], ...]) -> Callable[[bytes], bytes]:
    """One feed that runs `feeds` in turn. A closure over the taps' own feeds, not a method
    of Taps: a Taps holding its own bound method is a reference cycle, which left each
    reply's taps (meter, scrubber, log record) to the garbage collector instead of freeing
    them when the reply ended."""
    if len(feeds) == 2:
        first, second = feeds
        return lambda chunk: second(first(chunk))
    if len(feeds) == 3:
        first, second, third = feeds
        return lambda chunk: third(second(first(chunk)))

    def feed(chunk: bytes) -> bytes:
        for tap_feed in feeds:
            chunk = tap_feed(chunk)
        return chunk

    return feed


def _scrubbed(scrub: StreamScrubber) -> Callable[[bytes], bytes] | None:
    """The scrubber as one function, its common case inline (StreamScrubber.__call__ says
    why that case is safe): nothing held back, the one key's last bytes not in the chunk,
    and a last byte that begins no key. None where the scrubber has more to test."""
    found = scrub.one_key()
    if found is None:
        return None
    tail, key_ends = found
    scrub_feed = scrub.__call__

    def feed(chunk: bytes) -> bytes:
        # `replace(...) is chunk`: the key's tail is not in the chunk (core/byte_tests.py).
        if not scrub.held and chunk.replace(tail, b"") is chunk and chunk[-1:] not in key_ends:
            return chunk
        return scrub_feed(chunk)

    return feed


def _metered_then_scrubbed(
    usage: UsageTap, scrub: StreamScrubber
) -> Callable[[bytes], bytes] | None:
    """The usage tap then the scrubber as one function: most events of a metered stream
    are the usage tap's short cut (core/usage/usage_tap.py: an event that mentions usage
    only in the option's `,"usage":null`, taken out) and then the scrubber's common case
    (above). Both inline, one call an event instead of three; anything else goes through
    the two taps in turn, as it would without this. None where the short cut cannot hold."""
    found = scrub.one_key()
    if found is None or usage.filter is None:
        return None
    tail, key_ends = found
    if b"\n" in key_ends:  # the short cut's events end in "\n", which must begin no key
        return None
    usage_feed, scrub_feed = usage.feed, scrub.__call__

    def feed(chunk: bytes) -> bytes:
        # Each `x.replace(needle, b"") is x` says the needle is not in x, at half a find's
        # cost (core/byte_tests.py): no `\u` escape (a one-byte needle first, the cheapest
        # scan), no usage left once the option's `,"usage":null` is out, no key's tail.
        if (
            usage.ready
            and chunk[-2:] == b"\n\n"
            and (chunk.replace(b"\\", b"") is chunk or chunk.replace(b"\\u", b"") is chunk)
        ):
            kept = chunk.replace(NULL_USAGE, b"")
            if (
                kept.replace(b"sage", b"") is kept
                and not scrub.held
                and kept.replace(tail, b"") is kept
            ):
                return kept
        return scrub_feed(usage_feed(chunk))

    return feed


def scrubs_body(status: int) -> bool:
    """Whether a reply's body is scrubbed of the proxy's keys: the one place that decides
    it. Every body is (issue 19): a refusal may quote the key, and so may an upstream that
    echoes request headers in a 200. A chunk with no key in it costs one find per key
    (core/proxy/scrub.py)."""
    return True


def build_taps(
    *,
    status: int,
    headers: RawHeaders,
    meter: UsageMeter | None = None,
    usage_filter: UsageChunkFilter | None = None,
    scrubber: Scrubber | None = None,
    copy: ReplyTicket | None = None,
    log: RequestLog | None = None,
    length: int | None = None,
    rewrites: tuple[tuple[bytes, bytes], ...] = (),
    reader: ReaderFactory | None = None,
    last_event: StreamEnd | None = None,
) -> Taps:
    """The taps of one reply, in their order. Each sees what the taps before it passed on:

    1. meter: the upstream's bytes exactly as they came (a usage-only event the filter
       takes out must still be counted);
    2. usage-chunk filter: takes out what the proxy's own include_usage added (after the
       scrubber, on the inflated text, when the upstream compressed the reply anyway);
    3. scrubber: the proxy's keys out of the body, after which nothing may see it raw;
    4. cache copy: the body exactly as the caller gets it, so a replay is the same bytes;
    5. reader (telemetry's answered model and finish reasons, only when OpenTelemetry is
       on): after the scrubber, so what it exports holds no key, and reads an inflated body;
    6. the access log's byte count: not a tap, the relay counts what it sends (`log`).
    """
    chain: list[Tap] = []
    # Every Content-Encoding line (core/headers.py), read once for the meter and the
    # scrubber alike.
    encoding = content_coding(headers)
    usage_tap: UsageTap | None = None
    scrub: StreamScrubber | None = None
    scrubs = scrubber is not None and bool(scrubber or rewrites) and scrubs_body(status)
    late_filter = None
    if usage_filter is not None and scrubs and encoding not in (b"", b"identity"):
        # The filter reads event text: a reply compressed although asked for identity
        # (core/headers.py) is filtered once the scrubber has inflated it. (The meter
        # inflates its own copy.)
        late_filter, usage_filter = usage_filter, None
    if meter is not None:
        meter.start(headers, encoding)
        # The meter and the filter on one pass (1 and 2): their common case tested once.
        usage_tap = UsageTap(meter, usage_filter)
        chain.append(usage_tap)
    elif usage_filter is not None:
        chain.append(Transform(usage_filter, usage_filter.flush))
    inflates = scrubbing = False
    if scrubs:
        assert scrubber is not None
        scrub = scrubber.stream(
            encoding,
            error=status >= 300,
            # A large body of declared length keeps it: a key is replaced byte for byte.
            keep_length=(length or 0) > SMALL_BODY,
            rewrites=rewrites,
        )
        inflates = scrub.inflates
        scrubbing = scrub.changes_length
        chain.append(Transform(scrub, scrub.flush))
    if late_filter is not None:
        chain.append(Transform(late_filter, late_filter.flush))
    copy_tap = None
    if copy is not None:
        copy_tap = CopyTap(copy)
        chain.append(copy_tap)
    if reader is not None:
        read = reader(headers, inflates)
        if read is not None:
            chain.append(read)
    changes_length = usage_filter is not None or late_filter is not None or scrubbing
    # A chain of the scrubber alone, or the usage tap and the scrubber (the plain and the
    # metered reply, most replies): their common case inline in one function.
    fused = None
    if scrub is not None and len(chain) == 1 + (usage_tap is not None):
        if usage_tap is not None:
            fused = _metered_then_scrubbed(usage_tap, scrub)
        else:
            fused = _scrubbed(scrub)
    return Taps(tuple(chain), meter, copy_tap, changes_length, inflates, log, last_event, fused)
