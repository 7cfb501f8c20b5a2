"""uvicorn's WebSocket protocol with the send bound (core/server/send_bound.py): a realtime
session whose caller takes none of the frames sent to it is cut after SEND_TIMEOUT, as an
HTTP reply is, not held until REALTIME_MAX_SECONDS. tests/server/test_uvicorn_internals.py
pins the protocol's attributes used here."""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from core.server.limits import ServerLimits
from core.server.send_bound import SendBound


class BoundedWebSocketProtocol(SendBound, WebSocketsSansIOProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        limits = getattr(self.config, "server_limits", None) or ServerLimits()
        self.init_send_bound(limits.send_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self.cancel_send_timer()
        super().connection_lost(exc)
