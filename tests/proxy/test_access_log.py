"""The access log: one JSON line per request, useful figures, no secrets."""

from __future__ import annotations

import json
import logging
import time

import httpx
import pytest

from core.app import create_app
from core.config import load_settings
from tests.support.servers import (
    FAKE_TOKEN,
    FAKE_UPSTREAM_KEY,
    RunningServer,
    proxy_env,
    serve_in_thread,
)


@pytest.fixture()
def logged_proxy(mock_upstream: RunningServer):
    env = proxy_env(mock_upstream.url, ACCESS_LOG="true")
    with serve_in_thread(create_app(load_settings(env))) as server:
        yield server


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "llm_proxy.access"]


def test_one_line_per_request_with_timings_and_no_secrets(
    logged_proxy: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    logger = logging.getLogger("llm_proxy")
    logger.addHandler(caplog.handler)
    with caplog.at_level(logging.INFO, logger="llm_proxy"):
        try:
            ok = httpx.post(
                f"{logged_proxy.url}/v1/chat/completions?key={FAKE_TOKEN}",
                content=b'{"model":"m","stream":true,"messages":[]}',
                headers={"content-type": "application/json"},
            )
            denied = httpx.get(f"{logged_proxy.url}/v1/models?key=wrong-token-value-123456")
            # The line is written once the response is complete, which the client may
            # see a moment before the server thread gets there.
            deadline = time.monotonic() + 5
            while len(access_lines(caplog)) < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
        finally:
            logger.removeHandler(caplog.handler)
    assert (ok.status_code, denied.status_code) == (200, 401)
    lines = access_lines(caplog)
    assert len(lines) == 2
    first, second = lines
    assert first["path"] == "/v1/chat/completions"
    assert first["status"] == 200 and first["upstream_status"] == 200
    assert first["route"] == "default"
    assert first["bytes_out"] == len(ok.content)
    assert first["upstream_ms"] > 0 and first["first_byte_ms"] >= first["upstream_ms"]
    assert first["request_id"] == ok.headers["x-proxy-request-id"]
    assert (second["status"], second["error"]) == (401, "invalid_api_key")
    text = caplog.text
    for secret in (FAKE_TOKEN, FAKE_UPSTREAM_KEY, "wrong-token-value-123456", "key="):
        assert secret not in text


@pytest.mark.parametrize(
    ("path", "headers", "shape_of"),
    [
        ("/v1/chat/completions", {"authorization": f"Bearer {FAKE_TOKEN}"}, "openai"),
        ("/anthropic/v1/messages", {"x-api-key": FAKE_TOKEN}, "anthropic"),
        ("/gemini/v1beta/models/g:generateContent", {"x-goog-api-key": FAKE_TOKEN}, "gemini"),
    ],
)
async def test_the_last_resort_answer_speaks_the_routed_protocol(
    monkeypatch: pytest.MonkeyPatch, path: str, headers: dict[str, str], shape_of: str
) -> None:
    """An exception no layer expected (finding 7: an OverflowError in the budget) is a 500
    in the shape of the provider the request was routed to, not always OpenAI's."""

    async def fails(*args: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr("core.proxy.endpoint.ProxyEndpoint.handle", fails)
    reply = await _post_to_three_routes(path, headers)
    assert reply.status_code == 500
    error = reply.json()
    if shape_of == "anthropic":
        assert (error["type"], error["error"]["type"]) == ("error", "api_error")
    elif shape_of == "gemini":
        assert error["error"]["status"] == "INTERNAL"
    else:
        assert error["error"]["code"] == "proxy_error"
    assert "unexpectedly" in reply.text


@pytest.mark.parametrize(
    ("path", "headers", "shape_of"),
    [
        ("/anthropic/v1/messages", {"x-api-key": FAKE_TOKEN}, "anthropic"),
        ("/gemini/v1beta/models/g:generateContent", {"x-goog-api-key": FAKE_TOKEN}, "gemini"),
    ],
)
async def test_a_fault_before_routing_answers_in_the_shape_the_path_names(
    monkeypatch: pytest.MonkeyPatch, path: str, headers: dict[str, str], shape_of: str
) -> None:
    """A fault before the route is chosen (none is known; this one is made) took OpenAI's
    shape on every path: an Anthropic or Gemini SDK then read `500 None.`. The path names
    the protocol as it does for the server's own refusals (core/providers.py)."""

    def fails(*args: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr("core.proxy.endpoint.ProxyEndpoint.route", fails)
    reply = await _post_to_three_routes(path, headers)
    assert reply.status_code == 500
    error = reply.json()
    if shape_of == "anthropic":
        assert (error["type"], error["error"]["type"]) == ("error", "api_error")
    else:
        assert error["error"]["status"] == "INTERNAL"
    assert "unexpectedly" in reply.text


async def _post_to_three_routes(path: str, headers: dict[str, str]) -> httpx.Response:
    """A POST of `{}` to a proxy with OpenAI's, Anthropic's and Gemini's routes on."""
    env = proxy_env(
        "http://127.0.0.1:9",
        ANTHROPIC_API_KEY="sk-fake-anthropic-key-for-tests",
        GEMINI_API_KEY="sk-fake-gemini-key-for-tests",
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(load_settings(env))),
        base_url="http://proxy.test",
    ) as proxy:
        return await proxy.post(path, json={}, headers=headers)
