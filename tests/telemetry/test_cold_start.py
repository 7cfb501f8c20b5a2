"""Telemetry off costs nothing at start: no OpenTelemetry module is imported by any handler,
and a function handler with no ledger builds the proxy without the telemetry layer."""

from __future__ import annotations

import os

import pytest

from core.app import create_app
from core.config import load_settings
from tests.support.imports import modules_imported
from tests.support.servers import proxy_env

ENV = {
    "UPSTREAM_BASE_URL": "https://api.openai.com/v1",
    "UPSTREAM_API_KEY": "fake-upstream-key-000000",
    "PROXY_ACCESS_TOKEN": "fake-caller-token-000000",
}


@pytest.mark.parametrize("handler", ["handlers.http", "handlers.vercel", "handlers.gcp"])
def test_no_opentelemetry_module_is_imported_when_off(handler: str) -> None:
    imported = modules_imported(handler, ENV)
    assert not [name for name in imported if name.startswith("opentelemetry")]
    if handler != "handlers.http":  # only servers count for /metrics
        assert not [name for name in imported if name.startswith("prometheus_client")]


def test_a_function_with_nothing_configured_has_no_telemetry_layer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)
    app = create_app(load_settings(proxy_env("http://127.0.0.1:9")), concurrent=False)
    assert app.proxy.telemetry is None  # type: ignore[attr-defined]
    assert type(app.app).__name__ == "CORSMiddleware"  # type: ignore[attr-defined]
