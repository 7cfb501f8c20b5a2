"""Google Cloud Run functions (2nd gen) through functions-framework's ASGI mode.

functions-framework calls the target with a Starlette request and sends back whatever
Response it returns by calling it as an ASGI app. Our "response" hands that call, with the
untouched scope, receive and send, to the proxy, so headers, body bytes and stream timing
are the proxy's own: SSE streams chunk by chunk. The request body is still unread when
the target returns, so the proxy reads it as usual.

Run locally: functions-framework --source handlers/gcp.py --target proxy --asgi
The `@functions_framework.aio.http` mark makes the framework pick ASGI mode by itself,
which is what the platform's default start command relies on.
"""

from __future__ import annotations

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import Response

from core.app import create_app
from core.proxy.access_log import configure_logging
from core.types import Receive, Scope, Send

# Cloud Run functions send one request at a time to an instance unless --concurrency is
# raised; httpx's own transport is then the cheaper start. UPSTREAM_TRANSPORT=aiohttp
# suits an instance that serves many requests at once.
# The entry point owns the process's logging; an app that embeds the proxy keeps its own.
configure_logging()
app = create_app(concurrent=False)


class HandToProxy(Response):
    """What the target returns: functions-framework sends it like any Response, and its
    only job is to pass that ASGI call on."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # A copy: the proxy's router writes its own entries into the scope.
        await app(dict(scope), receive, send)


_HAND_TO_PROXY = HandToProxy()


@functions_framework.aio.http
async def proxy(request: Request) -> HandToProxy:
    return _HAND_TO_PROXY
