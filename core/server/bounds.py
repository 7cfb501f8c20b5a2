"""The bounds both server protocols share: timers, the connection cap and the refusals.

uvicorn's protocols keep a request head in memory however long it is and however slowly it
arrives, set no timer until the first reply, and wait for a request body as long as it
trickles. So a few connections sending endless headers held hundreds of MB; slowloris
connections (one header byte now and then), connections that sent nothing, and bodies sent a
byte every few seconds stayed open indefinitely. `BoundedConnection` adds, per connection:

- a time bound from the connection's start, or from the first byte of a later request, to
  the end of that request's head (408, or a silent close if nothing came);
- a time bound from the end of a head to the end of its body (408 if the app has not
  answered yet, else a close);
- a bound on connections per process: a request on a connection past it gets a 503 and the
  connection closes;
- a time bound on a reply the caller takes nothing of (core/server/send_bound.py).

Each protocol (httptools_protocol.py, h11_protocol.py) says where the caller's request is
and bounds the head's size its own way. A timer is armed only when a read ends inside a head
or a body, so a request that arrives whole costs none.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from core.server.limits import ServerLimits
from core.server.refusals import (
    BODY_TIMEOUT_MESSAGE,
    HEAD_TIMEOUT,
    HEAD_TIMEOUT_MESSAGE,
    OVERLOADED,
    OVERLOADED_MESSAGE,
    REQUEST_TIMEOUT,
    error_shape_for_path,
    overloaded,
    plain_error,
)
from core.server.send_bound import SendBound
from core.types import DISCONNECT_WATCH, DisconnectWatch

if TYPE_CHECKING:
    from collections.abc import Iterable

    from core.errors import ErrorShape


class BoundedConnection(SendBound):
    """Mixed in before a uvicorn HTTP protocol class, whose attributes it uses. It takes its
    limits from the uvicorn Config (`server_limits`, set by core/server/runner.py): the
    protocol classes stay importable by name, as worker processes unpickle the Config."""

    __slots__ = ("_body_timer", "_head_timer", "_proxy_app", "_watched", "limits")

    if TYPE_CHECKING:  # set by the uvicorn protocol that follows in the MRO
        config: Any
        app: Any
        loop: asyncio.AbstractEventLoop
        transport: asyncio.Transport
        cycle: Any
        connections: set[Any]
        logger: Any

    def init_bounds(self) -> None:
        self.limits: ServerLimits = getattr(self.config, "server_limits", None) or ServerLimits()
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self.init_send_bound(self.limits.send_timeout)
        self._proxy_app = self.app
        # The requests of this connection whose reply may still be running, each with the
        # watch the endpoint listens on (core/types.py): more than one only when pipelined.
        self._watched: list[tuple[Any, DisconnectWatch]] = []

    # ---- where the caller's request is (each protocol answers from its parser) --------

    def awaiting_head(self) -> bool:
        """No request head has completed since the last request ended (or none came yet)."""
        raise NotImplementedError

    def head_begun(self) -> bool:
        """Bytes of a request head are buffered and the head is not complete."""
        raise NotImplementedError

    def reading_body(self) -> bool:
        """A head is complete and the end of its body has not arrived."""
        raise NotImplementedError

    def head_target(self) -> str:
        """The request target of the head begun and not complete, as far as it was read
        ("" when none was): what a refusal of that head is shaped by (route_shape)."""
        raise NotImplementedError

    def upgraded(self) -> bool:
        """The connection was handed to a WebSocket protocol: these bounds are done with it.
        Asked only when a timer is armed or fires, never on the path of a whole request."""
        return self.transport.get_protocol() is not self

    def send_bound_applies(self) -> bool:
        # A WebSocket protocol that took the connection has its own (websocket_protocol.py).
        return not self.upgraded()

    # ---- the connection cap -------------------------------------------------------------

    def choose_app(self, announce: bool = True) -> None:
        """For a request whose head is complete: the proxy, or the 503 past MAX_CONNECTIONS.
        The connection count includes this one."""
        over = len(self.connections) > self.limits.max_connections
        self.app = self._overloaded() if over else self._proxy_app
        if over and announce:
            self.logger.warning("over MAX_CONNECTIONS (%d): answering 503", len(self.connections))

    def _overloaded(self) -> Any:
        """The 503 app, behind the CORS layer the proxy's own replies pass: it stands in for
        the whole app, and a page on an allowed origin must be able to read it (its
        Retry-After too). Built once per process, on the first connection past the bound."""
        app = getattr(self.config, "overloaded_app", None)
        if app is None:
            from core.proxy.cors import EXPOSED_HEADERS, CORSMiddleware

            origins = getattr(self.config, "allowed_origins", ())
            app = self.config.overloaded_app = CORSMiddleware(overloaded, origins, EXPOSED_HEADERS)
        return app

    # ---- the head timer -----------------------------------------------------------------

    def arm_head_timer(self) -> None:
        self.cancel_head_timer()
        self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_timed_out)

    def cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or not self.awaiting_head() or self.upgraded():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined head behind a reply still streaming: its time starts later.
            self.arm_head_timer()
            return
        if self.head_begun():
            self.refuse(*HEAD_TIMEOUT, HEAD_TIMEOUT_MESSAGE, shape=self.route_shape())
        else:
            self.transport.close()

    # ---- the body timer -----------------------------------------------------------------

    def bound_body(self) -> None:
        """After a read: a body left unfinished starts its time (once per request); a body
        finished stops it."""
        if self.reading_body():
            if self._body_timer is None and not self.upgraded():
                self._body_timer = self.loop.call_later(
                    self.limits.body_timeout, self._body_timed_out
                )
        else:
            self.cancel_body_timer()

    def cancel_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _body_timed_out(self) -> None:
        self._body_timer = None
        if self.transport.is_closing() or not self.reading_body() or self.upgraded():
            return
        self.logger.warning("request body slower than BODY_TIMEOUT: closing the connection")
        cycle = self.cycle
        if cycle is None or cycle.response_started or getattr(self, "pipeline", None):
            # A reply is on the wire (this request's or, pipelined, an earlier one's): a
            # 408 cannot be written into it, so the connection just closes.
            self.transport.close()
            return
        # The app is waiting for the rest of the body: it now reads a disconnect, and
        # anything it sends is dropped (uvicorn's cycle ignores sends once disconnected).
        cycle.disconnected = True
        cycle.message_event.set()
        from core.proxy.access_log import CORS_HEADERS

        # The app had begun: the headers its CORS layer chose (a page on an allowed origin
        # must be able to read this 408, as any other error).
        cors = cycle.scope.get(CORS_HEADERS, ())
        self.refuse(*REQUEST_TIMEOUT, BODY_TIMEOUT_MESSAGE, cors, shape=self.route_shape())

    # ---- the caller hanging up ------------------------------------------------------------

    def watch_request(self, scope: Any) -> DisconnectWatch:
        """A watch in the scope of a request whose app is about to start."""
        watch = scope[DISCONNECT_WATCH] = DisconnectWatch()
        return watch

    def watching(self, cycle: Any, watch: DisconnectWatch) -> None:
        """`cycle` (uvicorn's, for the request `watch` is in) is told of a hang-up."""
        # Replies done by now need no word of it: at most the pipelined ones stay.
        self._watched = [(c, w) for c, w in self._watched if not c.response_complete]
        self._watched.append((cycle, watch))

    def hung_up(self) -> None:
        """The connection closed: every request whose reply was still running hears it.
        (uvicorn itself only tells the newest request, which a pipelined one may not be.)"""
        watched, self._watched = self._watched, []
        for cycle, watch in watched:
            if not cycle.response_complete:
                watch.fire()

    # ---- the connection's end -----------------------------------------------------------

    def end_bounds(self) -> None:
        self.cancel_head_timer()
        self.cancel_body_timer()
        self.cancel_send_timer()

    def upgrade_over_limit(self, path: str) -> bool:
        """A WebSocket session is a connection like any other: uvicorn counts it once it is
        upgraded but never refuses an upgrade, so past MAX_CONNECTIONS it gets the 503 here
        (and no upstream socket is opened for it), in the shape of the route `path` names
        (a Gemini Live handshake gets Gemini's)."""
        if len(self.connections) <= self.limits.max_connections:
            return False
        self.logger.warning("over MAX_CONNECTIONS (%d): refusing an upgrade", len(self.connections))
        # As the app's own reply past the bound (refusals.overloaded): retried after a second.
        shape = error_shape_for_path(path.partition("?")[0])
        self.refuse(*OVERLOADED, OVERLOADED_MESSAGE, [(b"retry-after", b"1")], shape=shape)
        return True

    def route_shape(self) -> ErrorShape:
        """The error shape of the route of the request refused: the head begun (too large,
        too slow or not valid HTTP, its request line read), else the request whose head is
        in and whose reply has not begun (its body too slow or not valid HTTP); OpenAI's
        when there is none. An Anthropic or Gemini SDK reads its own shape only."""
        if self.head_begun():
            return self.head_shape()
        cycle = self.cycle
        if cycle is None or cycle.response_started:
            return "openai"
        return error_shape_for_path(cycle.scope.get("path", ""))

    def head_shape(self) -> ErrorShape:
        """The error shape of the route the head begun names (its request line, as far as
        it was read); OpenAI's when it names none."""
        return error_shape_for_path(self.head_target().partition("?")[0])

    def refuse(
        self,
        status: int,
        reason: str,
        message: str,
        headers: Iterable[tuple[bytes, bytes]] = (),
        shape: ErrorShape = "openai",
    ) -> None:
        """A reply of the server's own (no app), then the connection closes."""
        self.end_bounds()
        self.transport.write(plain_error(status, reason, message, headers, shape))
        self.transport.close()
