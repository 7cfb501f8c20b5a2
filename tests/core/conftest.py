from __future__ import annotations

from collections.abc import Iterator

import pytest

from core.app import create_app
from core.config import load_settings
from tests.providers.stack import all_providers_env
from tests.servers import RunningServer, proxy_env, serve_in_thread


@pytest.fixture(scope="module")
def all_providers_proxy(mock_upstream: RunningServer) -> Iterator[RunningServer]:
    env = proxy_env(mock_upstream.url, **all_providers_env(mock_upstream.url))
    with serve_in_thread(create_app(load_settings(env))) as server:
        yield server
