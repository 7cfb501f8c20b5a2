"""The upstream client's time bounds, in one value both transports read (core/upstream/)."""

from __future__ import annotations

from core.records import Record


class Timeouts(Record):
    # Seconds to open a connection (sock_connect / httpx's connect).
    connect: float
    # Seconds to the first byte and between bytes; there is no total: a stream that keeps
    # producing is never cut.
    read: float
    # Seconds to get a connection at all: the pool's wait and the connect together.
    pool: float
