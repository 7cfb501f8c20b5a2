"""AWS Lambda, buffered: API Gateway REST (v1) and HTTP (v2) APIs, ALB, Function URLs in
BUFFERED mode. Handler: `handlers.aws.buffered.handler`.

Mangum turns each event into an ASGI request and the whole response into the event
source's reply, so streams arrive at the caller in one piece at the end, and a reply is
capped at 6 MB. For token-by-token streaming use handlers/aws/stream.py, behind a
Function URL or a REST API whose integration streams.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import unquote

from mangum import Mangum

from core.errors import (
    ProxyError,
    StreamStopped,
    UpstreamStreamBroken,
    UpstreamTimeout,
    UpstreamUnreachable,
    render,
)
from core.proxy.access_log import ERROR_SHAPE, REQUEST_ID_HEADER, outside_error
from core.types import Message, Receive, Scope, Send
from handlers.aws.secrets import create_app_with_secrets
from handlers.deadline import note_deadline, seconds_before


class PathAsSent:
    """The path as the caller sent it, which Mangum does not keep.

    Mangum unquotes the path an event carries, but API Gateway and Function URLs have
    decoded it once already: a caller's `%252F` reached the upstream as `/`, and
    `%25252e` was refused as a `.` segment it never was, unlike on every other platform.
    A payload 2.0 event keeps the path as sent in `rawPath` (handlers/aws/events.py reads
    it the same way); a REST API event's `path` is decoded once, as it must stay. An ALB
    hands the path undecoded, so Mangum's one decoding is right there.

    An ALB's query is read as sent too (`alb_query_as_sent`).
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
            if "elb" in context:
                query = alb_query_as_sent(event)
                if query is not None:
                    scope["query_string"] = query
        await self.app(scope, receive, send)


def alb_query_as_sent(event: dict[str, Any]) -> bytes | None:
    """An ALB's query parameters joined again as the caller spelled them (an ALB passes
    them undecoded), or None when the event has none.

    Mangum decodes each name into a dict, so two spellings of one name (`key=` and
    `%6Bey=`) became one parameter holding the last value: Gemini's credential parameter
    sent twice, refused on every other platform (core/request.py), was read as the last
    copy here. Names keep the order an ALB groups them in."""
    params = event.get("multiValueQueryStringParameters")
    if isinstance(params, dict):
        pairs = [(name, value) for name, values in params.items() for value in values or [""]]
    elif isinstance(event.get("queryStringParameters"), dict):
        pairs = list(event["queryStringParameters"].items())
    else:
        return None
    if not all(isinstance(n, str) and isinstance(v, str) for n, v in pairs):
        return None  # not an ALB's shape: Mangum's reading stands
    # surrogatepass: a lone surrogate an event may hold reaches the app as bytes, as a
    # server hands over whatever bytes the caller sent.
    return "&".join(f"{name}={value}" for name, value in pairs).encode("utf-8", "surrogatepass")


