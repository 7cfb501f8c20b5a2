"""Running ASGI apps on uvicorn with the options every entry point shares."""

from __future__ import annotations

import asyncio
from typing import Any

from core.types import ASGIApp


def server_config(app: ASGIApp | str, host: str, port: int, **options: Any) -> Any:
    import uvicorn  # imported here: function handlers never need it

    return uvicorn.Config(
        app,
        host=host,
        port=port,
        # uvloop and httptools when installed (the `speed` extra), asyncio/h11 otherwise.
        loop="auto",
        http="auto",
        # The proxy writes its own access log line with timings and no secrets.
        access_log=False,
        log_level=options.pop("log_level", "warning"),
        # Long generations: keep idle keep-alive connections a little longer than
        # typical load balancers (60 s) so they, not we, close first.
        timeout_keep_alive=75,
        server_header=False,
        # The client IP is core/access/client_ip.py's job, per platform; uvicorn's own rewrite
        # trusts X-Forwarded-For from any loopback peer, which a caller can fill in.
        proxy_headers=options.pop("proxy_headers", False),
        **options,
    )


def tune_gc() -> None:
    """For a long-running server: what start-up built (modules, the app, the pool) is moved
    out of the collector's sight, and young collections run less often. A stream relay makes
    many short-lived objects and almost no cycles; the collector took 7 to 10 % of the
    proxy's CPU at 500 streams (py-spy, README Performance)."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


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
