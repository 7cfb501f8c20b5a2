"""The relay's chunks written straight to the caller's connection (core/types.py DirectBody).

uvicorn's `RequestResponseCycle.send` is the general path: a message dict per chunk, a
coroutine, checks of the message type, the response state and the method, and a join of
the chunk's framing. For a streamed reply that is chunked and under way, all of that is
settled once; what each chunk needs is its framing, the write, and the same two tests
uvicorn makes: whether the caller is gone (then nothing is written, as uvicorn drops sends
after a disconnect) and whether its socket is full (then the relay waits, as uvicorn waits
before its next write). The end of the body still goes through `send`, which writes the
last chunk and completes the response. tests/server/test_uvicorn_internals.py pins the
attributes read here.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any


class CycleBody:
    """A DirectBody over a uvicorn httptools cycle. It holds the cycle weakly: the cycle
    holds the scope, which holds this, and a strong reference would make each request a
    reference cycle left to the collector."""

    __slots__ = ("_cycle",)

    def __init__(self, cycle: Any) -> None:
        self._cycle = weakref.ref(cycle)

    def writer(self) -> Callable[[bytes], bool] | None:
        cycle = self._cycle()
        if (
            cycle is None
            or not cycle.response_started
            or cycle.response_complete
            or cycle.chunked_encoding is not True
            or cycle.scope["method"] == "HEAD"
        ):
            return None
        write = cycle.transport.write
        flow = cycle.flow

        def write_chunk(chunk: bytes) -> bool:
            if cycle.disconnected:
                return False
            write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
            return bool(flow.write_paused)

        return write_chunk

    async def drain(self) -> None:
        cycle = self._cycle()
        if cycle is not None and cycle.flow.write_paused and not cycle.disconnected:
            await cycle.flow.drain()