class WholeReply:
    """Holds the reply until the app returned, as Mangum does anyway (nothing reaches the
    caller before), so a reply that fails midway is answered as the failure it is.

    On a server, a stream the upstream cuts is aborted: the caller has its first part and
    the abort is the only honest signal left. Here the caller has nothing yet, and Mangum
    would answer `500 text/plain "Internal Server Error"` without the headers the proxy set
    (CORS, so a page cannot read it; the request id). It gets the proxy's own error instead,
    in its protocol's shape, with those headers. The failure is already in the access log.

    It also ends a reply itself just before the function's time limit, as the streaming
    runtime does: Lambda would stop the function there, and the caller get API Gateway's
    own `{"message": ...}` (no CORS header, not its SDK's shape) with nothing settled and
    the instance thrown away. Past that point the upstream request is cancelled and the
    caller gets a 504 in its protocol's shape.
    """

    # The response's headers an error keeps: a page must be able to read it (CORS), and
    # the request id names the log line.
    _KEPT = (b"access-control-", b"vary", REQUEST_ID_HEADER)

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        held: list[Message] = []

        async def hold(message: Message) -> None:
            held.append(message)

        task = asyncio.ensure_future(self.app(scope, receive, hold))
        try:
            done, _ = await asyncio.wait({task}, timeout=time_left(scope.get("aws.context")))
        except asyncio.CancelledError:
            task.cancel()  # `wait` leaves it running: it ends with the request, as there
            raise
        if not done:
            last = held[-1] if held else None
            whole = last is not None and last["type"] == "http.response.body"
            whole = whole and not last.get("more_body")  # type: ignore[union-attr]
            if not whole:
                # Held, nothing reached the caller: the 504 below is its answer.
                note_deadline(scope, began=False)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            if not whole:
                held = self._error(
                    UpstreamTimeout("The function reached its time limit."), held, scope
                )
            for message in held:
                await send(message)
            return
        try:
            task.result()
        except Exception as exc:
            last = held[-1] if held else None
            if last is None or (last["type"] == "http.response.body" and not last.get("more_body")):
                # Nothing began (the access log middleware answers these itself), or the
                # reply was whole before the failure: it goes out, Mangum logs the error.
                for message in held:
                    await send(message)
                raise
            if isinstance(exc, StreamStopped):
                # Stopped by a rule (open checks): the caller has nothing yet, so it gets
                # that rule's refusal, not word of a provider's reply breaking off.
                error = exc.refusal
            elif isinstance(exc, UpstreamStreamBroken):
                error = UpstreamUnreachable(
                    "The upstream provider's reply broke off before its end."
                )
            else:
                error = ProxyError(
                    "The proxy failed unexpectedly; see its logs for the request id."
                )
            held = self._error(error, held, scope)
        for message in held:
            await send(message)

    def _error(self, error: ProxyError, held: list[Message], scope: Scope) -> list[Message]:
        """`error` in the route's shape, with the headers the begun reply had for CORS and
        the request id, or, if none began, the CORS headers the app chose for the request."""
        if held:
            status, headers, body = render(error, scope.get(ERROR_SHAPE, "openai"))
            began = held[0].get("headers") or ()
            headers += [(n, v) for n, v in began if n.lower().startswith(self._KEPT)]
        else:
            status, headers, body = outside_error(error, scope)
        return [
            {"type": "http.response.start", "status": status, "headers": headers},
            {"type": "http.response.body", "body": body},
        ]


def time_left(context: Any) -> float | None:
    """Seconds the app may run before the function's time limit, or None without one."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if remaining is None:
        return None
    return seconds_before(time.time() + remaining() / 1000)


def _tolerate_odd_ports() -> None:
    """Mangum reads scope["server"] from Host (split on ":", the rest one int) or from
    X-Forwarded-Port, and raises ValueError where that fails: an IPv6 literal
    (`[::1]:443`), a caller's own Host on an ALB (`x:abc`), two X-Forwarded-Port values
    (`443, 443`). The invocation then failed before the app ran, and the caller got the
    load balancer's or API Gateway's own 502 with no error body, no CORS header and a
    traceback in the log. Nothing in the app reads scope["server"] (the Host header itself
    is read, and checked, where a reply names the proxy: core/headers.py public_origin), so
    a Host it cannot read is left for the app and the server is a placeholder.
    tests/handlers/aws/test_mangum_handler.py fails if a Mangum release moves the reader."""
    from mangum.handlers import alb, api_gateway, utils

    read_server = getattr(utils, "get_server_and_port", None)
    if read_server is None:
        return  # a Mangum that reads it otherwise: the tests say whether it still raises

    def server_of(headers: dict[str, Any]) -> tuple[str, int]:
        try:
            return read_server(headers)
        except ValueError:
            return ("lambda", 443)

    for module in (alb, api_gateway):
        module.get_server_and_port = server_of  # type: ignore[attr-defined]


_tolerate_odd_ports()
app = create_app_with_secrets()

# lifespan="off": Mangum would run the app's startup and shutdown around every
# invocation, and shutdown closes the upstream pool; without it the pool stays warm on
# Mangum's one event loop for the life of the instance.
handler = Mangum(PathAsSent(WholeReply(app)), lifespan="off")  # type: ignore[arg-type]  # Mangum wants a Coroutine return
