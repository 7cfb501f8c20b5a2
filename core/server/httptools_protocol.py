"""uvicorn's httptools protocol with the bounds a public server needs before authentication
(core/server/bounds.py says which and why).

httptools keeps a request head in memory until it is complete, so this protocol also bounds
the head's size (431 past MAX_HEADER_BYTES), counting bytes while a head is incomplete. Its
refusals, and the 400 for a request that is not HTTP, are JSON like every other error
(core/server/refusals.py). Without httptools, h11_protocol.py does the same for h11.

Idle keep-alive time is uvicorn's own `timeout_keep_alive`. This module imports uvicorn and
httptools: only a server loads it (core/server/runner.py), never a function handler.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from core.server.bounds import BoundedConnection
from core.server.direct_body import CycleBody
from core.server.refusals import HEAD_TOO_LARGE, HEAD_TOO_LARGE_MESSAGE, NOT_HTTP
from core.types import DIRECT_BODY

# Where the parser is in the current request.
_IDLE = 0  # between requests (or none yet): no head byte seen
_HEAD = 1  # a head has begun and is not complete
_BODY = 2  # the head is complete: the request is the app's, its body may still be coming


class BoundedHttpToolsProtocol(BoundedConnection, HttpToolsProtocol):
    __slots__ = ("_head_bytes", "_parsed", "_state")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.init_bounds()
        self._state = _IDLE
        self._head_bytes = 0
        # Whether the parser began, finished a head or ended a message in the current read.
        self._parsed = False

    def awaiting_head(self) -> bool:
        return self._state != _BODY

    def head_begun(self) -> bool:
        return self._state == _HEAD

    def reading_body(self) -> bool:
        return self._state == _BODY

    def head_target(self) -> str:
        # uvicorn's on_url gathers it, from the head's start (on_message_begin).
        return self.url.decode("latin-1")

    # ---- the connection ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # A connection that never sends a head is closed as one that sends it too slowly.
        self.arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self.end_bounds()
        super().connection_lost(exc)
        self.hung_up()

    def data_received(self, data: bytes) -> None:
        before = self._state
        self._parsed = False
        super().data_received(data)
        state = self._state
        if self.transport.is_closing():
            return
        if state == _BODY:
            self.bound_body()
            return
        if state == _IDLE and self._parsed:
            return  # the common case: whole requests, no head left half-read
        # A head left incomplete, or bytes that began none (blank lines): its time runs.
        # The timer is armed only here, so a request that arrives whole costs no timer.
        if self._head_timer is None:
            self.arm_head_timer()
        if state != _HEAD:
            return
        # Bytes of a head that began in this very chunk after a body's end cannot be told
        # apart from that body's; they are left out, so the bound is exceeded by at most one
        # read (256 KiB) and a large body never counts as a head.
        if before != _BODY:
            self._head_bytes += len(data)
        if self._head_bytes > self.limits.max_header_bytes:
            self.refuse(*HEAD_TOO_LARGE, HEAD_TOO_LARGE_MESSAGE, shape=self.route_shape())

    # ---- parser callbacks -------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._state = _HEAD
        self._parsed = True

    def on_headers_complete(self) -> None:
        self._state = _BODY
        self._parsed = True
        self._head_bytes = 0
        self.cancel_head_timer()
        self.choose_app()
        scope = self.scope
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle.scope is scope:  # not an upgrade: a request began
            # Its app is a task not yet run: the watch is in its scope before it reads it.
            self.watching(cycle, self.watch_request(scope))
            # And the writer of its streamed body's chunks (core/server/direct_body.py).
            scope[DIRECT_BODY] = CycleBody(cycle)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._state = _IDLE
        self._parsed = True
        self.cancel_body_timer()

    def handle_websocket_upgrade(self) -> None:
        # Its request target (the scope has no path yet: uvicorn sets it after this).
        if not self.upgrade_over_limit(self.url.decode("latin-1")):
            super().handle_websocket_upgrade()

    def send_400_response(self, msg: str) -> None:
        # uvicorn's is text/plain; every error the proxy gives is JSON an SDK can read.
        self.refuse(*NOT_HTTP, shape=self.route_shape())
