"""A token that expires while its lookup is cached is refused at once: the cache keeps the
record, not the verdict, and expiry is checked on every request."""

from __future__ import annotations

import time

import httpx

from core.access.tokens import create_token
from core.app import create_app
from core.config import load_settings
from core.stores import open_store
from tests.support.servers import RunningServer, proxy_env, serve_in_thread


def test_an_expired_token_is_refused_while_its_lookup_is_still_cached(
    mock_upstream: RunningServer, tmp_path
) -> None:
    store_url = f"sqlite:///{tmp_path}/tokens.db"
    # A cache far longer than the token's life: the second request must take the cached path.
    env = proxy_env(mock_upstream.url, TOKEN_STORE=store_url, TOKEN_CACHE_SECONDS="5")
    with serve_in_thread(create_app(load_settings(env))) as proxy:
        expires_at = time.time() + 1.5  # well inside the 5 s cache
        token, record = create_token(open_store(store_url), "short-lived", expires_at=expires_at)
        url = f"{proxy.url}/v1/chat/completions"
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        headers = {"authorization": f"Bearer {token}"}
        assert httpx.post(url, json=body, headers=headers, timeout=10).status_code == 200
        # Waiting for the wall clock to pass the expiry, not for the proxy to settle.
        while time.time() <= expires_at + 0.05:
            time.sleep(expires_at + 0.05 - time.time())
        reply = httpx.post(url, json=body, headers=headers, timeout=10)
        assert reply.status_code == 401
        assert f"{record.id} has expired" in reply.json()["error"]["message"]
