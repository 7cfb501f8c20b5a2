"""`GET /proxy/usage`: the caller's own spend and tokens this window, read with its usual
credential, so a page can show the quota left."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from core.errors import MethodNotAllowed, ProxyError, send_error
from core.request import ProxyRequest, build_request
from core.types import send_response

if TYPE_CHECKING:
    from core.access.status import ServiceStatus
    from core.providers import Provider
    from core.types import RequestLog, Scope, Send
    from core.usage.budget import Budget

# Without a budget the report still answers, in the same shape, with nothing counted.
_NOTHING_COUNTED = {
    "window": None,
    "spent_usd": None,
    "limit_usd": None,
    "remaining_usd": None,
    "input_tokens": None,
    "output_tokens": None,
}


async def usage_report(
    scope: Scope,
    send: Send,
    *,
    provider: Provider,
    identify: Callable[[ProxyRequest], Awaitable[None]],
    budget: Budget | None,
    status: ServiceStatus | None = None,
) -> None:
    """Answer the report; `identify` is the identify stage, `provider` any route's record
    (the report reads no body and calls no upstream)."""
    log: RequestLog | None = scope.get("llm_proxy.log")  # type: ignore[assignment]
    try:
        if scope["method"] not in ("GET", "HEAD"):
            raise MethodNotAllowed(f"Method {scope['method']} is not allowed here.")
        request = build_request(scope, provider, "/usage", log)
        await identify(request)
        # A proxy route like the others: 503 while switched off.
        if status is not None:
            await status.check(time.time())
        if budget is not None:
            figures = await budget.caller_figures(request)
        else:
            figures = dict(_NOTHING_COUNTED)
    except ProxyError as error:
        if log is not None:
            log.error = error.code
        extra = [(b"allow", b"GET, HEAD")] if isinstance(error, MethodNotAllowed) else []
        await send_error(send, error, "openai", extra)
        return
    body = json.dumps(figures, separators=(",", ":")).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
    ]
    await send_response(send, 200, headers, body)
