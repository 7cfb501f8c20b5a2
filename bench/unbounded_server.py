"""The proxy app on uvicorn + httptools as it ran before the connection bounds (no head
size or time bound, keep-alive 75 s, no connection bound): the baseline of
bench_bounds.py. Run: python -m bench.unbounded_server PORT (settings from the environment)."""

from __future__ import annotations

import sys

import uvicorn

from core.app import create_app

if __name__ == "__main__":
    uvicorn.run(
        create_app(),
        host="127.0.0.1",
        port=int(sys.argv[1]),
        loop="auto",
        http="httptools",
        timeout_keep_alive=75,
        access_log=False,
        log_level="warning",
        server_header=False,
        proxy_headers=False,
    )
