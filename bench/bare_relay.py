"""The floor of our stack, as a baseline: uvicorn + httptools + uvloop serving a plain ASGI
app that forwards the body with aiohttp's ClientSession (used directly, configured as
core/upstream/aiohttp_transport.py configures it) and relays the chunks. No checks.
The collector is tuned as the proxy tunes it (core/server/runner.py).
Run: UPSTREAM=http://127.0.0.1:N python -m bench.bare_relay PORT"""

from __future__ import annotations

import os
import sys

import aiohttp
import uvicorn

UPSTREAM = os.environ.get("UPSTREAM", "http://127.0.0.1:8788")
session: aiohttp.ClientSession | None = None


async def app(scope, receive, send):  # type: ignore[no-untyped-def]
    global session
    if scope["type"] != "http":
        return
    if session is None:
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1000, keepalive_timeout=30),
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
        )
    body, more = b"", True
    while more:
        message = await receive()
        body, more = body + message.get("body", b""), message.get("more_body", False)
    if scope["path"] == "/health":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    headers = {"content-type": "application/json", "authorization": "Bearer sk-relay"}
    async with session.post(UPSTREAM + scope["path"], data=body, headers=headers) as response:
        content_type = response.headers.get("content-type", "").encode()
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": [(b"content-type", content_type), (b"cache-control", b"no-cache")],
            }
        )
        async for chunk in response.content.iter_any():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


if __name__ == "__main__" and sys.argv[2:] == ["--our-server"]:
    # The same app on the proxy's own server (core/server: the bounded protocol, the
    # collector tuned): the streams bench's "bare relay, our server" splits the proxy's
    # excess over the floor into what the server adds and what the app does.
    from core.server.runner import serve

    serve(app, "127.0.0.1", int(sys.argv[1]), lifespan="off")
elif __name__ == "__main__":
    # The collector as `llm-proxy serve` sets it (core/server/runner.py): the floor is the
    # same stack, so the ratios measure the proxy's own work, not a setting.
    from core.server.runner import tune_gc

    tune_gc()
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        lifespan="off",
    )
