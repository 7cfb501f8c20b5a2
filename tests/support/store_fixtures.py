"""Store fixtures for the folders whose tests run once per backend (tests/access,
tests/stores): a conftest imports the fixtures and sets `pytest_generate_tests =
every_backend`, so each test that takes a store runs on memory, SQLite, DynamoDB and Redis."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from core.stores import Store, open_store
from tests.support.store_backends import fresh_store_url, redis_server

BACKENDS = ["memory", "sqlite", "dynamodb", "redis"]
# The backends two instances can share (memory is one process's own).
SHARED_BACKENDS = ["sqlite", "dynamodb", "redis"]


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty store of each backend kind."""
    with fresh_store_url(
        request.param, tmp_path, lambda: request.getfixturevalue("redis_url")
    ) as url:
        yield url


@pytest.fixture(params=SHARED_BACKENDS)
def shared_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh store two store objects (or two proxy instances) can share."""
    with fresh_store_url(
        request.param, tmp_path, lambda: request.getfixturevalue("redis_url")
    ) as url:
        yield url


@pytest.fixture
def store(store_url: str) -> Store:
    return open_store(store_url)


def every_backend(metafunc: pytest.Metafunc) -> None:
    """Every test that takes a store runs once per backend, unless it names its own."""
    chosen = any(
        "store_url" in str(marker.args[0])
        for marker in metafunc.definition.iter_markers("parametrize")
    )
    if "store_url" in metafunc.fixturenames and not chosen:
        metafunc.parametrize("store_url", BACKENDS, indirect=True)
