"""No status but a success is kept: every 4xx (a refusal may be about this caller, this
moment or this key) and every 5xx goes to the upstream again, and a later success is a miss."""

from __future__ import annotations

import httpx
import pytest

from tests.cache.conftest import CacheStack
from tests.cache.test_cache_sdks import fresh_messages, upstream_calls
from tests.support.servers import reset_upstream


def _chat(stack: CacheStack, messages: object, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{stack.proxy.url}/openai/v1/chat/completions",
        json={"model": "gpt-test", "messages": messages, "temperature": 0},
        headers={"authorization": f"Bearer {stack.token}", **headers},
        timeout=20,
    )


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422, 429, 500, 502, 503])
def test_an_upstream_refusal_or_error_is_never_kept(stack: CacheStack, status: int) -> None:
    reset_upstream(stack.upstream)
    messages = fresh_messages()
    for _ in range(2):
        reply = _chat(stack, messages, **{"x-mock-status": str(status)})
        assert reply.status_code == status
        assert reply.headers.get("x-proxy-cache") != "hit"
    success = _chat(stack, messages)
    assert success.status_code == 200
    assert success.headers["x-proxy-cache"] == "miss"
    assert upstream_calls(stack) == 3
    # The positive twin: the success is kept.
    assert _chat(stack, messages).headers["x-proxy-cache"] == "hit"
    assert upstream_calls(stack) == 3
