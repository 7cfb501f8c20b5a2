"""uvicorn's own log lines leave out query strings (core/server/log_filter.py): at
`--log-level info` a WebSocket handshake's line would carry a caller's `?key=`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from websockets.sync.client import connect

from core.server.runner import server_config

SECRET = "test-caller-token-in-the-query-0123"


@contextlib.contextmanager
def logging_server(app: Any, **options: Any) -> Iterator[int]:
    """`app` served as `llm-proxy serve` configures uvicorn, logging included (its filters
    live in that configuration); yields the port. uvicorn's handlers are dropped after, so
    the next test's capture sees fresh ones."""
    config = server_config(app, "127.0.0.1", 0, lifespan="off", **options)
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive()
        time.sleep(0.01)
    try:
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        logging.getLogger("uvicorn.error").handlers.clear()


async def _accepting(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close"})


def test_a_websocket_handshake_is_logged_without_its_query_string(
    capfd: pytest.CaptureFixture[str],
) -> None:
    with logging_server(_accepting, log_level="info") as port:
        url = f"ws://127.0.0.1:{port}/v1beta/live?model=m&key={SECRET}"
        # The app closes at once: only the handshake, which is what is logged, matters.
        with contextlib.suppress(OSError), connect(url, open_timeout=5):
            pass
    logged = capfd.readouterr().err
    assert '"WebSocket /v1beta/live?[query omitted]" [accepted]' in logged
    assert SECRET not in logged and "model=m" not in logged


async def _aborting(scope: Any, receive: Any, send: Any) -> None:
    from core.errors import UpstreamStreamBroken

    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
    if scope["path"] == "/abort":
        raise UpstreamStreamBroken("upstream stream broke after 9 bytes")
    raise RuntimeError("a real fault")


def test_a_stream_aborted_on_purpose_logs_no_traceback_and_a_fault_still_does(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """The relay ends a broken stream by raising UpstreamStreamBroken once the head is out
    (logged there as one warning line): uvicorn logged each as "Exception in ASGI
    application" with a traceback, burying real faults among them."""
    import http.client

    logged = {}
    with logging_server(_aborting) as port:
        for path in ("/abort", "/fault"):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", path)
            reply = connection.getresponse()
            with pytest.raises(http.client.IncompleteRead):
                reply.read()  # the connection is aborted either way: a cut body
            connection.close()
            time.sleep(0.1)
            logged[path] = capfd.readouterr().err
    assert "Exception in ASGI application" not in logged["/abort"]
    assert "UpstreamStreamBroken" not in logged["/abort"]
    assert (
        "Exception in ASGI application" in logged["/fault"] and "a real fault" in logged["/fault"]
    )
