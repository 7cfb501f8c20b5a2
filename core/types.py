"""ASGI aliases and the per-request record, defined once for every module."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Protocol

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


async def send_response(
    send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    """A whole response in one start and one body message."""
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# Every field but the first three keeps its default on the class until a layer sets it,
# so a request builds one small instance dict, not twenty-two assignments. State, not a
# value (compared by identity), and no dataclass: its generated methods are compiled at
# every cold start (core/records.py).
class RequestLog:
    """What one access-log line says; filled in as the request goes through the layers."""

    request_id: str
    method: str
    path: str
    route: str | None = None
    status: int | None = None
    upstream_status: int | None = None
    upstream_ms: float | None = None
    first_byte_ms: float | None = None
    total_ms: float | None = None
    bytes_out: int = 0
    error: str | None = None
    caller: str | None = None
    # Filled in when the reply was metered (limits, budgets or the usage ledger are on).
    model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float | None = None
    # The response cache (core/cache): "hit", "miss" or "bypass"; a hit's tokens are saved.
    cache: str | None = None
    saved_input_tokens: int | None = None
    saved_output_tokens: int | None = None
    started: float = 0.0

    def __init__(self, request_id: str, method: str, path: str) -> None:
        self.request_id = request_id
        self.method = method
        self.path = path

    def body_sent(self, size: int) -> None:
        if self.first_byte_ms is None:
            self.first_byte_ms = (time.perf_counter() - self.started) * 1000
        self.bytes_out += size


# The scope key of a DisconnectWatch: set by the proxy's own HTTP server (core/server/),
# absent under any other server (function platforms, tests in-process).
DISCONNECT_WATCH = "llm_proxy.disconnect_watch"


class DisconnectWatch:
    """The server's word that a request's connection closed before its reply was complete.

    Under any ASGI server, the relay learns that from `receive()`, which needs a task of its
    own waiting on it for the whole reply (core/proxy/endpoint.py). The proxy's own server
    calls `fire` from the connection's `connection_lost` instead: the endpoint registers a
    callback and spawns a task only when a caller does hang up."""

    __slots__ = ("callback", "lost")

    def __init__(self) -> None:
        self.callback: Callable[[], None] | None = None
        self.lost = False

    def fire(self) -> None:
        if self.lost:
            return
        self.lost = True
        callback, self.callback = self.callback, None
        if callback is not None:
            callback()


# The scope key of a DirectBody: set by the proxy's own HTTP server over httptools, absent
# under any other server.
DIRECT_BODY = "llm_proxy.direct_body"


class DirectBody(Protocol):
    """The server's own writer of a streamed body's chunks (core/server/direct_body.py).

    An ASGI `send` of each chunk builds a message dict and runs the server's general send
    (a coroutine, a dozen checks, a join), per event of every stream; this writes the
    chunk's framing and bytes in one call. The relay asks for it once the head is out."""

    def writer(self) -> Callable[[bytes], bool] | None:
        """A function that writes one non-empty chunk of the body and says whether the
        caller's socket is full (then `drain` before the next), or None where this reply
        cannot be written so (not chunked, a HEAD, already complete): `send` it is."""
        ...

    async def drain(self) -> None:
        """Returns once the caller's socket takes writes again, or the caller is gone."""
        ...
