"""A proxy with MODEL_ROUTES and MODEL_FALLBACKS in front of one mock upstream per provider,
so a test sees which upstream each request reached, with which key."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from core.access.tokens import create_token
from core.app import create_app
from core.config import load_settings
from core.devtools.mock_upstream import MockOptions, MockUpstream
from core.stores import open_store
from core.usage.ledger import UsageLedger
from tests.support.servers import (
    FAKE_UPSTREAM_KEY,
    RunningServer,
    free_port,
    proxy_env,
    reset_upstream,
    serve_in_thread,
)

KEYS = {
    "default": FAKE_UPSTREAM_KEY,
    "anthropic": "fake-anthropic-key-routing",
    "gemini": "fake-gemini-key-routing",
    "deepseek": "fake-deepseek-key-routing",
}
ROUTES = "claude-*=anthropic,gemini-*=gemini,text-embedding-004=gemini,deepseek-*=deepseek,mistral-*=mistral"
FALLBACKS = "gpt-4o>claude-sonnet-4-5>gemini-2.5-pro,mistral-large>gemini-2.5-flash"
PRICES = (
    '{"gpt-4o*": {"input": 1, "output": 1}, "claude-*": {"input": 100, "output": 100},'
    ' "gemini-*": {"input": 10, "output": 10}, "text-embedding-*": {"input": 1, "output": 0},'
    ' "deepseek-*": {"input": 1, "output": 1}, "mistral-*": {"input": 1, "output": 1}}'
)


@dataclass
class Routed:
    proxy: RunningServer
    upstreams: dict[str, RunningServer]
    store_url: str
    # Stored tokens: unscoped, scoped to the default route, scoped to anthropic.
    tokens: dict[str, str]
    # The identity the unscoped token's usage is kept under (used by one test only).
    any_caller: str
    ledger: UsageLedger

    def reset(self) -> None:
        for upstream in self.upstreams.values():
            reset_upstream(upstream)


@pytest.fixture(scope="session")
def routed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Routed]:
    names = ("default", "anthropic", "gemini", "deepseek")
    mocks = [serve_in_thread(MockUpstream(MockOptions(chunks=8))) for _ in names]
    upstreams = {name: mock.__enter__() for name, mock in zip(names, mocks, strict=True)}
    store_url = f"sqlite:///{Path(tmp_path_factory.mktemp('routing'))}/store.db"
    store = open_store(store_url)
    any_token, any_record = create_token(store, "any")
    tokens = {
        "any": any_token,
        "default-only": create_token(store, "default-only", providers=("default",))[0],
        "anthropic-only": create_token(store, "anthropic-only", providers=("anthropic",))[0],
        # Less room than one request's worst case: each attempt reserves all of it.
        "small-budget": create_token(store, "small-budget", budget_usd=0.01)[0],
    }
    env = proxy_env(
        upstreams["default"].url,
        UPSTREAM_API_KEY=KEYS["default"],
        ANTHROPIC_API_KEY=KEYS["anthropic"],
        ANTHROPIC_UPSTREAM=upstreams["anthropic"].url,
        GEMINI_API_KEY=KEYS["gemini"],
        GEMINI_UPSTREAM=upstreams["gemini"].url,
        DEEPSEEK_API_KEY=KEYS["deepseek"],
        DEEPSEEK_UPSTREAM=upstreams["deepseek"].url,
        # Nothing listens there: a refused connection.
        MISTRAL_API_KEY="fake-mistral-key-routing",
        MISTRAL_UPSTREAM=f"http://127.0.0.1:{free_port()}",
        MODEL_ROUTES=ROUTES,
        MODEL_FALLBACKS=FALLBACKS,
        TOKEN_STORE=store_url,
        TOKEN_CACHE_SECONDS="0",
        MODEL_PRICES=PRICES,
        BUDGET_PER_CALLER_USD="1000",
        CACHE_URL="memory://",
        # The ledger in memory, written as each reply settles (a SQLite ledger is written by
        # one background thread for the whole test process, on no schedule a test can see).
        USAGE_STORE="memory://",
        ADMIN_TOKEN="test-admin-token-for-routing-0123456789",
    )
    app = create_app(load_settings(env))
    # The proxy's own ledger: read through the store object that writes it.
    ledger = app.proxy.ledger  # type: ignore[attr-defined]
    with serve_in_thread(app) as proxy:
        yield Routed(proxy, upstreams, store_url, tokens, "token:" + any_record.id, ledger)
    for mock in mocks:
        mock.__exit__(None, None, None)
