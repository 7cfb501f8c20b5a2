"""handlers/deadline.py on its own: what the wrapper does besides ending a reply at the
platform's deadline (the built function's 504 and cut stream: test_deploy_files.py)."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import pytest

from core.proxy.access_log import AccessLogMiddleware
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


async def test_the_access_log_line_says_the_deadline_ended_the_reply(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The line is written as the app is cancelled, before the 504 made outside it: it
    must still say 504 and why, not a missing status and no error."""

    async def slow(scope: Scope, receive: Receive, send: Send) -> None:
        await asyncio.sleep(30)

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    app = EndBeforeDeadline(AccessLogMiddleware(slow), lambda scope: time.time() + 0.6)
    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": []}
    with caplog.at_level(logging.INFO, logger="llm_proxy.access"):
        await app(scope, receive, send)
    assert sent[0]["status"] == 504
    [line] = [json.loads(r.getMessage()) for r in caplog.records if r.name == "llm_proxy.access"]
    assert (line["status"], line["error"]) == (504, "deadline_exceeded")
