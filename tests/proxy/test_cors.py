"""CORS as a browser reads it: the preflight's every header, the reply's Vary, and the
dashboard left out whatever ALLOWED_ORIGINS says. (Lookalike origins:
tests/security/test_lookalikes.py.)"""

from __future__ import annotations

import httpx
import pytest

from core.app import create_app
from core.config import load_settings
from tests.support.servers import FAKE_TOKEN, RunningServer, proxy_env, serve_in_thread

PAGE = "http://app.example.test"
CHAT = {"model": "mock-model", "messages": [{"role": "user", "content": "hi"}]}


def test_the_preflight_allows_the_methods_and_the_headers_the_sdk_asks_for(
    proxy: RunningServer,
) -> None:
    reply = httpx.options(
        f"{proxy.url}/v1/chat/completions",
        headers={
            "origin": PAGE,
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization, x-stainless-os, content-type",
        },
    )
    assert reply.status_code == 204
    assert reply.content == b""
    assert reply.headers["content-length"] == "0"
    assert reply.headers["access-control-allow-origin"] == PAGE
    methods = {m.strip() for m in reply.headers["access-control-allow-methods"].split(",")}
    assert {"GET", "POST", "OPTIONS", "DELETE"} <= methods
    assert reply.headers["access-control-allow-headers"] == (
        "authorization, x-stainless-os, content-type"
    )
    assert reply.headers["access-control-max-age"] == "600"
    assert reply.headers["vary"] == "Origin"


def test_a_preflight_without_requested_headers_names_none(proxy: RunningServer) -> None:
    reply = httpx.options(
        f"{proxy.url}/v1/chat/completions",
        headers={"origin": PAGE, "access-control-request-method": "POST"},
    )
    assert reply.status_code == 204
    assert "access-control-allow-headers" not in reply.headers


def test_a_refused_preflight_is_a_json_error_that_varies_by_origin(proxy: RunningServer) -> None:
    reply = httpx.options(
        f"{proxy.url}/v1/chat/completions",
        headers={"origin": "https://elsewhere.example", "access-control-request-method": "POST"},
    )
    assert reply.status_code == 403
    assert reply.headers["vary"] == "Origin"
    error = reply.json()["error"]
    assert "ALLOWED_ORIGINS" in error["message"]
    assert error["type"]  # OpenAI's shape: the default route's


def test_an_options_request_that_is_no_preflight_is_not_answered_as_one(
    proxy: RunningServer,
) -> None:
    # No Access-Control-Request-Method: an ordinary OPTIONS, which passes to the routes.
    reply = httpx.options(f"{proxy.url}/v1/chat/completions", headers={"origin": PAGE})
    assert "access-control-allow-methods" not in reply.headers


def test_every_reply_to_a_page_varies_by_origin(proxy: RunningServer) -> None:
    for origin in (PAGE, "https://elsewhere.example"):
        reply = httpx.post(
            f"{proxy.url}/v1/chat/completions",
            json=CHAT,
            headers={"authorization": f"Bearer {FAKE_TOKEN}", "origin": origin},
        )
        assert reply.status_code == 200
        assert "Origin" in reply.headers.get_list("vary")


@pytest.mark.parametrize("path", ["/admin", "/admin/", "/admin/api/status"])
def test_the_dashboard_is_never_open_cross_origin(proxy: RunningServer, path: str) -> None:
    preflight = httpx.options(
        f"{proxy.url}{path}", headers={"origin": PAGE, "access-control-request-method": "POST"}
    )
    assert "access-control-allow-origin" not in preflight.headers
    reply = httpx.get(f"{proxy.url}{path}", headers={"origin": PAGE})
    assert "access-control-allow-origin" not in reply.headers


def test_a_path_that_only_starts_like_the_dashboard_gets_cors(proxy: RunningServer) -> None:
    reply = httpx.options(
        f"{proxy.url}/administrator",
        headers={"origin": PAGE, "access-control-request-method": "GET"},
    )
    assert reply.headers.get("access-control-allow-origin") == PAGE


def test_a_page_may_read_the_rate_limit_and_request_id_headers(
    mock_upstream: RunningServer,
) -> None:
    # Its own proxy, built inside the test: mutation testing maps the middleware's
    # construction to this test, not only to whichever test first built a shared one.
    env = proxy_env(mock_upstream.url, RATE_LIMIT_REQUESTS="100", RATE_LIMIT_TOKENS="100000")
    with serve_in_thread(create_app(load_settings(env))) as own:
        reply = httpx.post(
            f"{own.url}/v1/chat/completions",
            json=CHAT,
            headers={"authorization": f"Bearer {FAKE_TOKEN}", "origin": PAGE},
        )
    exposed = [h.strip() for h in reply.headers["access-control-expose-headers"].split(",")]
    for name in ("x-proxy-request-id", "retry-after", "x-ratelimit-remaining-tokens"):
        assert name in exposed
    # And the page can indeed read them: each is on this reply.
    assert "x-ratelimit-remaining-tokens" in reply.headers


def test_a_server_side_call_without_an_origin_passes_untouched(proxy: RunningServer) -> None:
    # Every SDK call from a server: the body is read, the reply is whole, no CORS header.
    reply = httpx.post(
        f"{proxy.url}/v1/chat/completions",
        json=CHAT,
        headers={"authorization": f"Bearer {FAKE_TOKEN}"},
    )
    assert reply.status_code == 200
    assert reply.json()["object"] == "chat.completion"
    assert "vary" not in reply.headers
    assert not any(name.startswith("access-control-") for name in reply.headers)


def test_a_reply_to_a_page_keeps_its_own_headers(proxy: RunningServer) -> None:
    reply = httpx.post(
        f"{proxy.url}/v1/chat/completions",
        json=CHAT,
        headers={"authorization": f"Bearer {FAKE_TOKEN}", "origin": PAGE},
    )
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("application/json")
    assert "x-proxy-request-id" in reply.headers
    assert reply.json()["object"] == "chat.completion"
    assert reply.headers["access-control-allow-origin"] == PAGE


async def test_the_last_resort_answer_is_readable_by_an_allowed_page_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An exception no layer expected is answered by the access log's guard, outside the
    CORS layer: the page must still be able to read that 500 (and a foreign page not)."""

    async def fails(*args: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr("core.proxy.endpoint.ProxyEndpoint.handle", fails)
    app = create_app(load_settings(proxy_env("http://127.0.0.1:9")))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://proxy.test"
    ) as client:
        for origin, readable in ((PAGE, True), ("https://elsewhere.example", False)):
            reply = await client.post(
                "/v1/chat/completions",
                json=CHAT,
                headers={"authorization": f"Bearer {FAKE_TOKEN}", "origin": origin},
            )
            assert reply.status_code == 500
            assert "unexpectedly" in reply.text
            assert "Origin" in reply.headers.get_list("vary")
            if readable:
                assert reply.headers["access-control-allow-origin"] == PAGE
                assert "x-proxy-request-id" in reply.headers["access-control-expose-headers"]
            else:
                assert "access-control-allow-origin" not in reply.headers
