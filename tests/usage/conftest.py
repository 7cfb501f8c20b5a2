from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.store_backends import fresh_store_url, redis_server


@pytest.fixture(scope="session")
def usage_redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("usage-redis")) as url:
        yield url


@pytest.fixture(params=["memory", "sqlite", "dynamodb", "redis"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh store of each backend kind: the ledger must add up alike on all four."""
    with fresh_store_url(
        request.param, tmp_path, lambda: request.getfixturevalue("usage_redis_url")
    ) as url:
        yield url


@pytest.fixture(scope="session")
def limits_redis_url(usage_redis_url: str) -> str:
    return usage_redis_url
