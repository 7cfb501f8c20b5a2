"""Mistral's Conversations API (start, append, restart) read by the request policy over
real sockets: MAX_TOKENS_CAP holds `completion_args.max_tokens` to the cap, MAX_MESSAGES
counts `inputs`, a conversation run by an agent (settings out of sight) is refused under
the cap, and a turn on a stored conversation names no model ALLOWED_MODELS could read.
Before, every one of them was refused while a cap was set; a body within the caps now goes
upstream unchanged. The meter does not read their replies: still refused under a token
limit."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from core.app import create_app
from core.config import load_settings
from tests.support.all_providers import all_providers_env
from tests.support.servers import (
    FAKE_TOKEN,
    RunningServer,
    proxy_env,
    reset_upstream,
    serve_in_thread,
    upstream_requests,
)

AUTH = {"authorization": f"Bearer {FAKE_TOKEN}", "content-type": "application/json"}
CAP = 100
START = "/mistral/v1/conversations"
TURNS = ("/mistral/v1/conversations/conv_1", "/mistral/v1/conversations/conv_1/restart")


@pytest.fixture(scope="module")
def upstream(mock_upstream: RunningServer) -> RunningServer:
    return mock_upstream


def _proxy(upstream: RunningServer, **settings: str) -> Any:
    env = proxy_env(upstream.url, **all_providers_env(upstream.url), **settings)
    return serve_in_thread(create_app(load_settings(env)))


@pytest.fixture(scope="module")
def capped(upstream: RunningServer) -> Iterator[RunningServer]:
    with _proxy(upstream, MAX_TOKENS_CAP=str(CAP), MAX_MESSAGES="2") as server:
        yield server


def send(proxy: RunningServer, upstream: RunningServer, path: str, body: dict[str, Any]) -> Any:
    """POST `body` through the proxy: the reply, and the bodies the upstream received
    (as hashes: compared with what was sent)."""
    reset_upstream(upstream)
    raw = json.dumps(body).encode()
    reply = httpx.post(f"{proxy.url}{path}", content=raw, headers=AUTH, timeout=10)
    hashes = [entry["body_sha256"] for entry in upstream_requests(upstream)]
    return reply, raw, hashes


def start(**fields: Any) -> dict[str, Any]:
    return {"model": "mistral-small-latest", "inputs": "hi", **fields}


@pytest.mark.parametrize("path", [START, *TURNS])
def test_over_the_cap_is_refused_naming_it(
    capped: RunningServer, upstream: RunningServer, path: str
) -> None:
    reply, _, hashes = send(capped, upstream, path, start(completion_args={"max_tokens": 101}))
    assert reply.status_code == 400, reply.text
    message = reply.json()["error"]["message"]
    assert "MAX_TOKENS_CAP" in message and "completion_args.max_tokens is 101" in message
    assert hashes == []


@pytest.mark.parametrize(
    "body",
    [
        start(),
        start(completion_args={"temperature": 0.2}),
        start(completion_args=None),
        # A top-level max_tokens is no field of the Conversations API: it caps nothing.
        start(max_tokens=10),
        start(completion_args={"max_tokens": 0}),
        start(completion_args={"max_tokens": "50"}),
        # Another spelling of it alone (two side by side are refused as ambiguous).
        start(completion_args={"maxTokens": 50}),
    ],
)
def test_a_missing_or_unreadable_cap_is_refused(
    capped: RunningServer, upstream: RunningServer, body: dict[str, Any]
) -> None:
    reply, _, hashes = send(capped, upstream, START, body)
    assert reply.status_code == 400, reply.text
    assert "MAX_TOKENS_CAP" in reply.json()["error"]["message"]
    assert hashes == []


@pytest.mark.parametrize("path", [START, *TURNS])
def test_within_the_caps_goes_upstream_unchanged(
    capped: RunningServer, upstream: RunningServer, path: str
) -> None:
    body = start(
        inputs=[{"role": "user", "content": "hi"}, {"role": "user", "content": "again"}],
        completion_args={"max_tokens": CAP, "temperature": 0.3},
        stream=False,
        store=True,
    )
    reply, raw, hashes = send(capped, upstream, path, body)
    assert "Policy" not in reply.text, reply.text
    assert hashes == [hashlib.sha256(raw).hexdigest()]


@pytest.mark.parametrize("path", [START, *TURNS])
def test_too_many_inputs_is_refused_under_max_messages(
    capped: RunningServer, upstream: RunningServer, path: str
) -> None:
    inputs = [{"role": "user", "content": str(n)} for n in range(3)]
    body = start(inputs=inputs, completion_args={"max_tokens": 10})
    reply, _, hashes = send(capped, upstream, path, body)
    assert reply.status_code == 400, reply.text
    assert "MAX_MESSAGES: the request has 3 inputs" in reply.json()["error"]["message"]
    assert hashes == []


def test_a_conversation_run_by_an_agent_is_refused_under_the_cap(
    capped: RunningServer, upstream: RunningServer
) -> None:
    for body in (
        {"agent_id": "ag_1", "inputs": "hi", "completion_args": {"max_tokens": 10}},
        {"agentId": "ag_1", "inputs": "hi", "completion_args": {"max_tokens": 10}},
    ):
        reply, _, hashes = send(capped, upstream, START, body)
        assert reply.status_code == 400, reply.text
        assert "agent" in reply.json()["error"]["message"]
        assert hashes == []


def test_an_agent_is_counted_but_not_refused_under_max_messages_alone(
    upstream: RunningServer,
) -> None:
    with _proxy(upstream, MAX_MESSAGES="1") as proxy:
        reply, raw, hashes = send(proxy, upstream, START, {"agent_id": "ag_1", "inputs": "hi"})
        assert hashes == [hashlib.sha256(raw).hexdigest()], reply.text
        body = {"agent_id": "ag_1", "inputs": [{"role": "user", "content": "x"}] * 2}
        reply, _, hashes = send(proxy, upstream, START, body)
        assert reply.status_code == 400 and hashes == [], reply.text


def test_allowed_models_reads_a_start_and_refuses_what_names_no_model(
    upstream: RunningServer,
) -> None:
    """A turn on a stored conversation runs the model stored with it, whatever its body's
    `model` says; an agent runs its own: neither is one ALLOWED_MODELS can check."""
    with _proxy(upstream, ALLOWED_MODELS="mistral-small-*") as proxy:
        reply, raw, hashes = send(proxy, upstream, START, start())
        assert hashes == [hashlib.sha256(raw).hexdigest()], reply.text
        reply, _, hashes = send(proxy, upstream, START, start(model="mistral-large-latest"))
        assert reply.status_code == 403 and hashes == [], reply.text
        for path in TURNS:
            reply, _, hashes = send(proxy, upstream, path, start())
            assert reply.status_code == 403 and hashes == [], reply.text
        reply, _, hashes = send(proxy, upstream, START, start(agent_id="ag_1"))
        assert reply.status_code == 403 and hashes == [], reply.text


def test_still_refused_under_a_token_limit(upstream: RunningServer) -> None:
    """The meter does not read a conversation's reply: a token limit refuses it, as before."""
    with _proxy(upstream, RATE_LIMIT_TOKENS=str(10**9)) as proxy:
        for path in (START, *TURNS):
            reply, _, hashes = send(proxy, upstream, path, start(completion_args={"max_tokens": 1}))
            assert 400 <= reply.status_code < 500 and hashes == [], reply.text


def test_openai_conversations_stay_store_only(
    capped: RunningServer, upstream: RunningServer
) -> None:
    """OpenAI's Conversations API generates nothing: no completion_args asked of it."""
    for path in ("/openai/v1/conversations", "/azure/openai/v1/conversations"):
        reply, raw, hashes = send(capped, upstream, path, {"items": [], "metadata": {}})
        assert hashes == [hashlib.sha256(raw).hexdigest()], reply.text
