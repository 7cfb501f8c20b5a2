"""The dashboard app in-process, and a client that carries the admin token as a bearer."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from core.app import create_app
from core.config import load_settings
from tests.support.admin import ADMIN_TOKEN, admin_env, client_for


@pytest.fixture
def app() -> Any:
    return create_app(load_settings(admin_env()))


@pytest.fixture
async def bearer(app: Any) -> Iterator[httpx.AsyncClient]:
    async with client_for(app) as client:
        client.headers["authorization"] = f"Bearer {ADMIN_TOKEN}"
        yield client
