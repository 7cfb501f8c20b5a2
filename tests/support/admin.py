"""The dashboard's settings and sign-in for tests (tests/admin, tests/browser)."""

from __future__ import annotations

from typing import Any

import httpx

from tests.support.servers import proxy_env

ADMIN_TOKEN = "admin-token-for-tests-0123456789abcdef"
OPENAI_KEY = "fake-openai-key-last-WXYZ"


def admin_env(upstream: str = "http://127.0.0.1:9", **extra: str) -> dict[str, str]:
    settings = {
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "TOKEN_STORE": "memory://",
        "TOKEN_CACHE_SECONDS": "0.3",
        "OPENAI_API_KEY": OPENAI_KEY,
        "OPENAI_UPSTREAM": upstream,
    }
    return proxy_env(upstream, **{**settings, **extra})


def client_for(app: Any, ip: str = "127.0.0.1", host: str = "127.0.0.1:8787") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(ip, 50000))
    return httpx.AsyncClient(transport=transport, base_url=f"http://{host}")


async def sign_in(client: httpx.AsyncClient, token: str = ADMIN_TOKEN) -> httpx.Response:
    return await client.post(
        "/admin/sign-in",
        content=f"token={token}",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
