"""The dashboard is plain ASGI inside the proxy's app, so every adapter serves it: one
request through the HTTP server entry (`python -m handlers.http`) and one through the
Mangum handler (API Gateway HTTP API event)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx

from tests.support import lambda_events as events
from tests.support.admin import ADMIN_TOKEN
from tests.support.buffered_lambda import call, import_handler
from tests.support.servers import PYTHON, RunningServer, free_port, proxy_env, run_process


def admin_env(upstream: str, tmp_path: Path) -> dict[str, str]:
    return proxy_env(
        upstream, ADMIN_TOKEN=ADMIN_TOKEN, TOKEN_STORE=f"sqlite:///{tmp_path}/tokens.db"
    )


def test_through_the_http_server_entry(mock_upstream: RunningServer, tmp_path: Path) -> None:
    port = free_port()
    env = {**admin_env(mock_upstream.url, tmp_path), "HOST": "127.0.0.1", "PORT": str(port)}
    base = f"http://127.0.0.1:{port}"
    with run_process([PYTHON, "-m", "handlers.http"], env, f"{base}/health"):
        made = httpx.post(
            f"{base}/admin/api/tokens",
            json={"label": "over-http"},
            headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
        )
    assert made.status_code == 201, made.text
    assert made.json()["token"].startswith("llmp_")
    assert "default-src 'none'" in made.headers["content-security-policy"]


def test_through_mangum(mock_upstream: RunningServer, tmp_path: Path) -> None:
    module = import_handler(admin_env(mock_upstream.url, tmp_path))
    try:
        request = events.HttpRequest(
            "PUT",
            "/admin/api/status",
            headers=[
                ("Authorization", f"Bearer {ADMIN_TOKEN}"),
                ("Content-Type", "application/json"),
            ],
            body=b'{"online": false}',
        )
        status, headers, body, _ = call(module, events.api_gateway_v2(request))
        assert status == 200, body
        assert json.loads(body)["online"] is False
        assert headers["x-content-type-options"] == "nosniff"
        # And the proxy route on the same instance now answers 503.
        chat = events.HttpRequest(
            "POST",
            "/v1/chat/completions",
            headers=[("Authorization", "Bearer test-caller-token-0123456789")],
            body=b"{}",
        )
        status, _, body, _ = call(module, events.api_gateway_v2(chat))
        assert status == 503 and json.loads(body)["error"]["code"] == "service_offline"
    finally:
        sys.modules.pop("handlers.aws.buffered", None)


def test_a_cold_start_does_not_build_the_dashboard(
    mock_upstream: RunningServer, tmp_path: Path
) -> None:
    import os
    import subprocess

    code = (
        "import sys, handlers.aws.buffered; "
        "print(sorted(m for m in sys.modules if m.startswith(('starlette', 'core.admin'))))"
    )
    env = {**os.environ, **admin_env(mock_upstream.url, tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
