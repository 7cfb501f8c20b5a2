"""Usage recorded by the settle stage (core/usage/ledger.py) over real sockets: each
reply, JSON or stream, lands in the ledger with its caller, provider and model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from core.access.tokens import create_token
from core.app import create_app
from core.config import load_settings
from core.stores import open_store
from core.usage.ledger import UsageLedger
from tests.support.servers import FAKE_TOKEN, RunningServer, proxy_env, serve_in_thread


@pytest.fixture
def recording_proxy(
    mock_upstream: RunningServer, tmp_path: Path
) -> Iterator[tuple[str, UsageLedger, str]]:
    url = f"sqlite:///{tmp_path}/usage.db"
    upstream = mock_upstream.url
    env = proxy_env(
        upstream,
        TOKEN_STORE=url,
        ANTHROPIC_API_KEY="fake-anthropic-key-for-tests",
        ANTHROPIC_UPSTREAM=upstream,
        GEMINI_API_KEY="mock-gemini",
        GEMINI_UPSTREAM=upstream,
    )
    token, _ = create_token(open_store(url), "metered")
    with serve_in_thread(create_app(load_settings(env))) as server:
        yield server.url, UsageLedger(open_store(url)), token


def test_every_protocol_is_recorded(recording_proxy: tuple[str, UsageLedger, str]) -> None:
    base, ledger, token = recording_proxy
    shared = {"authorization": f"Bearer {FAKE_TOKEN}"}
    chat = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    assert httpx.post(f"{base}/v1/chat/completions", json=chat, headers=shared).status_code == 200
    streamed = {**chat, "stream": True, "stream_options": {"include_usage": True}}
    with httpx.stream("POST", f"{base}/v1/chat/completions", json=streamed, headers=shared) as r:
        assert r.status_code == 200 and r.read()
    anthropic = {"model": "claude-3-5-haiku", "max_tokens": 50, "stream": True, "messages": []}
    with httpx.stream(
        "POST", f"{base}/anthropic/v1/messages", json=anthropic, headers={"x-api-key": token}
    ) as r:
        assert r.status_code == 200 and r.read()
    gemini = httpx.post(
        f"{base}/gemini/v1beta/models/gemini-2.0-flash:generateContent",
        json={"contents": [{"parts": [{"text": "hi"}]}]},
        headers={"x-goog-api-key": FAKE_TOKEN},
    )
    assert gemini.status_code == 200
    # A refused request spends nothing and records nothing.
    assert httpx.post(f"{base}/v1/chat/completions", json=chat).status_code == 401

    by_model = {row.key: row for row in ledger.rows(by="model")}
    assert set(by_model) == {"gpt-4o-mini", "claude-3-5-haiku", "gemini-2.0-flash"}
    # The mock reports one prompt token per word ("hi") and one output token per chunk (8).
    assert (by_model["gpt-4o-mini"].requests, by_model["gpt-4o-mini"].input_tokens) == (2, 2)
    assert by_model["gpt-4o-mini"].output_tokens == 16
    assert (
        by_model["claude-3-5-haiku"].input_tokens,
        by_model["claude-3-5-haiku"].output_tokens,
    ) == (1, 8)
    assert by_model["gemini-2.0-flash"].total_tokens == 9
    callers = {row.key: row.requests for row in ledger.rows(by="caller")}
    [token_caller] = [c for c in callers if c.startswith("token:tok_")]
    assert callers == {"shared": 3, token_caller: 1}
    assert {row.key for row in ledger.rows(by="provider")} == {"default", "anthropic", "gemini"}
