"""The meter and the usage-chunk filter as one tap of the reply (core/proxy/taps.py).

The meter reads every byte the upstream sent; the filter then takes out what the proxy's
own include_usage added (core/usage/meter.py, core/usage/splice.py). Almost every event of
a metered stream is the same case for both: a whole event whose only mention of usage is
the option's `,"usage":null`. Each of them tests that on its own, with three or four scans
of the chunk each; here one test covers both, in three scans, and the chunk comes out as
the filter would pass it on. Everything else (an unfinished event, a usage object, a name
spelt with `\\u` escapes, a compressed or JSON reply) goes to the meter and the filter
unchanged, so what they read and pass on never differs from the two taps in a row
(tests/proxy/test_taps.py feeds both the same streams).

Why the short cut reads the same: every occurrence of "sage" that `,"usage":null` holds
lies inside it (no end of "sage" begins it, no start of it ends "sage"), so once those are
taken out, no "sage" left means the chunk mentioned usage only there. The meter then has
nothing to read and, the chunk ending in a newline, nothing to hold back; the filter's own
answer is the chunk with them taken out. No `\\u` means no escape that could spell a name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.usage.meter import UsageMeter
    from core.usage.splice import UsageChunkFilter

NULL_USAGE = b',"usage":null'


class UsageTap:
    """Feeds `meter` every chunk as it came; passes on what `usage_filter` (if any) keeps.
    Built once the meter has started (core/proxy/taps.py): its headers decide whether the
    short cut can apply (a meter started later only ever takes the long way)."""

    __slots__ = ("filter", "meter", "plain", "ready")

    def __init__(self, meter: UsageMeter, usage_filter: UsageChunkFilter | None) -> None:
        self.meter = meter
        self.filter = usage_filter
        # The meter reads an uncompressed event stream: fixed by its start (an unreadable
        # reply never becomes readable; only an inflating meter turns unreadable later).
        self.plain = meter._stream and meter.readable and meter._inflate is None
        # `plain`, and neither the meter nor the filter holds an unfinished line or event:
        # the short cut applies. Only the long way changes what they hold, so it is
        # computed again there, not read from both on every event.
        self.ready = self.plain

    def feed(self, chunk: bytes) -> bytes:
        # `x.replace(needle, b"") is x` is `needle not in x` at half the cost of `find`
        # and a seventh of `in`, on every event of a stream (core/byte_tests.py).
        usage_filter = self.filter
        if usage_filter is None:
            if (
                self.ready
                and chunk[-1:] == b"\n"
                and chunk.replace(b"sage", b"") is chunk
                # A one-byte needle first: the cheapest scan, and most events hold none.
                and (chunk.replace(b"\\", b"") is chunk or chunk.replace(b"\\u", b"") is chunk)
            ):
                return chunk  # nothing the meter reads, nothing it would hold back
            meter = self.meter
            meter.feed(chunk)
            self.ready = self.plain and not meter._pending
            return chunk
        if (
            self.ready
            and chunk[-2:] == b"\n\n"
            and (chunk.replace(b"\\", b"") is chunk or chunk.replace(b"\\u", b"") is chunk)
        ):
            kept = chunk.replace(NULL_USAGE, b"")
            if kept.replace(b"sage", b"") is kept:
                return kept
        meter = self.meter
        meter.feed(chunk)
        kept = usage_filter(chunk)
        self.ready = self.plain and not meter._pending and not usage_filter._pending
        return kept

    def flush(self) -> bytes:
        return self.filter.flush() if self.filter is not None else b""
