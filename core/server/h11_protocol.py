"""uvicorn's h11 protocol with the same bounds as httptools_protocol.py, for installs without
httptools (a plain `pip install llm-proxy`, a vendored CloudBase package).

h11 bounds the head's size itself (`h11_max_incomplete_event_size`, set by
core/server/runner.py); core/server/bounds.py adds the head and body timers and the connection
bound. h11 reports where it is in the caller's request (`their_state`), so no parser
callbacks are needed: a head is pending while the caller's side is IDLE with bytes buffered,
and a body while it is SEND_BODY.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from core.server.bounds import BoundedConnection
from core.server.refusals import HEAD_TOO_LARGE, HEAD_TOO_LARGE_MESSAGE, NOT_HTTP


def _framed_twice(event: object) -> bool:
    """A request head with both Content-Length and Transfer-Encoding. llhttp (the httptools
    server) refuses one; h11 reads the chunks and ignores the length, so behind a front end
    that honours Content-Length the bytes after the last chunk, body to the front end, would
    be a next request to this server: one the front end never saw (request smuggling, RFC
    9112 6.1). Refused here too, as not valid HTTP: both servers answer it alike."""
    if type(event) is not h11.Request:
        return False
    names = {name for name, _ in event.headers}
    return b"content-length" in names and b"transfer-encoding" in names


class BoundedH11Protocol(BoundedConnection, H11Protocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.init_bounds()
        # uvicorn reads every event through this one connection's next_event (one h11
        # Connection per socket, kept across keep-alive cycles) and answers the
        # RemoteProtocolError with send_400_response, below.
        next_event = self.conn.next_event

        def checked_next_event() -> Any:
            event = next_event()
            if _framed_twice(event):
                raise h11.RemoteProtocolError("Content-Length and Transfer-Encoding both set")
            return event

        self.conn.next_event = checked_next_event  # type: ignore[method-assign]

    def awaiting_head(self) -> bool:
        return self.conn.their_state is h11.IDLE

    def head_begun(self) -> bool:
        return self.conn.their_state is h11.IDLE and bool(self.conn.trailing_data[0])

    def reading_body(self) -> bool:
        return self.conn.their_state is h11.SEND_BODY

    def head_target(self) -> str:
        # Still buffered while the head is incomplete: the request line's middle word.
        line = self.conn.trailing_data[0].partition(b"\r\n")[0]
        parts = line.split(b" ")
        return parts[1].decode("latin-1") if len(parts) == 3 else ""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self.end_bounds()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # h11 starts the app inside super(), so the app is chosen before it (on every read:
        # too often to log).
        self.choose_app(announce=False)
        super().data_received(data)
        if self.transport.is_closing():
            self.end_bounds()
            return
        self.bound_body()
        if self.head_begun():
            if self._head_timer is None:
                self.arm_head_timer()
        else:
            self.cancel_head_timer()

    def handle_websocket_upgrade(self, event: h11.Request) -> None:
        if not self.upgrade_over_limit(event.target.decode("latin-1")):
            super().handle_websocket_upgrade(event)

    def send_400_response(self, msg: str) -> None:
        if len(self.conn.trailing_data[0]) > self.limits.max_header_bytes:
            # h11's own size bound (h11 is in its ERROR state now: the head is still
            # buffered, yet no longer "begun" to it).
            self.refuse(*HEAD_TOO_LARGE, HEAD_TOO_LARGE_MESSAGE, shape=self.head_shape())
        else:
            self.refuse(*NOT_HTTP, shape=self.route_shape())
