"""Several upstream targets per provider (`<P>_UPSTREAM` / `UPSTREAM_BASE_URL` as a comma
list): round robin, failover past a dead target and past a 5xx before the first byte, and
how that combines with the key ring."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from core.app import create_app
from core.config import ConfigError, load_settings
from core.providers import next_attempt
from core.types import Receive, Scope, Send
from tests.support.servers import (
    FAKE_TOKEN,
    RunningServer,
    free_port,
    proxy_env,
    reset_upstream,
    serve_in_thread,
    upstream_requests,
)

AUTH = {"Authorization": f"Bearer {FAKE_TOKEN}"}
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


class Refusing:
    """A target that answers every request with one status, and counts them (and the keys)."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.keys: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        self.keys.append(dict(scope["headers"]).get(b"authorization", b"").decode())
        body = b'{"error":{"message":"overloaded","type":"server_error"}}'
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


@contextmanager
def proxy_for(base_url: str, **extra: str) -> Iterator[RunningServer]:
    env = proxy_env("http://unused.invalid", UPSTREAM_BASE_URL=base_url, **extra)
    with serve_in_thread(create_app(load_settings(env))) as server:
        yield server


def chat(proxy: RunningServer) -> httpx.Response:
    return httpx.post(f"{proxy.url}/v1/chat/completions", json=CHAT, headers=AUTH, timeout=20)


def test_requests_spread_round_robin(mock_upstream: RunningServer) -> None:
    refusing = Refusing(418)  # not retried: shows which requests started there
    with (
        serve_in_thread(refusing) as other,
        proxy_for(f"{mock_upstream.url}/v1,{other.url}/v1") as proxy,
    ):
        reset_upstream(mock_upstream)
        statuses = [chat(proxy).status_code for _ in range(6)]
    assert sorted(statuses) == [200, 200, 200, 418, 418, 418]
    assert len(upstream_requests(mock_upstream)) == 3 and len(refusing.keys) == 3


def test_a_dead_target_fails_over_to_the_next(mock_upstream: RunningServer) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"  # a closed port: connection refused
    with proxy_for(f"{dead},{mock_upstream.url}/v1", UPSTREAM_CONNECT_TIMEOUT="2") as proxy:
        reset_upstream(mock_upstream)
        for _ in range(4):
            reply = chat(proxy)
            assert reply.status_code == 200, reply.text
    assert len(upstream_requests(mock_upstream)) == 4


def test_a_target_answering_503_fails_over_to_the_next(mock_upstream: RunningServer) -> None:
    overloaded = Refusing(503)
    with (
        serve_in_thread(overloaded) as other,
        proxy_for(f"{other.url}/v1,{mock_upstream.url}/v1") as proxy,
    ):
        reset_upstream(mock_upstream)
        for _ in range(4):
            assert chat(proxy).status_code == 200
    # Half the requests started on the overloaded target and moved on; none ended there.
    assert len(overloaded.keys) == 2
    assert len(upstream_requests(mock_upstream)) == 4


def test_when_every_target_fails_the_caller_gets_the_last_answer(
    mock_upstream: RunningServer,
) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    overloaded = Refusing(503)
    with serve_in_thread(overloaded) as other, proxy_for(f"{other.url}/v1,{dead}") as proxy:
        replies = [chat(proxy) for _ in range(2)]
    # One request tried the 503 target then the dead one (unreachable: 502); the other the
    # dead one then the 503 target, whose 503 is passed on.
    assert sorted(r.status_code for r in replies) == [502, 503]
    assert len(overloaded.keys) == 2


def test_a_429_moves_to_the_next_key_on_the_same_target() -> None:
    limited = Refusing(429)
    with (
        serve_in_thread(limited) as only,
        proxy_for(
            f"{only.url}/v1", UPSTREAM_API_KEY="fake-key-one-0000,fake-key-two-0000"
        ) as proxy,
    ):
        assert chat(proxy).status_code == 429
    assert sorted(limited.keys) == ["Bearer fake-key-one-0000", "Bearer fake-key-two-0000"]


def test_provider_targets_come_from_configuration_and_are_checked(
    mock_upstream: RunningServer,
) -> None:
    env = proxy_env(
        mock_upstream.url,
        GEMINI_API_KEY="g-key-not-real-0000",
        GEMINI_UPSTREAM=f"{mock_upstream.url}, {mock_upstream.url}/alt",
    )
    [gemini] = [p for p in load_settings(env).providers() if p.prefix == "/gemini"]
    assert gemini.targets.urls == (mock_upstream.url, f"{mock_upstream.url}/alt")
    for bad, named in (
        ("https://a.example,ftp://b.example", "GEMINI_UPSTREAM"),
        ("https://a.example,https://a.example", "twice"),
        ("https://a.example,https://b.example?x=1", "query"),
    ):
        with pytest.raises(ConfigError) as caught:
            load_settings({**env, "GEMINI_UPSTREAM": bad})
        assert named in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        load_settings({**env, "UPSTREAM_BASE_URL": "https://a.example/v1,not a url"})
    assert "UPSTREAM_BASE_URL" in str(caught.value)


@pytest.mark.parametrize(
    ("status", "at", "sizes", "expected"),
    [
        (200, (0, 0), (2, 2), None),
        (400, (0, 0), (2, 2), None),
        (429, (0, 0), (2, 2), (1, 0)),
        (429, (1, 0), (2, 2), None),
        (503, (0, 0), (1, 1), None),
        (503, (0, 0), (1, 2), (0, 1)),
        (503, (0, 0), (2, 1), (1, 0)),
        (503, (0, 0), (2, 2), (1, 1)),
        (500, (1, 0), (2, 3), (1, 1)),
        (502, (1, 2), (2, 3), None),
    ],
)
def test_next_attempt(status: int, at: Any, sizes: Any, expected: Any) -> None:
    assert next_attempt(status, at[0], sizes[0], at[1], sizes[1]) == expected
