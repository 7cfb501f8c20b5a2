from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.tokens.backends import redis_server


@pytest.fixture(scope="session")
def limits_redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("usage-redis")) as url:
        yield url
