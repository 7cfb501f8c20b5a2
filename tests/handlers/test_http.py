"""`python -m handlers.http`, the plain server entry: a deploy package without a dependency
stops it before it listens, as a clear import error, rather than starting a server whose
/health answers while every proxied request fails.

This is why the upstream client's package (aiohttp for a server, httpx for a function) is
imported when the app is built and not with the pool: uvicorn's lifespan in its default
`auto` mode takes an exception raised at start-up for an app without lifespan support, and
serves on (tests/handlers/aws cover the same for
the Lambda streaming entry, as an init error)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.support.servers import PYTHON, REPO, free_port, proxy_env


def test_a_package_without_its_http_client_stops_before_it_listens(tmp_path: Path) -> None:
    # A server relays through aiohttp (core/upstream/client.py).
    (tmp_path / "aiohttp.py").write_text("raise ImportError('aiohttp is not in the package')\n")
    env = {
        "PATH": os.environ["PATH"],
        "LLM_PROXY_ENV_FILE": os.devnull + ".absent",
        **proxy_env("http://127.0.0.1:9"),
        "PYTHONPATH": str(tmp_path),
        "HOST": "127.0.0.1",
        "PORT": str(free_port()),
    }
    try:
        done = subprocess.run(
            [PYTHON, "-m", "handlers.http"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"the server started without aiohttp:\n{exc.stderr!r}") from None
    assert done.returncode != 0
    assert "ImportError: aiohttp is not in the package" in done.stderr
