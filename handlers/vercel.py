"""Vercel Python functions: Vercel's runtime serves the module-level ASGI `app`.

It streams only on Fluid compute, where Vercel's bootstrap (`vercel-runtime`) runs the app
in its own uvicorn and the platform reads the response as it is written; the older
request/response path buffers the whole body. `vercel.json` routes every path here
(through `api/index.py`, the file Vercel builds) and sets `fluid` and `maxDuration`.

The bootstrap tells each request its invocation's deadline (`maxDuration`), read with
`vercel_runtime.get_deadline()`: a reply still under way just before it is ended here, as
on Lambda (handlers/deadline.py), not cut by Vercel into its own non-JSON 504.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from datetime import datetime
from typing import Any

from core.app import create_app
from core.proxy.access_log import configure_logging
from handlers.deadline import EndBeforeDeadline


def _deadline_reader() -> Callable[[Any], float | None]:
    """The deadline of the request being served (epoch seconds), or None: outside Vercel's
    bootstrap, or from one that says none."""
    try:
        runtime = importlib.import_module("vercel_runtime")
    except ImportError:
        return lambda scope: None
    get_deadline: Callable[[], datetime | None] = runtime.get_deadline

    def deadline(scope: Any) -> float | None:
        when = get_deadline()
        return None if when is None else when.timestamp()

    return deadline


# One request at a time is the common case on a function instance, so keep httpx's own
# transport and skip importing aiohttp at cold start; UPSTREAM_TRANSPORT=aiohttp overrides
# this for deployments that serve many concurrent requests per instance.
# The entry point owns the process's logging; an app that embeds the proxy keeps its own.
configure_logging()
app = EndBeforeDeadline(create_app(concurrent=False), _deadline_reader())
