"""Fixtures for tests/realtime and tests/telemetry: the fake realtime upstream on a loopback
socket, and proxies in front of it; a conftest or test module imports the ones it uses."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from core.app import create_app
from core.config import load_settings
from tests.support.fake_realtime import GEMINI_KEY, FakeRealtime
from tests.support.servers import FAKE_UPSTREAM_KEY, RunningServer, proxy_env, serve_in_thread

ProxyFactory = Callable[..., contextlib.AbstractContextManager[RunningServer]]


@pytest.fixture(scope="module")
def fake() -> Iterator[tuple[FakeRealtime, RunningServer]]:
    app = FakeRealtime()
    with serve_in_thread(app) as server:
        yield app, server


@pytest.fixture
def upstream(fake: tuple[FakeRealtime, RunningServer]) -> FakeRealtime:
    app = fake[0]
    app.sessions.clear()
    app.minted.clear()
    return app


@pytest.fixture(scope="module")
def start_proxy(fake: tuple[FakeRealtime, RunningServer]) -> ProxyFactory:
    """A context manager that serves a proxy in front of the fake, with extra settings."""

    @contextlib.contextmanager
    def start(**extra: Any) -> Iterator[RunningServer]:
        env = proxy_env(
            fake[1].url,
            GEMINI_API_KEY=GEMINI_KEY,
            GEMINI_UPSTREAM=fake[1].url,
            OPENAI_API_KEY=FAKE_UPSTREAM_KEY,
            OPENAI_UPSTREAM=fake[1].url,
        )
        env.update({name: str(value) for name, value in extra.items()})
        with serve_in_thread(create_app(load_settings(env))) as proxy:
            yield proxy

    return start


async def eventually(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    """Wait until `condition()` holds: a session settles, logs and closes its other side a
    moment after the caller's socket closes. Bounded; the caller asserts afterwards."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition() and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
