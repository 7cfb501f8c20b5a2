"""The streams bench's upstream: OpenAI's streamed chat completions, the mock upstream's
events byte for byte (core/devtools/mock_upstream/openai.py `chat_stream`), served by a
plain asyncio protocol on uvloop: a timer and a write an event, no coroutine.

Why not the mock itself: at 500 streams it took 0.9 of a core (51 us an event: an ASGI
app, a coroutine and a disconnect watcher per stream; this one takes 32 to 35 us, most of
it the kernel's loopback send), so on a 2-core machine the relay under test, the mock and
the load generator wanted more than the two cores there are. The relay then fell behind,
read several events per chunk, and its CPU per event and events/s measured how starved it
was as much as what it costs. A real upstream runs on someone else's machine; this one
takes less of ours. `BENCH_STREAMS_UPSTREAM=mock` runs the bench against the full mock.

Each event goes out `delay` after the one before (the first `delay` after the request),
as the mock's do; a connection asks for one stream after another (keep-alive).
Run: python -m bench.sse_upstream PORT CHUNKS DELAY_MS
"""

from __future__ import annotations

import asyncio
import json
import sys

from core.devtools.mock_upstream.knobs import Knobs
from core.devtools.mock_upstream.openai import chat_stream

HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"content-type: text/event-stream; charset=utf-8\r\n"
    b"cache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)
OK = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok"
NOT_FOUND = (
    b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 51\r\n\r\n"
    b'{"error":{"message":"not here","type":"not_found"}}'
)
BAD = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
END = b"0\r\n\r\n"


class Upstream(asyncio.Protocol):
    """One connection: read a request, answer it (a stream is a chain of timers), then the
    next one."""

    def __init__(self, chunks: int, delay: float) -> None:
        self.chunks = chunks
        self.delay = delay
        self.buffer = b""
        self.events: list[bytes] = []
        self.next_event = 0
        self.timer: asyncio.TimerHandle | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.timer is None:
            self.answer()

    def answer(self) -> None:
        """Answer the request in the buffer, if all of it is there."""
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0:
            return
        lines = self.buffer[:head_end].split(b"\r\n")
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip() or 0)
        body_end = head_end + 4 + length
        if len(self.buffer) < body_end:
            return
        body, self.buffer = self.buffer[head_end + 4 : body_end], self.buffer[body_end:]
        parts = lines[0].split(b" ")
        assert self.transport is not None
        if len(parts) != 3:
            self.transport.write(BAD)
            self.transport.close()
            return
        method, path = parts[0], parts[1]
        if method == b"GET":
            self.transport.write(OK)
            return
        if not path.endswith(b"/chat/completions"):
            self.transport.write(NOT_FOUND)
            return
        try:
            request = json.loads(body)
        except ValueError:
            request = {}
        knobs = Knobs(
            chunks=self.chunks,
            delay=self.delay,
            gzip=False,
            cut_after=None,
            scale=1,
            cached=0,
            cache_write=0,
        )
        self.events = chat_stream(request if isinstance(request, dict) else {}, knobs)
        self.next_event = 0
        self.transport.write(HEAD)
        self.timer = asyncio.get_running_loop().call_later(self.delay, self.send_event)

    def send_event(self) -> None:
        if self.transport is None:
            return
        event = self.events[self.next_event]
        self.next_event += 1
        frame = b"%x\r\n%s\r\n" % (len(event), event)
        if self.next_event < len(self.events):
            self.transport.write(frame)
            self.timer = asyncio.get_running_loop().call_later(self.delay, self.send_event)
            return
        self.transport.write(frame + END)
        self.timer = None
        self.answer()  # a request that came in meanwhile (none does: the load waits)


async def serve(port: int, chunks: int, delay: float) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: Upstream(chunks, delay), "127.0.0.1", port, backlog=4096
    )
    async with server:
        await server.serve_forever()


def main() -> None:
    port, chunks, delay_ms = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    try:
        import uvloop
    except ImportError:  # the bench's environment has it; asyncio's own loop works too
        asyncio.run(serve(port, chunks, delay_ms / 1000))
    else:
        uvloop.run(serve(port, chunks, delay_ms / 1000))


if __name__ == "__main__":
    main()
