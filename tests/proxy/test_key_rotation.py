"""Several keys for one provider: requests spread over them, and a 429 or 5xx that comes
before any byte reached the caller is tried again on the next key."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from core.app import create_app
from core.config import load_settings
from core.types import Receive, Scope, Send
from tests.support.servers import FAKE_TOKEN, RunningServer, proxy_env, serve_in_thread

KEY_A = "sk-mock-rotation-a-not-real"
KEY_B = "sk-mock-rotation-b-not-real"
KEY_C = "sk-mock-rotation-c-not-real"


class KeyedUpstream:
    """Answers each key with the status it was told to; records the keys it saw."""

    def __init__(self) -> None:
        self.statuses: dict[str, int] = {}
        self.seen: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        key = dict(scope["headers"]).get(b"authorization", b"").decode().removeprefix("Bearer ")
        self.seen.append(key)
        status = self.statuses.get(key, 200)
        body = json.dumps({"key_index": key[-9:], "status": status}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def keyed() -> Iterator[tuple[KeyedUpstream, RunningServer]]:
    upstream = KeyedUpstream()
    with serve_in_thread(upstream) as up:
        env = proxy_env(up.url, OPENAI_API_KEY=f"{KEY_A}, {KEY_B},{KEY_C}", OPENAI_UPSTREAM=up.url)
        with serve_in_thread(create_app(load_settings(env))) as proxy:
            yield upstream, proxy


def ask(proxy: RunningServer) -> httpx.Response:
    return httpx.post(
        f"{proxy.url}/openai/v1/chat/completions",
        headers={"authorization": f"Bearer {FAKE_TOKEN}"},
        json={"model": "m", "messages": []},
        timeout=10,
    )


def test_requests_rotate_over_the_keys(keyed: tuple[KeyedUpstream, RunningServer]) -> None:
    upstream, proxy = keyed
    upstream.statuses.clear()
    upstream.seen.clear()
    for _ in range(6):
        assert ask(proxy).status_code == 200
    assert sorted(upstream.seen) == sorted([KEY_A, KEY_B, KEY_C] * 2)


@pytest.mark.parametrize("status", [429, 500, 503])
def test_a_failing_key_is_retried_on_the_next(
    keyed: tuple[KeyedUpstream, RunningServer], status: int
) -> None:
    upstream, proxy = keyed
    upstream.statuses = {KEY_A: status}
    upstream.seen.clear()
    replies = [ask(proxy) for _ in range(3)]
    # Every caller gets a 200: the request that drew key A went on to key B.
    assert [r.status_code for r in replies] == [200, 200, 200]
    assert upstream.seen.count(KEY_A) == 1
    assert len(upstream.seen) == 4


def test_when_every_key_fails_the_caller_sees_the_last_answer(
    keyed: tuple[KeyedUpstream, RunningServer],
) -> None:
    upstream, proxy = keyed
    upstream.statuses = {KEY_A: 429, KEY_B: 429, KEY_C: 429}
    upstream.seen.clear()
    reply = ask(proxy)
    assert reply.status_code == 429
    assert sorted(upstream.seen) == sorted([KEY_A, KEY_B, KEY_C])


def test_a_client_error_is_not_retried(keyed: tuple[KeyedUpstream, RunningServer]) -> None:
    upstream, proxy = keyed
    upstream.statuses = {KEY_A: 400, KEY_B: 400, KEY_C: 400}
    upstream.seen.clear()
    assert ask(proxy).status_code == 400
    assert len(upstream.seen) == 1
