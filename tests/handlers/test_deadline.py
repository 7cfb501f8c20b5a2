"""handlers/deadline.py on its own: what the wrapper does besides ending a reply at the
platform's deadline (the built function's 504 and cut stream: test_deploy_files.py)."""

from __future__ import annotations

import asyncio
import time

from core.types import Message, Receive, Scope, Send
from handlers.deadline import EndBeforeDeadline


async def test_a_request_the_server_cancels_cancels_the_app() -> None:
    """The app runs in a task of its own, to be ended at the deadline: a server that
    cancels the request (its shutdown, a connection it drops) must end that task too, or
    the app, and its upstream request, run on with nobody to answer."""
    ended: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            ended.append("cancelled")
            raise

    async def receive() -> Message:
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        pass

    wrapped = EndBeforeDeadline(app, lambda scope: time.time() + 60)
    request = asyncio.create_task(wrapped({"type": "http"}, receive, send))
    await asyncio.sleep(0.05)
    request.cancel()
    await asyncio.gather(request, return_exceptions=True)
    await asyncio.sleep(0.05)
    assert ended == ["cancelled"]
