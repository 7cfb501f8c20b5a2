"""uvicorn's own log lines leave out query strings (core/server/log_filter.py): at
`--log-level info` a WebSocket handshake's line would carry a caller's `?key=`."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import pytest
import uvicorn
from websockets.sync.client import connect

from core.server.runner import server_config

SECRET = "test-caller-token-in-the-query-0123"


async def _accepting(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close"})


def test_a_websocket_handshake_is_logged_without_its_query_string(
    capfd: pytest.CaptureFixture[str],
) -> None:
    config = server_config(_accepting, "127.0.0.1", 0, log_level="info", lifespan="off")
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive()
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        url = f"ws://127.0.0.1:{port}/v1beta/live?model=m&key={SECRET}"
        with connect(url, open_timeout=5):
            pass  # the handshake is what is logged
    except OSError:  # the app closes at once: only the handshake matters here
        pass
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        logging.getLogger("uvicorn.error").handlers.clear()
    logged = capfd.readouterr().err
    assert '"WebSocket /v1beta/live?[query omitted]" [accepted]' in logged
    assert SECRET not in logged and "model=m" not in logged
