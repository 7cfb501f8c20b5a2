from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.tokens.backends import fresh_store_url, redis_server


@pytest.fixture(scope="session")
def limits_redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("limits-redis")) as url:
        yield url


@pytest.fixture(params=["memory", "sqlite", "dynamodb", "redis"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh store of each backend kind: the counters must behave alike on all four."""
    with fresh_store_url(
        request.param, tmp_path, lambda: request.getfixturevalue("limits_redis_url")
    ) as url:
        yield url


@pytest.fixture(params=["sqlite", "dynamodb", "redis"])
def shared_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The backends two instances can share (memory is one process's own)."""
    with fresh_store_url(
        request.param, tmp_path, lambda: request.getfixturevalue("limits_redis_url")
    ) as url:
        yield url
