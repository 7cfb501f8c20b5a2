"""WebSocket upgrades, refused until the proxy supports them.

A server with a WebSocket library (uvicorn with `websockets` installed) hands an upgrade
request to the app as a "websocket" scope; ignoring it made the server answer 500. The
refusal is a 403 JSON error in the route's protocol shape when the server can send an
HTTP reply to an upgrade (the `websocket.http.response` extension), else a close before
accept (code 1008, policy violation), which servers turn into an HTTP 403.
"""

from __future__ import annotations

from core.errors import ErrorShape, Forbidden, render
from core.providers import Provider, match_provider
from core.types import Receive, Scope, Send

CLOSE_POLICY_VIOLATION = 1008


class WebSocketNotSupported(Forbidden):
    code = "websocket_not_supported"


async def refuse_websocket(
    scope: Scope, receive: Receive, send: Send, providers: tuple[Provider, ...]
) -> None:
    message = await receive()
    if message["type"] != "websocket.connect":
        return  # the caller left before asking
    if "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": CLOSE_POLICY_VIOLATION})
        return
    raw_path = scope.get("raw_path")
    path = raw_path.decode("latin-1") if raw_path else scope.get("path", "")
    matched = match_provider(providers, path)
    shape: ErrorShape = matched[0].error_shape if matched else "openai"
    error = WebSocketNotSupported("This proxy does not accept WebSocket connections.")
    status, headers, body = render(error, shape)
    await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
    await send({"type": "websocket.http.response.body", "body": body})
