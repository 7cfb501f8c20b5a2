"""The bounded server protocols driven in-process: a recording transport, a small app, and
`connect`, as uvicorn's own tests drive its protocols."""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.server import ServerState

from core.server.limits import ServerLimits

HEAD = (
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: proxy.test\r\n"
    b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n"
)


class RecordingTransport(asyncio.Transport):
    """What the protocols write, whether they closed, and the protocol the connection was
    handed to (a WebSocket upgrade)."""

    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closed = False
        self.aborted = False
        # What a real transport would still hold for a caller that is not reading.
        self.buffered = 0
        self.protocol: Any = None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 80), "peername": ("127.0.0.1", 5000)}.get(name)

    def write(self, data: Any) -> None:
        self.written += bytes(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = self.aborted = True

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_protocol(self) -> Any:
        return self.protocol

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol


class App:
    """Reads the whole body, remembers every message it received, then answers 200."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while True:
            message = await receive()
            self.received.append(message)
            if message["type"] == "http.disconnect" or not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def connect(cls: type[Any], app: Any = None, **limits: Any) -> tuple[Any, RecordingTransport]:
    config = uvicorn.Config(app or App(), lifespan="off", log_level="warning", http=cls)
    config.load()
    config.server_limits = ServerLimits(**limits)  # type: ignore[attr-defined]
    protocol = cls(config=config, server_state=ServerState(), app_state={})
    transport = RecordingTransport()
    transport.protocol = protocol
    protocol.connection_made(transport)
    return protocol, transport


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)
