"""A proxy with the response cache in front of the mock upstream, for the real SDKs.

The upstream is the mock plus two behaviours the cache must see and the mock does not
have: `x-break-after: N` streams N events and drops the connection, as a failing provider
does, and `x-reply-cache-control: V` adds that header to a normal reply."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from core.access.tokens import create_token
from core.app import create_app
from core.config import load_settings
from core.devtools.mock_upstream import MockOptions, MockUpstream
from core.stores import open_store
from core.types import Message, Receive, Scope, Send
from tests.support.servers import RunningServer, proxy_env, serve_in_thread
from tests.support.store_backends import redis_server

KEYS = {
    "OPENAI": "fake-openai-cache-key-for-tests",
    "ANTHROPIC": "fake-anthropic-cache-key-for-tests",
    "GEMINI": "mock-gemini-cache-key-not-real",
}
PRICES = json.dumps({"*": {"input": 10, "output": 100}})


class CacheTestUpstream:
    def __init__(self) -> None:
        self.mock = MockUpstream(MockOptions(chunks=8, delay_ms=0))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/_mock/"):
            await self.mock(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if b"x-break-after" in headers:
            await self.mock(scope, receive, _discard)  # recorded; its reply is not sent
            await self._broken_stream(int(headers[b"x-break-after"]), send)
            return
        extra = headers.get(b"x-reply-cache-control")
        if extra is not None:

            async def marked(message: Message) -> None:
                if message["type"] == "http.response.start":
                    message["headers"] = [*message["headers"], (b"cache-control", extra)]
                await send(message)

            await self.mock(scope, receive, marked)
            return
        await self.mock(scope, receive, send)

    @staticmethod
    async def _broken_stream(events: int, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        for index in range(events):
            chunk = {
                "id": "x",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": "m",
                "choices": [{"index": 0, "delta": {"content": f"w{index}"}}],
            }
            body = f"data: {json.dumps(chunk)}\n\n".encode()
            await send({"type": "http.response.body", "body": body, "more_body": True})
            await asyncio.sleep(0.02)
        raise ConnectionAbortedError("the provider went away mid-stream")


async def _discard(message: Message) -> None:
    return None


@dataclass
class CacheStack:
    proxy: RunningServer
    upstream: RunningServer
    token: str
    other_token: str


@pytest.fixture(scope="session")
def cache_upstream() -> Iterator[RunningServer]:
    with serve_in_thread(CacheTestUpstream()) as server:
        yield server


@contextlib.contextmanager
def cache_stack(upstream: RunningServer, workdir: Path, **extra: str) -> Iterator[CacheStack]:
    store_url = f"sqlite:///{workdir}/tokens.db"
    store = open_store(store_url)
    token, _ = create_token(store, "cache-one")
    other, _ = create_token(store, "cache-two")
    env = proxy_env(
        upstream.url,
        TOKEN_STORE=store_url,
        CACHE_URL="memory",
        # Shared-token callers are told apart by client IP: one trusted proxy in front.
        CLIENT_IP_SOURCE="xff:1",
        **extra,
    )
    for name, key in KEYS.items():
        env[f"{name}_API_KEY"] = key
        env[f"{name}_UPSTREAM"] = upstream.url
    with serve_in_thread(create_app(load_settings(env))) as proxy:
        yield CacheStack(proxy, upstream, token, other)


@pytest.fixture(scope="module")
def stack(
    cache_upstream: RunningServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CacheStack]:
    """Scope `caller`, with a request limit and a dollar budget to see what a hit costs."""
    with cache_stack(
        cache_upstream,
        tmp_path_factory.mktemp("cache"),
        RATE_LIMIT_REQUESTS="1000",
        ACCESS_LOG="true",
        BUDGET_PER_CALLER_USD="5",
        MODEL_PRICES=PRICES,
    ) as built:
        yield built


@pytest.fixture(scope="module")
def shared_stack(
    cache_upstream: RunningServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CacheStack]:
    """Scope `shared`, sampling requests cached too."""
    with cache_stack(
        cache_upstream,
        tmp_path_factory.mktemp("cache-shared"),
        CACHE_SCOPE="shared",
        CACHE_NONDETERMINISTIC="true",
    ) as built:
        yield built


@pytest.fixture(scope="session")
def cache_redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("cache-redis")) as url:
        yield url
