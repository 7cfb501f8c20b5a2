"""Vercel Python functions: Vercel's runtime serves the module-level ASGI `app`.

It streams only on Fluid compute, where Vercel's bootstrap (`vercel-runtime`) runs the app
in its own uvicorn and the platform reads the response as it is written; the older
request/response path buffers the whole body. `vercel.json` routes every path here
(through `api/index.py`, the file Vercel builds) and sets `fluid` and `maxDuration`.
"""

from __future__ import annotations

from core.app import create_app
from core.proxy.access_log import configure_logging

# One request at a time is the common case on a function instance, so keep httpx's own
# transport and skip importing aiohttp at cold start; UPSTREAM_TRANSPORT=aiohttp overrides
# this for deployments that serve many concurrent requests per instance.
# The entry point owns the process's logging; an app that embeds the proxy keeps its own.
configure_logging()
app = create_app(concurrent=False)
