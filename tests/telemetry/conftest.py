"""A proxy with OpenTelemetry on, exporting to an in-test OTLP/HTTP receiver, in front of
the mock upstream (OpenAI, Anthropic and Gemini routes, a response cache, a token store)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from core.access.tokens import create_token
from core.app import create_app
from core.config import load_settings
from core.stores import open_store
from tests.support.servers import RunningServer, free_port, proxy_env, serve_in_thread
from tests.telemetry.otlp_receiver import Received, otlp_receiver

KEYS = {
    "OPENAI": "fake-openai-telemetry-key-0001",
    "ANTHROPIC": "fake-anthropic-telemetry-key-0002",
    "GEMINI": "fake-gemini-telemetry-key-0003",
}
# Each upstream retry target is tried in turn; this one refuses connections.
DEAD_TARGET = f"http://127.0.0.1:{free_port()}"


@dataclass
class TelemetryStack:
    proxy: RunningServer
    upstream: RunningServer
    received: Received
    token: str
    secrets: tuple[str, ...]


@pytest.fixture(scope="module")
def stack(
    mock_upstream: RunningServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TelemetryStack]:
    workdir: Path = tmp_path_factory.mktemp("telemetry")
    store_url = f"sqlite:///{workdir}/tokens.db"
    token, _ = create_token(open_store(store_url), "mobile-app")
    with otlp_receiver() as (endpoint, received), pytest.MonkeyPatch.context() as patch:
        # Only the standard variables configure it; short intervals so a test waits little.
        patch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        patch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
        patch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "200")
        patch.setenv("OTEL_SERVICE_NAME", "llm-proxy-under-test")
        env = proxy_env(mock_upstream.url, TOKEN_STORE=store_url, CACHE_URL="memory")
        for name, key in KEYS.items():
            env[f"{name}_API_KEY"] = key
            env[f"{name}_UPSTREAM"] = mock_upstream.url
        # The Groq route (OpenAI-compatible) fails over from a dead target to the mock.
        env["GROQ_API_KEY"] = "fake-groq-telemetry-key-0004"
        env["GROQ_UPSTREAM"] = f"{DEAD_TARGET},{mock_upstream.url}"
        app = create_app(load_settings(env))
        with serve_in_thread(app) as proxy:
            yield TelemetryStack(
                proxy, mock_upstream, received, token, (token, *KEYS.values(), env["GROQ_API_KEY"])
            )
