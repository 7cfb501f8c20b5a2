"""A proxy with metering on in front of a scripted upstream, and the requests the metering
tests send through it (tests/usage, tests/cache, tests/security)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from core.app import create_app
from core.config import load_settings
from tests.support.scripted_upstream import ScriptedUpstream
from tests.support.servers import FAKE_TOKEN, RunningServer, proxy_env, serve_in_thread

AUTH = {"Authorization": f"Bearer {FAKE_TOKEN}"}
JSON = [("content-type", "application/json")]
EVENTS = [("content-type", "text/event-stream")]


@contextlib.contextmanager
def metered(upstream: ScriptedUpstream, **extra: str) -> Iterator[RunningServer]:
    with serve_in_thread(upstream) as up:
        env = proxy_env(
            up.url,
            GEMINI_API_KEY="sk-fake-gemini-key-for-tests",
            GEMINI_UPSTREAM=up.url,
            ANTHROPIC_API_KEY="sk-fake-anthropic-key-tests",
            ANTHROPIC_UPSTREAM=up.url,
            **extra,
        )
        with serve_in_thread(create_app(load_settings(env))) as proxy:
            yield proxy


def remaining(proxy: RunningServer) -> int:
    """The caller's tokens left, read from a request that costs nothing (a GET)."""
    reply = httpx.get(f"{proxy.url}/v1/models", headers=AUTH, timeout=10)
    return int(reply.headers["x-ratelimit-remaining-tokens"])


def chat(stream: bool = False, **extra: Any) -> dict[str, Any]:
    return {
        "model": "fake-model",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 100,
        "stream": stream,
        **extra,
    }


def models_or(reply: Any) -> Any:
    def answer(request: dict[str, Any]) -> Any:
        if request["path"].endswith("/models"):
            return 200, JSON, [(0, b'{"object":"list","data":[]}')]
        return reply(request)

    return answer


def chats_at_once(
    proxy: RunningServer,
    count: int,
    *,
    path: str = "/v1/chat/completions",
    body: dict[str, Any] | None = None,
    headers: dict[str, str] = AUTH,
) -> list[int]:
    """`count` requests (a chat, unless said otherwise) released together; their statuses."""
    gate = threading.Event()
    document = chat() if body is None else body

    def one(_: int) -> int:
        gate.wait()
        return httpx.post(
            f"{proxy.url}{path}", json=document, headers=headers, timeout=30
        ).status_code

    with ThreadPoolExecutor(count) as pool:
        futures = [pool.submit(one, i) for i in range(count)]
        gate.set()
        return [f.result() for f in futures]
