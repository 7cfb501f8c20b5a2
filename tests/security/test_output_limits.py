"""MAX_TOKENS_CAP against output limits that some upstream reads as no limit at all, over
real sockets in front of the mock upstream. Each refused case reached the upstream before
(the policy read `-1` as within the cap, and never read `n_predict`)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from core.app import create_app
from core.config import load_settings
from tests.support.servers import (
    FAKE_TOKEN,
    RunningServer,
    proxy_env,
    reset_upstream,
    serve_in_thread,
    upstream_requests,
)

AUTH = {"authorization": f"Bearer {FAKE_TOKEN}"}
CAP = 100
MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def capped(mock_upstream: RunningServer) -> Iterator[RunningServer]:
    env = proxy_env(
        mock_upstream.url,
        ANTHROPIC_API_KEY="fake-anthropic-key-output-limits",
        ANTHROPIC_UPSTREAM=mock_upstream.url,
        GEMINI_API_KEY="fake-gemini-key-output-limits",
        GEMINI_UPSTREAM=mock_upstream.url,
        MAX_TOKENS_CAP=str(CAP),
    )
    with serve_in_thread(create_app(load_settings(env))) as server:
        yield server


def chat(**fields: Any) -> tuple[str, dict[str, Any]]:
    return "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": MESSAGES, **fields}


def claude(**fields: Any) -> tuple[str, dict[str, Any]]:
    return "/anthropic/v1/messages", {"model": "claude-sonnet-4-5", "messages": MESSAGES, **fields}


def gemini(**config: Any) -> tuple[str, dict[str, Any]]:
    body = {"contents": [{"parts": [{"text": "hi"}]}], "generationConfig": config}
    return "/gemini/v1beta/models/gemini-2.5-flash:generateContent", body


REFUSED = {
    # -1 is "no limit" to llama.cpp's server and to LM Studio; 0 to others.
    "max_tokens -1": chat(max_tokens=-1),
    "max_tokens 0": chat(max_tokens=0),
    "max_completion_tokens -5": chat(max_completion_tokens=-5),
    "max_tokens as '-1'": chat(max_tokens="-1"),
    # llama.cpp reads n_predict ahead of max_tokens.
    "n_predict -1 beside max_tokens": chat(max_tokens=50, n_predict=-1),
    "n_predict over the cap beside max_tokens": chat(max_tokens=50, n_predict=100_000),
    # An upstream that does not read n_predict writes to the model's own limit.
    "n_predict alone": chat(n_predict=50),
    "anthropic max_tokens 0": claude(max_tokens=0),
    "anthropic n_predict -1": claude(max_tokens=50, n_predict=-1),
    "gemini maxOutputTokens -1": gemini(maxOutputTokens=-1),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_an_output_limit_some_upstream_reads_as_none_is_refused(
    capped: RunningServer, mock_upstream: RunningServer, case: str
) -> None:
    path, body = REFUSED[case]
    reset_upstream(mock_upstream)
    reply = httpx.post(f"{capped.url}{path}", json=body, headers=AUTH, timeout=10)
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert "MAX_TOKENS_CAP" in error["message"]
    assert upstream_requests(mock_upstream) == []


ALLOWED = {
    "max_tokens at the cap": chat(max_tokens=CAP),
    "max_tokens and n_predict within it": chat(max_tokens=50, n_predict=50),
    "anthropic max_tokens 1": claude(max_tokens=1),
    "gemini maxOutputTokens within it": gemini(maxOutputTokens=64),
}


@pytest.mark.parametrize("case", list(ALLOWED))
def test_an_output_limit_within_the_cap_goes_through_as_sent(
    capped: RunningServer, mock_upstream: RunningServer, case: str
) -> None:
    path, body = ALLOWED[case]
    sent = json.dumps(body).encode()
    reset_upstream(mock_upstream)
    reply = httpx.post(f"{capped.url}{path}", content=sent, headers=AUTH, timeout=10)
    assert reply.status_code == 200, reply.text
    [seen] = upstream_requests(mock_upstream)
    assert seen["body_sha256"] == hashlib.sha256(sent).hexdigest()
