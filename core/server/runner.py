"""Running ASGI apps on uvicorn with the options every entry point shares, and the bounded
protocols of this package."""

from __future__ import annotations

import asyncio
import importlib.util
import os
from typing import Any

from core.server.limits import (
    ServerLimits,
    parse_allowed_origins,
    parse_server_limits,
    ws_frame_bound,
)
from core.types import ASGIApp


def http_protocol() -> Any:
    """uvicorn's protocol with the head and connection bounds: over httptools when it is
    installed (the `speed` extra, the Dockerfile), else over h11."""
    try:
        import httptools  # noqa: F401
    except ImportError:
        from core.server.h11_protocol import BoundedH11Protocol

        return BoundedH11Protocol
    from core.server.httptools_protocol import BoundedHttpToolsProtocol

    return BoundedHttpToolsProtocol


def websocket_protocol() -> Any:
    """uvicorn's WebSocket protocol with the send bound, or uvicorn's own choice where the
    `websockets` library it builds on is missing (then it has none, or wsproto's).

    The protocol is imported at a connection's first upgrade, not at start: it and the
    library under it hold about 1.4 MB of a server's memory for its whole life, which a
    deployment no realtime session reaches never needs (uvicorn only calls what it is given
    with the connection's config and state). Whether it can be imported is looked up now:
    the protocol it subclasses came with uvicorn 0.35, and a server on an older uvicorn
    keeps uvicorn's own protocol rather than failing every upgrade."""
    if not (_findable("websockets") and _findable(_SANSIO_PROTOCOL)):
        return "auto"
    return bounded_websocket_protocol


_SANSIO_PROTOCOL = "uvicorn.protocols.websockets.websockets_sansio_impl"


def _findable(name: str) -> bool:
    """Whether `name` can be found without importing it (its parent packages are imported)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a parent missing, or a module set to None
        return False


def bounded_websocket_protocol(**state: Any) -> asyncio.Protocol:
    """The protocol for one upgraded connection (uvicorn's keyword arguments, as given)."""
    from core.server.websocket_protocol import BoundedWebSocketProtocol

    return BoundedWebSocketProtocol(**state)


def server_config(
    app: ASGIApp | str, host: str, port: int, limits: ServerLimits | None = None, **options: Any
) -> Any:
    import uvicorn  # imported here: function handlers never need it

    if limits is None:
        # Invalid values are reported by the app (a 500 naming them) or `llm-proxy check`.
        limits = parse_server_limits(os.environ, [])
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        # uvloop when installed (the `speed` extra), asyncio otherwise.
        loop="auto",
        http=http_protocol(),
        ws=options.pop("ws", websocket_protocol()),
        h11_max_incomplete_event_size=limits.max_header_bytes,
        # Typed int, but any number works: uvicorn hands it to loop.call_later.
        timeout_keep_alive=limits.idle_timeout,  # type: ignore[arg-type]
        # The access log is the proxy's own line with timings and no secrets.
        access_log=False,
        log_level=options.pop("log_level", "warning"),
        server_header=False,
        # The client IP is core/access/client_ip.py's job, per platform; uvicorn's own rewrite
        # trusts X-Forwarded-For from any loopback peer, which a caller can fill in.
        proxy_headers=options.pop("proxy_headers", False),
        # A caller's WebSocket frame is bounded by the proxy's settings, not the library's
        # 16 MiB (the session checks it again: core/realtime/session.py).
        ws_max_size=options.pop("ws_max_size", ws_frame_bound(os.environ)),
        log_config=options.pop("log_config", log_config()),
        **options,
    )
    config.server_limits = limits  # type: ignore[attr-defined]  # read per connection
    # For the 503 past MAX_CONNECTIONS, answered instead of the app and its CORS layer.
    config.allowed_origins = parse_allowed_origins(os.environ)  # type: ignore[attr-defined]
    return config


def log_config() -> dict[str, Any]:
    """uvicorn's own logging configuration, with no query string in its lines
    (core/server/log_filter.py): a WebSocket's `?key=` stays out of the log; and no
    traceback for a stream the proxy aborts on purpose."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    filters = config.setdefault("filters", {})
    filters["no_query_strings"] = {"()": "core.server.log_filter.QueryStringsOmitted"}
    filters["aborts_are_no_faults"] = {"()": "core.server.log_filter.AbortsAreNoFaults"}
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        config["loggers"].setdefault(name, {})["filters"] = ["no_query_strings"]
    # The app's exceptions are logged here (uvicorn's RequestResponseCycle.run_asgi).
    config["loggers"]["uvicorn.error"]["filters"].append("aborts_are_no_faults")
    return config


# Container allocations between two young collections (CPython's default: 700).
YOUNG_GC_THRESHOLD = 10_000


def tune_gc() -> None:
    """For a long-running server: what start-up built (modules, the app, the pool) is moved
    out of the collector's sight, and young collections come less often.

    At 500 streams the collector took about a tenth of the proxy's CPU: every open stream's
    objects (its request, its state, the server's and the client's) were scanned in the
    young generations several times during the second it lived, then again by each full
    pass. With 10,000 allocations between young collections most of them are freed before
    any scan. This is safe only because a finished request leaves no reference cycle behind
    (tests/server/test_no_reference_cycles.py): everything it held is freed by reference
    counting the moment it ends, not by the collector. Measured: docs/performance.md."""
    import gc

    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_GC_THRESHOLD, older, oldest)


def serve(app: ASGIApp | str, host: str, port: int, **options: Any) -> None:
    import uvicorn

    config = server_config(app, host, port, **options)
    if config.workers <= 1:
        tune_gc()
    if config.workers > 1:
        from uvicorn.supervisors import Multiprocess

        sock = config.bind_socket()
        Multiprocess(config, sockets=[sock]).run()
    else:
        uvicorn.Server(config).run()


def serve_together(apps: list[tuple[ASGIApp, str, int]]) -> None:
    """Several apps in one process and one event loop (the demo: proxy + mock upstream)."""
    import uvicorn

    servers = [uvicorn.Server(server_config(app, host, port)) for app, host, port in apps]

    async def run_all() -> None:
        await asyncio.gather(*(server.serve() for server in servers))

    try:
        import uvloop

        uvloop.run(run_all())
    except ImportError:
        asyncio.run(run_all())
