"""uvicorn's h11 protocol with the same bounds as core/server_protocol.py, for installs
without httptools (a plain `pip install llm-proxy`, a vendored CloudBase package).

h11 bounds the head's size itself (`h11_max_incomplete_event_size`, set by core/server.py);
this adds the head timer and the connection bound. h11 reports where it is in the caller's
request (`their_state`), so no parser callbacks are needed: a head is pending while the
caller's side is IDLE with bytes buffered.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from core.server import ServerLimits
from core.server_refusals import (
    HEAD_TIMEOUT,
    HEAD_TIMEOUT_MESSAGE,
    HEAD_TOO_LARGE,
    HEAD_TOO_LARGE_MESSAGE,
    NOT_HTTP,
    OVERLOADED,
    OVERLOADED_MESSAGE,
    overloaded,
    plain_error,
)


class BoundedH11Protocol(H11Protocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits: ServerLimits = getattr(self.config, "server_limits", None) or ServerLimits()
        self._head_timer: asyncio.TimerHandle | None = None
        self._proxy_app = self.app

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # The connection count includes this one; h11 starts the app inside super().
        over = len(self.connections) > self.limits.max_connections
        self.app = overloaded if over else self._proxy_app
        super().data_received(data)
        if self.transport.is_closing():
            self._cancel_head_timer()
        elif self._head_pending():
            if self._head_timer is None:
                self._arm_head_timer()
        else:
            self._cancel_head_timer()

    def handle_websocket_upgrade(self, event: h11.Request) -> None:
        # As in core/server_protocol.py: an upgrade past MAX_CONNECTIONS gets the 503.
        if len(self.connections) > self.limits.max_connections:
            self._refuse(*OVERLOADED, OVERLOADED_MESSAGE)
            return
        super().handle_websocket_upgrade(event)

    def _head_pending(self) -> bool:
        return self.conn.their_state is h11.IDLE and bool(self.conn.trailing_data[0])

    def send_400_response(self, msg: str) -> None:
        if len(self.conn.trailing_data[0]) > self.limits.max_header_bytes:
            self._refuse(*HEAD_TOO_LARGE, HEAD_TOO_LARGE_MESSAGE)  # h11's own size bound
        else:
            self._refuse(*NOT_HTTP)

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self._arm_head_timer()  # a pipelined head behind a reply still streaming
            return
        if self._head_pending():
            self._refuse(*HEAD_TIMEOUT, HEAD_TIMEOUT_MESSAGE)
        else:
            self.transport.close()

    def _refuse(self, status: int, reason: str, message: str) -> None:
        self._cancel_head_timer()
        self.transport.write(plain_error(status, reason, message))
        self.transport.close()
