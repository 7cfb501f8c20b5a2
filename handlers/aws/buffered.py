"""AWS Lambda, buffered: API Gateway REST (v1) and HTTP (v2) APIs, ALB, Function URLs in
BUFFERED mode. Handler: `handlers.aws.buffered.handler`.

Mangum turns each event into an ASGI request and the whole response into the event
source's reply, so streams arrive at the caller in one piece at the end, and a reply is
capped at 6 MB. For token-by-token streaming use handlers/aws/stream.py, behind a
Function URL or a REST API whose integration streams.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from mangum import Mangum

from core.types import Receive, Scope, Send
from handlers.aws.secrets import create_app_with_secrets


class PathAsSent:
    """The path as the caller sent it, which Mangum does not keep.

    Mangum unquotes the path an event carries, but API Gateway and Function URLs have
    decoded it once already: a caller's `%252F` reached the upstream as `/`, and
    `%25252e` was refused as a `.` segment it never was, unlike on every other platform.
    A payload 2.0 event keeps the path as sent in `rawPath` (handlers/aws/events.py reads
    it the same way); a REST API event's `path` is decoded once, as it must stay. An ALB
    hands the path undecoded, so Mangum's one decoding is right there.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        event = scope.get("aws.event")
        if isinstance(event, dict):
            context = event.get("requestContext") or {}
            raw_path = event.get("rawPath")
            if isinstance(raw_path, str) and raw_path:
                scope["raw_path"] = raw_path.encode()
                scope["path"] = unquote(raw_path)
            elif "elb" not in context and isinstance(event.get("path"), str):
                scope["path"] = event["path"] or "/"
        await self.app(scope, receive, send)


app = create_app_with_secrets()

# lifespan="off": Mangum would run the app's startup and shutdown around every
# invocation, and shutdown closes the upstream pool; without it the pool stays warm on
# Mangum's one event loop for the life of the instance.
handler = Mangum(PathAsSent(app), lifespan="off")  # type: ignore[arg-type]  # Mangum wants a Coroutine return
