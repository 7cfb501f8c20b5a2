"""A Lambda adapter behind an HTTP URL, as its front end serves it: what a Function URL or
an API Gateway stage does in front of the function, played on loopback.

The conformance adapters for Lambda are driven with events and have no URL; a tool that
checks a deployment (`llm-proxy check --url`) needs one. Each HTTP request becomes the
adapter's event; a streaming function's reply is relayed piece by piece as Lambda receives
it (prelude -> status and headers, then each body piece), a buffered function's reply in
one piece when it returns, as AWS does with each.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tests.conformance.adapters import Adapter, AwsLambdaStreaming, Request
from tests.conformance.lambda_runtime import status_and_headers
from tests.support.servers import serve_in_thread

# Hop-by-hop and framing headers: the front end's own business on each side.
_NOT_RELAYED = {"connection", "keep-alive", "transfer-encoding", "content-length", "te"}
_PART_TIMEOUT = 30.0


def _thread_with_a_loop() -> None:
    # A buffered handler (Mangum) runs its app on the thread's own event loop, as Lambda's
    # runtime runs it on the main thread: one invocation at a time, one loop for all.
    asyncio.set_event_loop(asyncio.new_event_loop())


class LambdaFront:
    def __init__(self, adapter: Adapter) -> None:
        self.adapter = adapter
        self.function = ThreadPoolExecutor(1, initializer=_thread_with_a_loop)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": f"{message['type']}.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        request = await self._request(scope, receive)
        if isinstance(self.adapter, AwsLambdaStreaming):
            await self._relay_stream(self.adapter, request, send)
        else:
            loop = asyncio.get_running_loop()
            reply = await loop.run_in_executor(self.function, self.adapter.send, request)
            await self._start(send, reply.status, reply.headers)
            await send({"type": "http.response.body", "body": reply.body})

    @staticmethod
    async def _request(scope: dict[str, Any], receive: Any) -> Request:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope["headers"]:
            name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
            if name not in _NOT_RELAYED:
                headers[name] = f"{headers[name]}, {value}" if name in headers else value
        path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        if scope.get("query_string"):
            path += "?" + scope["query_string"].decode("latin-1")
        return Request(scope["method"], path, headers, body)

    @staticmethod
    async def _start(send: Any, status: int, headers: list[tuple[str, str]]) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (k.encode("latin-1"), v.encode("latin-1"))
                    for k, v in headers
                    if k not in _NOT_RELAYED
                ],
            }
        )

    async def _relay_stream(self, adapter: AwsLambdaStreaming, request: Request, send: Any) -> None:
        parts = adapter.api.invoke_streaming(adapter.event(request))
        started = False
        while True:
            try:
                kind, value = await asyncio.to_thread(parts.get, True, _PART_TIMEOUT)
            except queue.Empty:
                kind, value = "end", None
            if kind == "prelude":
                await self._start(send, *status_and_headers(value))
                started = True
            elif kind == "data" and value:
                await send({"type": "http.response.body", "body": value, "more_body": True})
            elif kind == "end":
                if not started:  # the function failed before its prelude: API Gateway's 502
                    await self._start(send, 502, [("content-type", "application/json")])
                    await send(
                        {
                            "type": "http.response.body",
                            "body": b'{"message":"Internal server error"}',
                        }
                    )
                else:
                    await send({"type": "http.response.body", "body": b""})
                return


@contextlib.contextmanager
def lambda_front(adapter: Adapter) -> Iterator[str]:
    """Serve a started Lambda adapter on a loopback URL for the life of the block."""
    front = LambdaFront(adapter)
    try:
        with serve_in_thread(front) as server:  # type: ignore[arg-type]
            yield server.url
    finally:
        front.function.shutdown(wait=True)
