"""One proxy for the SDK suites: OpenAI, Anthropic, Gemini and Azure routes in front of the
mock upstream, with per-caller tokens in a SQLite store."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from core.access.tokens import create_token
from core.app import create_app
from core.config import load_settings
from core.stores import open_store
from tests.support.servers import RunningServer, proxy_env, serve_in_thread

KEYS = {
    "OPENAI": "sk-mock-openai-sdk-key-not-real",
    "ANTHROPIC": "sk-mock-anthropic-sdk-key-not-real",
    "GEMINI": "mock-gemini-sdk-key-not-real",
    "AZURE_OPENAI": "mock-azure-sdk-key-not-real",
}


@dataclass
class SDKStack:
    proxy: RunningServer
    upstream: RunningServer
    token: str  # allowed on every provider
    scoped_token: str  # allowed only on a provider these suites never call: 403 everywhere


@pytest.fixture(scope="module")
def stack(
    mock_upstream: RunningServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SDKStack]:
    store_url = f"sqlite:///{tmp_path_factory.mktemp('sdk')}/tokens.db"
    store = open_store(store_url)
    token, _ = create_token(store, "sdk-suite")
    scoped, _ = create_token(store, "deepseek-only", providers=("deepseek",))
    env = proxy_env(mock_upstream.url, TOKEN_STORE=store_url)
    for name, key in KEYS.items():
        env[f"{name}_API_KEY"] = key
        env[f"{name}_UPSTREAM"] = mock_upstream.url
    with serve_in_thread(create_app(load_settings(env))) as proxy:
        yield SDKStack(proxy, mock_upstream, token, scoped)
