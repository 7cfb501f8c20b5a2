"""Each test here that takes a store runs once per backend (tests/support/store_fixtures.py)."""

from __future__ import annotations

from tests.support.store_fixtures import (  # noqa: F401 (fixtures)
    every_backend,
    redis_url,
    shared_store_url,
    store,
    store_url,
)

pytest_generate_tests = every_backend
