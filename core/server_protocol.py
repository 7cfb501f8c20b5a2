"""uvicorn's httptools protocol with the bounds a public server needs before authentication.

httptools keeps a request head (request line and headers) in memory until it is complete,
however long it is and however slowly it arrives, and uvicorn sets no timer until the first
response. So a few connections sending endless headers held hundreds of MB, and slowloris
connections (one header byte now and then), or connections that sent nothing at all, stayed
open indefinitely. This subclass adds, per connection:

- a size bound on each request head (431 past it);
- a time bound from the connection's start, or from the first byte of a later request, to
  the end of that request's head (408, or a silent close if nothing came);
- a bound on connections per process: a request on a connection past it gets a 503 and
  the connection closes.

Its refusals, and the 400 for a request that is not HTTP, are JSON like every other error
(core/server_refusals.py). Without httptools, core/server_protocol_h11.py does the same for h11.

Idle keep-alive time is uvicorn's own `timeout_keep_alive`. This module imports uvicorn and
httptools: only a server loads it (core/server.py), never a function handler.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

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

# Where the parser is in the current request.
_IDLE = 0  # between requests (or none yet): no head byte seen
_HEAD = 1  # a head has begun and is not complete
_BODY = 2  # the head is complete: the request is the app's


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """Takes its limits from the uvicorn Config (`server_limits`, set by core/server.py):
    the class itself must stay importable by name, as worker processes unpickle the Config."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits: ServerLimits = getattr(self.config, "server_limits", None) or ServerLimits()
        self._state = _IDLE
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None
        # Whether the parser began, finished a head or ended a message in the current read.
        self._parsed = False
        self._proxy_app = self.app

    # ---- the connection ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # A connection that never sends a head is closed as one that sends it too slowly.
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        before = self._state
        self._parsed = False
        super().data_received(data)
        state = self._state
        if state == _BODY or self.transport.is_closing():
            return
        if state == _IDLE and self._parsed:
            return  # the common case: whole requests, no head left half-read
        # A head left incomplete, or bytes that began none (blank lines): its time runs.
        # The timer is armed only here, so a request that arrives whole costs no timer.
        if self._head_timer is None:
            self._arm_head_timer()
        if state != _HEAD:
            return
        # Bytes of a head that began in this very chunk after a body's end cannot be told
        # apart from that body's; they are left out, so the bound is exceeded by at most one
        # read (256 KiB) and a large body never counts as a head.
        if before != _BODY:
            self._head_bytes += len(data)
        if self._head_bytes > self.limits.max_header_bytes:
            self._refuse(*HEAD_TOO_LARGE, HEAD_TOO_LARGE_MESSAGE)

    # ---- parser callbacks -------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._state = _HEAD
        self._parsed = True

    def on_headers_complete(self) -> None:
        self._state = _BODY
        self._parsed = True
        self._head_bytes = 0
        self._cancel_head_timer()
        # The connection count includes this one.
        over = len(self.connections) > self.limits.max_connections
        self.app = overloaded if over else self._proxy_app
        if over:
            self.logger.warning("over MAX_CONNECTIONS (%d): answering 503", len(self.connections))
        super().on_headers_complete()

    def handle_websocket_upgrade(self) -> None:
        # A WebSocket session is a connection like any other (uvicorn counts it once it is
        # upgraded, but never refuses an upgrade): past MAX_CONNECTIONS it gets the 503.
        if len(self.connections) > self.limits.max_connections:
            self.logger.warning(
                "over MAX_CONNECTIONS (%d): refusing an upgrade", len(self.connections)
            )
            self._refuse(*OVERLOADED, OVERLOADED_MESSAGE)
            return
        super().handle_websocket_upgrade()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._state = _IDLE
        self._parsed = True

    # ---- the head timer ---------------------------------------------------------------

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or self._state == _BODY:
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined head behind a reply still streaming: its time starts later.
            self._arm_head_timer()
            return
        if self._state == _HEAD:
            self._refuse(*HEAD_TIMEOUT, HEAD_TIMEOUT_MESSAGE)
        else:
            self.transport.close()

    def send_400_response(self, msg: str) -> None:
        # uvicorn's is text/plain; every error the proxy gives is JSON an SDK can read.
        self._refuse(*NOT_HTTP)

    def _refuse(self, status: int, reason: str, message: str) -> None:
        self._cancel_head_timer()
        self.transport.write(plain_error(status, reason, message))
        self.transport.close()
