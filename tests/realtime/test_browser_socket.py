"""A browser's own WebSocket (headless Chromium, Debian's package, driven by Playwright)
through the proxy to the fake Realtime upstream, with the credential in OpenAI's browser
subprotocol `openai-insecure-api-key.<token>`, as the openai JS SDK sends it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from core.types import Receive, Scope, Send
from tests.support.chromium import chromium_context
from tests.support.fake_realtime import FakeRealtime
from tests.support.realtime import ProxyFactory
from tests.support.servers import FAKE_TOKEN, FAKE_UPSTREAM_KEY, RunningServer, serve_in_thread

# Opens the socket, asks for one response, and reports what the page saw.
SESSION_SCRIPT = """async ([url, token]) => {
  const socket = new WebSocket(url, ["realtime", "openai-insecure-api-key." + token]);
  const events = [];
  return await new Promise((resolve) => {
    socket.onmessage = (message) => {
      const event = JSON.parse(message.data);
      events.push(event.type);
      if (event.type === "session.created") socket.send(JSON.stringify({type: "response.create"}));
      if (event.type === "response.done") {
        resolve({protocol: socket.protocol, events, usage: event.response.usage});
        socket.close(1000);
      }
    };
    socket.onclose = (closed) => resolve({closed: closed.code, events});
  });
}"""


async def blank_page(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    body = b"<!doctype html><title>realtime</title>"
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/html")]}
    )
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def page_origin() -> Iterator[str]:
    with serve_in_thread(blank_page) as server:
        yield f"http://127.0.0.1:{server.port}"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium_context() as context:
        yield context


def run_session(browser: Any, page_origin: str, proxy: RunningServer, token: str) -> Any:
    tab = browser.new_page()
    try:
        tab.goto(page_origin)
        url = f"ws://127.0.0.1:{proxy.port}/v1/realtime?model=gpt-realtime"
        return tab.evaluate(SESSION_SCRIPT, [url, token])
    finally:
        tab.close()


def test_a_browser_session_with_the_subprotocol_credential(
    browser: Any, page_origin: str, start_proxy: ProxyFactory, upstream: FakeRealtime
) -> None:
    with start_proxy(ALLOWED_ORIGINS=page_origin) as proxy:
        seen = run_session(browser, page_origin, proxy, FAKE_TOKEN)
    assert seen["protocol"] == "realtime"
    assert seen["events"] == ["session.created", "response.created", "response.done"]
    assert seen["usage"]["input_tokens"] == 50
    session = upstream.sessions[-1]
    # The credential subprotocol stays at the proxy; `realtime` goes on, with the real key.
    assert session["subprotocols"] == ["realtime"]
    assert session["headers"]["authorization"] == f"Bearer {FAKE_UPSTREAM_KEY}"
    assert FAKE_TOKEN not in str(session)


def test_a_wrong_token_or_origin_never_opens(
    browser: Any, page_origin: str, start_proxy: ProxyFactory, upstream: FakeRealtime
) -> None:
    with start_proxy(ALLOWED_ORIGINS=page_origin) as proxy:
        assert run_session(browser, page_origin, proxy, "wrong-token-0123456789")["closed"] == 1006
    with start_proxy(ALLOWED_ORIGINS="http://elsewhere.example") as proxy:
        assert run_session(browser, page_origin, proxy, FAKE_TOKEN)["closed"] == 1006
    assert upstream.sessions == []
