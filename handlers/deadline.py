"""A function platform's time limit, kept by ending the reply ourselves just before it.

Where the platform tells the function its invocation's deadline (AWS Lambda's context,
Vercel's `vercel_runtime.get_deadline()`), a reply still under way at the deadline is the
platform's to cut: the caller gets the platform's own error (not JSON in its SDK's shape,
no CORS header, so a page cannot read it), nothing is settled, and the instance may be
thrown away. Ending it ourselves `DEADLINE_MARGIN_SECONDS` before: the upstream request is
cancelled, and a reply whose head has not gone out is a 504 in the route's shape with the
CORS headers and the request id (core/proxy/access_log.py `outside_error`); one already
streaming is cut, as a broken upstream's is.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from core.types import ASGIApp, Message, Receive, Scope, Send

# Stop this long before the platform's deadline: a reply we end ourselves reaches the
# caller and keeps the instance warm; one the platform cuts off restarts the instance.
DEADLINE_MARGIN_SECONDS = 0.5


def seconds_before(deadline: float | None) -> float | None:
    """Seconds the app may run before `deadline` (epoch seconds) and its margin, or None."""
    if deadline is None:
        return None
    return max(deadline - time.time() - DEADLINE_MARGIN_SECONDS, 0.01)


def note_deadline(scope: Scope, *, began: bool) -> None:
    """The request's access-log line says the deadline ended it: the line is written as the
    app is cancelled, before the answer made outside it (a 504, or the cut)."""
    from core.proxy.access_log import REQUEST_LOG

    log = scope.get(REQUEST_LOG)
    if log is None:
        return
    log.error = log.error or "deadline_exceeded"
    if not began:
        log.status = 504


class EndBeforeDeadline:
    """Runs each HTTP request of `app` until `deadline(scope)` (epoch seconds, or None: no
    limit) less the margin, and ends it there."""

    def __init__(self, app: ASGIApp, deadline: Callable[[Scope], float | None]) -> None:
        self.app = app
        self.deadline = deadline

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        seconds = seconds_before(self.deadline(scope)) if scope["type"] == "http" else None
        if seconds is None:
            await self.app(scope, receive, send)
            return
        began: list[bool] = []

        async def watched_send(message: Message) -> None:
            if not began and message["type"] == "http.response.start":
                began.append(True)
            await send(message)

        task = asyncio.ensure_future(self.app(scope, receive, watched_send))
        try:
            done, _ = await asyncio.wait({task}, timeout=seconds)
        except asyncio.CancelledError:
            # `wait` leaves the task it waits on running: the server ended the request, so
            # the app (and its upstream request) ends with it, as it did in this task.
            task.cancel()
            raise
        if done:
            task.result()  # the app's own outcome, raised as it would be without this
            return
        note_deadline(scope, began=bool(began))
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        if began:
            return  # the head is out: returning unfinished cuts the connection
        from core.errors import UpstreamTimeout
        from core.proxy.access_log import outside_error

        status, headers, body = outside_error(
            UpstreamTimeout("The function reached its time limit."), scope
        )
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
