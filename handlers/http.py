"""Plain HTTP server: Tencent CloudBase / SCF web functions, Alibaba FC custom runtime,
Cloud Run, Fly, Railway, containers and VMs.

`python -m handlers.http` serves the proxy on $HOST:$PORT (default 0.0.0.0:9000, the port
CloudBase and Function Compute expect). Being a server, it also relays realtime WebSocket
sessions (OpenAI Realtime, Gemini Live: core/realtime/session.py).
"""

from __future__ import annotations

import os

from core.app import create_app
from core.proxy.access_log import configure_logging
from core.telemetry.serving import mark_server

# The entry point owns the process's logging; an app that embeds the proxy keeps its own.
configure_logging()
mark_server(int(os.environ.get("WEB_CONCURRENCY", "1") or 1))  # /metrics is served
app = create_app()


def main() -> None:
    from core.server.runner import serve

    serve(app, os.environ.get("HOST", "0.0.0.0"), int(os.environ.get("PORT", "9000")))


if __name__ == "__main__":
    main()
