from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from core.stores import Store, open_store
from tests.tokens.backends import fresh_store_url, redis_server

BACKENDS = ["memory", "sqlite", "dynamodb", "redis"]


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


@pytest.fixture
def store(store_url: str) -> Store:
    return open_store(store_url)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test that takes a store runs once per backend."""
    chosen = any(
        "store_url" in str(marker.args[0])
        for marker in metafunc.definition.iter_markers("parametrize")
    )
    if "store_url" in metafunc.fixturenames and not chosen:
        metafunc.parametrize("store_url", BACKENDS, indirect=True)
