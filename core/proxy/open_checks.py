"""The rules that admitted a reply, checked again while it is relayed.

A streamed reply can run for minutes (a long generation, a reasoning model), all of it
spent on the provider's account. Nothing outlives the rule that ends it: while a reply is
relayed, the caller's token (revoked, narrowed, expired: a stored token or a JWT) and the
kill switch are checked again every RECHECK_SECONDS, as an open realtime session's are
(core/realtime/session.py). When one no longer holds, the relay stops, which cancels the
upstream request, and the connection is aborted: the head (a 200) is out, so a cut body is
the honest signal left, as when the upstream breaks mid-stream.

Only a reply that something can end is watched: with the kill switch on (a status), or
from a caller whose credential can stop working (a stored token, an expiring one). The
shared PROXY_ACCESS_TOKEN without a dashboard arms nothing: no timer on its hot path.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from core.errors import ProxyError, StreamStopped

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from core.caller import Caller
    from core.proxy.relay import Exchange
    from core.request import ProxyRequest

logger = logging.getLogger("llm_proxy")


def can_end(caller: Caller | None, has_status: bool) -> bool:
    """Whether anything can end this caller's reply while it is relayed."""
    if has_status:
        return True
    return caller is not None and (caller.record is not None or caller.expires_at is not None)


class OpenChecks:
    """Runs `recheck` every `period` seconds while `relaying` runs; cancels it (and keeps
    the refusal on the exchange) at the first rule that no longer holds."""

    __slots__ = ("checking", "due", "period", "recheck", "relaying", "request", "state")

    def __init__(
        self,
        recheck: Callable[[ProxyRequest], Awaitable[None]],
        request: ProxyRequest,
        state: Exchange,
        period: float,
    ) -> None:
        self.recheck = recheck
        self.request = request
        self.state = state
        self.period = period
        self.relaying: asyncio.Task[None] | None = None
        self.due: asyncio.TimerHandle | None = None
        self.checking: asyncio.Task[None] | None = None

    def start(self, relaying: asyncio.Task[None]) -> None:
        self.relaying = relaying
        self.due = asyncio.get_running_loop().call_later(self.period, self._run)

    def stop(self) -> None:
        """The reply ended: no further check. One under way is cancelled (it may be
        waiting on a store), and its task and the timer let go of the request."""
        if self.due is not None:
            self.due.cancel()
            self.due = None
        if self.checking is not None and not self.checking.done():
            self.checking.cancel()
        self.checking = None
        self.relaying = None

    def _run(self) -> None:
        self.due = None
        self.checking = asyncio.create_task(self._check())

    async def _check(self) -> None:
        relaying = self.relaying
        if relaying is None or relaying.done():
            return
        try:
            await self.recheck(self.request)
        except ProxyError as error:
            state = self.state
            if relaying.done() or state.response_done or state.settled:
                # The reply ended meanwhile, or is charged whole (settled at its last event
                # or before a whole body's head): stopping it now would only cut off, or
                # refuse, a reply already paid for, which its SDK asks for again.
                return
            state.stopped_by = error
            log = self.request.log
            if log is not None:
                log.error = error.code
            # Not a secret: the refusal's code and status, as the access log keeps them.
            logger.info("stream stopped: %s (%d)", error.code, error.status)
            relaying.cancel()
            return
        except Exception as exc:
            # Not a refusal: a fault in a check (a bug, a store's unexpected error). The
            # checks go on at the next period rather than stop for the rest of the reply;
            # the type only is logged (a driver's message may quote a URL or password).
            logger.error("recheck failed: %s", type(exc).__name__)
        if self.relaying is relaying and not relaying.done():
            self.due = asyncio.get_running_loop().call_later(self.period, self._run)


def raise_stopped(state: Exchange) -> None:
    """Raises what a rule that stopped the reply leaves to say: its own refusal, in the
    route's shape, while no head went out (a reply still awaited from the upstream);
    StreamStopped, which aborts the connection, once one did."""
    error, state.stopped_by = state.stopped_by, None
    if error is None:
        return
    # Dropped from this frame on the way out: raised from here, the refusal's traceback
    # holds this frame, and this frame the refusal (a cycle, with the request's state
    # hanging from it, left for the collector's full pass: endpoint.py raises its errors so).
    try:
        if not state.head_sent:
            raise error
        raise StreamStopped(f"stream stopped: {error.code}", error) from None
    finally:
        del error
