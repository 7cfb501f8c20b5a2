"""A server holds only what its traffic needs: the WebSocket library is loaded at the first
upgrade and prometheus_client at the first scrape, not at start (each is over a megabyte of
memory for the server's life). That both still work once asked for is shown over sockets by
tests/realtime and tests/telemetry/test_prometheus_server.py; here, that start leaves them
out and that the first use brings them in."""

from __future__ import annotations

import json
import os
import subprocess

from tests.support.servers import PYTHON, REPO

ENV = {
    "UPSTREAM_BASE_URL": "https://api.openai.com/v1",
    "UPSTREAM_API_KEY": "fake-upstream-key-000000",
    "PROXY_ACCESS_TOKEN": "fake-caller-token-000000",
}

# As `llm-proxy serve` starts (core/cli.py), then a scrape from loopback and an upgrade.
SCRIPT = """
import asyncio, json, sys
from core.telemetry.serving import mark_server
mark_server()
from core.app import create_app
from core.server.runner import server_config

def loaded():
    return sorted({m.split(".")[0] for m in sys.modules} & {"websockets", "prometheus_client"})

app = create_app()
config = server_config(app, "127.0.0.1", 0)
config.load()
at_start = loaded()

async def scrape():
    sent = []
    async def receive():
        return {"type": "http.request", "body": b""}
    async def send(message):
        sent.append(message)
    scope = {"type": "http", "method": "GET", "path": "/metrics", "headers": [],
             "query_string": b"", "client": ("127.0.0.1", 5000)}
    await app(scope, receive, send)
    return sent[0]["status"], sent[-1]["body"]

async def upgrade():
    from uvicorn.server import ServerState
    return config.ws_protocol_class(config=config, server_state=ServerState(), app_state={})

status, body = asyncio.run(scrape())
after_scrape = loaded()
protocol = asyncio.run(upgrade())
print(json.dumps({
    "at_start": at_start, "status": status, "metrics": b"llm_proxy_open" in body,
    "after_scrape": after_scrape, "after_upgrade": loaded(),
    "protocol": type(protocol).__name__,
}))
"""


def test_a_server_loads_the_websocket_and_prometheus_libraries_when_first_used() -> None:
    env = {"PATH": os.environ["PATH"], "LLM_PROXY_ENV_FILE": os.devnull + ".absent", **ENV}
    done = subprocess.run(
        [PYTHON, "-c", SCRIPT], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["at_start"] == []
    assert seen["status"] == 200 and seen["metrics"]
    assert seen["after_scrape"] == ["prometheus_client"]
    assert seen["after_upgrade"] == ["prometheus_client", "websockets"]
    assert seen["protocol"] == "BoundedWebSocketProtocol"
