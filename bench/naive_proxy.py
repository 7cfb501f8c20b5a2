"""The naive proxy the field starts from, as a baseline: Starlette + httpx.AsyncClient +
StreamingResponse. Run: UPSTREAM=http://127.0.0.1:N python -m bench.naive_proxy PORT"""

from __future__ import annotations

import os
import sys

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

UPSTREAM = os.environ.get("UPSTREAM", "http://127.0.0.1:8788")
client = httpx.AsyncClient(base_url=UPSTREAM, timeout=30)


async def proxy(request: Request) -> StreamingResponse:
    upstream = client.build_request(
        request.method,
        request.url.path,
        headers={"content-type": request.headers.get("content-type", "")},
        content=await request.body(),
    )
    response = await client.send(upstream, stream=True)
    return StreamingResponse(
        response.aiter_raw(),
        status_code=response.status_code,
        headers={"content-type": response.headers.get("content-type", "")},
        background=BackgroundTask(response.aclose),
    )


async def health(request: Request) -> StreamingResponse:
    return StreamingResponse(iter([b"ok"]))


app = Starlette(
    routes=[Route("/health", health), Route("/{path:path}", proxy, methods=["GET", "POST"])]
)

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
