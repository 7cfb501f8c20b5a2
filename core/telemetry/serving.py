"""Whether this process is a long-running server (`llm-proxy serve`, `python -m
handlers.http`): only servers expose `/metrics`. Set by the entry point before it builds
the app; a tiny module, so a function's cold start imports nothing more."""

from __future__ import annotations

import os

SERVER = False


def mark_server(workers: int = 1) -> None:
    """Called by a server entry point before `create_app`. With several worker processes,
    Prometheus counts go to files in one temporary directory every worker shares
    (prometheus_client's multiprocess mode), so any worker's `/metrics` adds up all."""
    global SERVER
    SERVER = True
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        import atexit
        import shutil
        import tempfile

        directory = tempfile.mkdtemp(prefix="llm-proxy-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
