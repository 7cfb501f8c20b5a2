"""An upstream on a raw socket, for what a well-behaved HTTP server never does: a body
that ends in a reset, one that never ends. Each test writes the bytes; this runs the
server (asyncio, in a thread of its own) and yields its port."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable, Iterator

Answer = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.contextmanager
def raw_upstream(answer: Answer) -> Iterator[int]:
    """Serve every connection with `answer` on 127.0.0.1 until the block ends."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    stop = asyncio.Event()
    port = 0

    async def main() -> None:
        nonlocal port
        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        started.set()
        async with server:
            await stop.wait()

    thread = threading.Thread(target=lambda: loop.run_until_complete(main()), daemon=True)
    thread.start()
    started.wait(5)
    try:
        yield port
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(5)
        loop.close()
