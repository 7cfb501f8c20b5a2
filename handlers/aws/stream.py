"""AWS Lambda with response streaming, on the managed Python runtime: behind a Function URL
(`InvokeMode: RESPONSE_STREAM`) or an API Gateway REST API (`ResponseTransferMode: STREAM`).

The managed runtime's own client cannot stream, so `AWS_LAMBDA_EXEC_WRAPPER` points at
handlers/aws/exec_wrapper, which starts this module instead of it (the technique of
AWS's Lambda Web Adapter, minus the second server process). It polls the Runtime API
and answers each event (handlers/aws/events.py says which kinds) by running the proxy's ASGI app in-process and
streaming its reply: a JSON prelude, eight NUL bytes, then body chunks as the app sends
them. One event loop lives as long as the instance, so the upstream pool stays warm.

`python -m handlers.aws.stream` runs the loop against `$AWS_LAMBDA_RUNTIME_API`.
The proxy is imported only inside the loop's start-up, so a broken package (a missing
dependency) is reported to Lambda as an init error rather than a silent crash.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from typing import Any

from handlers.aws.events import EventSource, accepted_events, event_source
from handlers.aws.runtime_api import Invocation, ResponseStream, RuntimeApi
from handlers.deadline import seconds_before

logger = logging.getLogger("llm_proxy")
DEADLINE_EXCEEDED = "DeadlineExceeded"


class StreamedExchange:
    """The ASGI receive/send pair of one invocation, writing the reply as it is sent."""

    def __init__(self, api: RuntimeApi, invocation: Invocation, source: EventSource) -> None:
        self.api = api
        self.invocation = invocation
        self.source = source
        self.stream: ResponseStream | None = None
        self.complete = False
        self.caller_gone = asyncio.Event()  # the Runtime API connection broke, or we are done
        self._request: dict[str, Any] | None = {
            "type": "http.request",
            "body": source.body,
            "more_body": False,
        }

    async def receive(self) -> dict[str, Any]:
        if self._request is not None:
            message, self._request = self._request, None
            return message
        await self.caller_gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.stream = await self.api.start_stream(self.invocation.request_id)
            await self._write(self.source.prelude(message["status"], message.get("headers", [])))
        elif message["type"] == "http.response.body":
            last = not message.get("more_body", False)
            if message.get("body"):
                # The last piece goes out with the terminator, a moment later in finish().
                await self._write(message["body"], flush=not last)
            if last:
                self.complete = True
                self.caller_gone.set()

    async def _write(self, data: bytes, flush: bool = True) -> None:
        if self.caller_gone.is_set() or self.stream is None:
            return
        try:
            await self.stream.write(data, flush=flush)
        except (ConnectionError, OSError):
            # Lambda gives no other sign that a caller left; a broken connection here
            # lets the proxy cancel the upstream request instead of streaming into nothing.
            logger.warning("runtime api connection broke mid-stream; cancelling the request")
            self.api.reset()
            self.caller_gone.set()
            self.stream = None

    async def finish(self, error: tuple[str, str] | None, scope: dict[str, Any]) -> None:
        if self.stream is None and not self.caller_gone.is_set():
            # Nothing was sent yet: answer with a JSON error the caller's SDK can read.
            await self._send_error(error, scope)
            error = None
        if self.stream is not None:
            if not self.complete and error is None:
                error = ("IncompleteResponse", "the app ended without finishing its reply")
            await self.stream.close(None if self.complete else error)

    async def _send_error(self, error: tuple[str, str] | None, scope: dict[str, Any]) -> None:
        from core.errors import ProxyError, UpstreamTimeout
        from core.proxy.access_log import outside_error

        if error is not None and error[0] == DEADLINE_EXCEEDED:
            failure: ProxyError = UpstreamTimeout("The function reached its time limit.")
        else:
            failure = ProxyError("The proxy failed unexpectedly; see its logs.")
        # In the route's shape, with its CORS headers and request id: sent outside the app.
        status, headers, body = outside_error(failure, scope)
        await self.send({"type": "http.response.start", "status": status, "headers": headers})
        await self.send({"type": "http.response.body", "body": body})


def time_left(invocation: Invocation) -> float | None:
    """Seconds the app may run, or None when Lambda gave no deadline."""
    if not invocation.deadline_ms:
        return None
    return seconds_before(invocation.deadline_ms / 1000)


async def handle_invocation(api: RuntimeApi, app: Any, invocation: Invocation) -> None:
    if invocation.trace_id:
        os.environ["_X_AMZN_TRACE_ID"] = invocation.trace_id  # what AWS SDKs read for X-Ray
    source = event_source(invocation.event)
    try:
        if source is None:
            raise ValueError("no event source claims this event")
        scope = source.scope
        exchange = StreamedExchange(api, invocation, source)
    except (KeyError, TypeError, ValueError, AttributeError, UnicodeError):
        # A console test event or a direct `aws lambda invoke`: say what this entry takes.
        message = f"this function answers {accepted_events()}"
        await api.invocation_error(invocation.request_id, "Runtime.UnsupportedEvent", message)
        return
    task = asyncio.ensure_future(app(scope, exchange.receive, exchange.send))
    done, _ = await asyncio.wait({task}, timeout=time_left(invocation))
    error: tuple[str, str] | None = None
    if not done:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        error = (DEADLINE_EXCEEDED, "the reply was cut short before the function's time limit")
    elif task.exception() is not None:
        exc = task.exception()
        logger.error("app failed: %s", type(exc).__name__)  # its text may quote a URL or header
        error = (type(exc).__name__, "the upstream stream broke or the proxy failed mid-reply")
    await exchange.finish(error, scope)


async def run(address: str, app: Any = None, *, max_invocations: int | None = None) -> None:
    """Serve invocations forever (or `max_invocations`, for tests and benchmarks)."""
    api = RuntimeApi(address)
    if app is None:
        try:
            from handlers.aws.secrets import create_app_with_secrets

            app = create_app_with_secrets()
        except Exception as exc:
            reason = f"{type(exc).__name__} while starting the proxy"
            await api.init_error("Runtime.InitError", reason)
            raise
    served = 0
    while max_invocations is None or served < max_invocations:
        invocation = await api.next_invocation()
        try:
            await handle_invocation(api, app, invocation)
        except Exception as exc:  # talking to the Runtime API failed; report it and go on
            await report_failed_invocation(api, invocation, exc)
        served += 1


async def report_failed_invocation(api: RuntimeApi, invocation: Invocation, exc: Exception) -> None:
    logger.error("invocation failed: %s", type(exc).__name__)
    api.reset()
    try:
        await api.invocation_error(invocation.request_id, "Runtime.StreamError", type(exc).__name__)
    except Exception as report_exc:  # Lambda already ended this invocation
        logger.error("could not report the failure: %s", type(report_exc).__name__)


def main() -> None:
    address = os.environ.get("AWS_LAMBDA_RUNTIME_API")
    if not address:
        sys.exit("AWS_LAMBDA_RUNTIME_API is not set: this entry runs inside AWS Lambda")
    try:
        asyncio.run(run(address))
    except Exception as exc:
        sys.exit(f"runtime stopped: {type(exc).__name__}")


if __name__ == "__main__":
    main()
