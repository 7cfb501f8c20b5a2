"""A compressed body inflated whole, a bounded piece at a time: what the meter and the
scrubber read of a reply an upstream compressed (gzip or deflate).

Two ways a reader stops short of the end, each seen in a body that still counted as read:
a small chunk may stand for megabytes (zlib gives at most `step` a call, the rest waits in
`unconsumed_tail`, or inside zlib with no input left), and a gzip body may be several
members one after another (RFC 1952 allows it; a server may compress each flush as a member
of its own), where zlib stops at the first member's end and hands the rest back as
`unused_data`. Data after a deflate stream's end is no deflate: `zlib.error`.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

GZIP_CODINGS = (b"gzip", b"x-gzip")
# Every Content-Encoding an `Inflater` reads; a reply in any other cannot be read.
INFLATABLE = (*GZIP_CODINGS, b"deflate")


class Inflater:
    """One compressed body, fed chunk by chunk."""

    def __init__(self, encoding: bytes) -> None:
        self._gzip = encoding in GZIP_CODINGS
        self._zlib = self._new()

    def _new(self) -> zlib._Decompress:
        return zlib.decompressobj(16 + zlib.MAX_WBITS if self._gzip else zlib.MAX_WBITS)

    def pieces(self, chunk: bytes, step: int) -> Iterator[bytes]:
        """All that `chunk` inflates to, in pieces of at most `step` bytes. Raises
        zlib.error on bytes that are not the encoding."""
        data = chunk
        while data:
            inflater = self._zlib
            while True:
                piece = inflater.decompress(data, step)
                if piece:
                    yield piece
                data = inflater.unconsumed_tail
                # A full piece may leave output inside zlib with no input left over.
                if not data and len(piece) < step:
                    break
            data = inflater.unused_data if inflater.eof else b""
            if data:
                if not self._gzip:
                    raise zlib.error("data after the end of a deflate stream")
                self._zlib = self._new()  # the next gzip member
