"""Lookalike inputs beside every allowlist's negative test: CORS origins, anonymous-mode
origins, providers' route prefixes. A comparison loosened to a prefix, a suffix, a case fold
or a decoding lets one of them through, and a test here fails. (Models in scopes:
tests/access/test_token_scope_lookalikes.py.)"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from core.app import create_app
from core.config import load_settings
from tests.support.lookalikes import name_lookalikes, origin_lookalikes
from tests.support.servers import (
    FAKE_TOKEN,
    RunningServer,
    proxy_env,
    reset_upstream,
    serve_in_thread,
    upstream_requests,
)

PAGE = "http://app.example.test"
CHAT = {"model": "mock-model", "messages": [{"role": "user", "content": "hi"}]}
AUTH = {"authorization": f"Bearer {FAKE_TOKEN}"}
ORIGINS = origin_lookalikes(PAGE)


@pytest.fixture(scope="module")
def anonymous_proxy(mock_upstream: RunningServer) -> Iterator[RunningServer]:
    env = proxy_env(
        mock_upstream.url,
        PROXY_ACCESS_TOKEN="",
        ALLOW_ANONYMOUS="true",
        ALLOWED_ORIGINS=PAGE,
        RATE_LIMIT_REQUESTS="10000",
    )
    with serve_in_thread(create_app(load_settings(env))) as proxy:
        yield proxy


def test_the_allowed_origin_itself_passes_everywhere(
    proxy: RunningServer, anonymous_proxy: RunningServer
) -> None:
    # The positive twin of the tests below: they fail for the lookalike, not the setup.
    preflight = httpx.options(
        f"{proxy.url}/v1/chat/completions",
        headers={"origin": PAGE, "access-control-request-method": "POST"},
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == PAGE
    reply = httpx.post(
        f"{proxy.url}/v1/chat/completions", json=CHAT, headers={**AUTH, "origin": PAGE}
    )
    assert reply.headers["access-control-allow-origin"] == PAGE
    anonymous = httpx.post(
        f"{anonymous_proxy.url}/v1/chat/completions", json=CHAT, headers={"origin": PAGE}
    )
    assert anonymous.status_code == 200


@pytest.mark.parametrize(("change", "origin"), ORIGINS, ids=[c for c, _ in ORIGINS])
def test_a_lookalike_origin_gets_no_preflight(
    proxy: RunningServer, change: str, origin: str
) -> None:
    reply = httpx.options(
        f"{proxy.url}/v1/chat/completions",
        headers={"origin": origin, "access-control-request-method": "POST"},
    )
    assert reply.status_code == 403, change
    assert "access-control-allow-origin" not in reply.headers


@pytest.mark.parametrize(("change", "origin"), ORIGINS, ids=[c for c, _ in ORIGINS])
def test_a_lookalike_origin_cannot_read_a_reply(
    proxy: RunningServer, change: str, origin: str
) -> None:
    reply = httpx.post(
        f"{proxy.url}/v1/chat/completions", json=CHAT, headers={**AUTH, "origin": origin}
    )
    assert "access-control-allow-origin" not in reply.headers, change
    assert "access-control-expose-headers" not in reply.headers


@pytest.mark.parametrize(("change", "origin"), ORIGINS, ids=[c for c, _ in ORIGINS])
def test_a_lookalike_origin_is_no_anonymous_caller(
    anonymous_proxy: RunningServer, mock_upstream: RunningServer, change: str, origin: str
) -> None:
    reset_upstream(mock_upstream)
    reply = httpx.post(
        f"{anonymous_proxy.url}/v1/chat/completions", json=CHAT, headers={"origin": origin}
    )
    assert reply.status_code == 403, change
    assert upstream_requests(mock_upstream) == []


ROUTE_NAMES = [(c, n) for c, n in name_lookalikes("v1") if "upper case" not in c] + [
    ("path prefix without its slash", "v1chat")
]


@pytest.mark.parametrize(("change", "segment"), ROUTE_NAMES, ids=[c for c, _ in ROUTE_NAMES])
def test_a_lookalike_route_prefix_reaches_no_upstream(
    proxy: RunningServer, mock_upstream: RunningServer, change: str, segment: str
) -> None:
    reset_upstream(mock_upstream)
    reply = httpx.post(f"{proxy.url}/{segment}/chat/completions", json=CHAT, headers=AUTH)
    assert reply.status_code == 404, (change, reply.status_code)
    assert upstream_requests(mock_upstream) == []


def test_an_explicit_star_lets_any_origin_read_but_names_none(mock_upstream: RunningServer) -> None:
    env = proxy_env(mock_upstream.url, ALLOWED_ORIGINS="*")
    with serve_in_thread(create_app(load_settings(env))) as star:
        for _, origin in ORIGINS[:3]:
            preflight = httpx.options(
                f"{star.url}/v1/chat/completions",
                headers={"origin": origin, "access-control-request-method": "POST"},
            )
            assert preflight.status_code == 204
            assert preflight.headers["access-control-allow-origin"] == "*"
            reply = httpx.post(
                f"{star.url}/v1/chat/completions", json=CHAT, headers={**AUTH, "origin": origin}
            )
            assert reply.headers["access-control-allow-origin"] == "*"
