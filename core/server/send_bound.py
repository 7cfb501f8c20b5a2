"""A time bound on a caller that takes nothing of what it is sent (SEND_TIMEOUT).

A caller that asked for a stream, or opened a realtime session, and then read nothing kept
its socket full: the proxy held the upstream back (memory stayed bounded), but nothing
ended the exchange, so it held its connection, the relay and the upstream request, on the
key owner's bill, for as long as it liked (a session until REALTIME_MAX_SECONDS, 30
minutes). nginx bounds the same with `send_timeout`, 60 s by default: so do we.

The bound is on taking nothing at all, not on reading slowly: the time starts when the
transport pauses writing (the caller's socket is full); when it is up and not one byte
was taken meanwhile, the connection is aborted. The caller's end of the exchange then
reads as a hang-up (the relay stops its upstream request; a session closes its upstream).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any


class SendBound:
    """Mixed in before an asyncio protocol (uvicorn's HTTP and WebSocket protocols), whose
    transport, loop and logger it uses, and whose pause_writing / resume_writing it wraps.

    Its state is in slots, as is every mixin's here: uvicorn's protocol sets 27 attributes
    of its own, and past CPython's 30 an instance's attributes move into a dict of their
    own, about 1.5 KB a connection (1.5 MB at a thousand streams)."""

    __slots__ = ("_send_left", "_send_timeout", "_send_timer")

    if TYPE_CHECKING:
        loop: asyncio.AbstractEventLoop
        transport: asyncio.Transport
        logger: Any

    def init_send_bound(self, send_timeout: float) -> None:
        self._send_timeout = send_timeout
        self._send_timer: asyncio.TimerHandle | None = None
        self._send_left = 0  # bytes not taken when the time started or last moved on

    def send_bound_applies(self) -> bool:
        """Whether this protocol still writes the connection's replies."""
        return True

    def pause_writing(self) -> None:
        """The caller's socket is full: its time to take some of it starts."""
        super().pause_writing()  # type: ignore[misc]
        if self._send_timer is None and self._send_timeout > 0:
            self._send_left = self.unsent()
            self._send_timer = self.loop.call_later(self._send_timeout, self._send_timed_out)

    def resume_writing(self) -> None:
        super().resume_writing()  # type: ignore[misc]
        self.cancel_send_timer()

    def cancel_send_timer(self) -> None:
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None

    def unsent(self) -> int:
        """Bytes written for the caller that it has not taken: the transport's buffer and,
        where the system says (Linux), the socket's queue not yet acknowledged. The queue
        is the bigger part: the kernel lets a socket buffer grow to megabytes, and frees
        room for the transport only a third of it at a time, so a caller reading slowly
        shows no progress in the transport's buffer for many seconds."""
        left = self.transport.get_write_buffer_size()
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            try:
                import fcntl
                import struct
                import termios

                queued = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
                left += struct.unpack("i", queued)[0]
            except (ImportError, AttributeError, OSError, ValueError):
                pass  # not on this system: the transport's buffer alone
        return left

    def _send_timed_out(self) -> None:
        self._send_timer = None
        if self.transport.is_closing() or not self.send_bound_applies():
            return
        left = self.unsent()
        if left < self._send_left:
            # Slow, not stalled: it took bytes meanwhile. (Writing resumes only once the
            # buffer is nearly empty, so a slow reader can stay paused a long time.)
            self._send_left = left
            self._send_timer = self.loop.call_later(self._send_timeout, self._send_timed_out)
            return
        self.logger.warning(
            "caller took nothing it was sent in SEND_TIMEOUT: closing the connection"
        )
        # Aborted, not closed: a close waits to write the buffer the caller is not reading.
        self.transport.abort()
