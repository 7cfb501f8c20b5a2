"""Shared fixtures: the mock upstream and the proxy on real loopback sockets."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from core.app import create_app
from core.config import load_settings
from core.devtools.mock_upstream import MockOptions, MockUpstream
from core.proxy.access_log import configure_logging
from tests.support.all_providers import all_providers_env
from tests.support.servers import RunningServer, proxy_env, serve_in_thread

# A developer's own .env must not leak into tests that run the CLI (in-process or not).
os.environ["LLM_PROXY_ENV_FILE"] = os.devnull + ".absent"
# The test session is the entry point here, as `llm-proxy serve` or a handler would be:
# it sets up the proxy's logging (create_app leaves the process's logging alone).
configure_logging()


@pytest.fixture(scope="session")
def mock_upstream() -> Iterator[RunningServer]:
    with serve_in_thread(MockUpstream(MockOptions(chunks=8, delay_ms=0))) as server:
        yield server


@pytest.fixture(scope="session")
def proxy(mock_upstream: RunningServer) -> Iterator[RunningServer]:
    app = create_app(load_settings(proxy_env(mock_upstream.url)))
    with serve_in_thread(app) as server:
        yield server


@pytest.fixture(scope="module")
def all_providers_proxy(mock_upstream: RunningServer) -> Iterator[RunningServer]:
    """Every catalogue provider switched on, each pointed at the mock upstream (the
    catalogue's routes in tests/core, the credential slots in tests/access)."""
    env = proxy_env(mock_upstream.url, **all_providers_env(mock_upstream.url))
    with serve_in_thread(create_app(load_settings(env))) as server:
        yield server
