"""The example chat page in a real headless Chromium (Debian's package, driven by
Playwright): the page on one loopback origin, the proxy on another, the mock upstream
streaming slowly behind it. What a person at the page would see."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from core.app import create_app
from core.config import load_settings
from core.devtools.demo_page import PageApp
from core.devtools.mock_upstream import MockOptions, MockUpstream
from core.types import ASGIApp, Message, Receive, Scope, Send
from tests.support.chromium import chromium_context
from tests.support.servers import (
    FAKE_TOKEN,
    LONG_WINDOW,
    RunningServer,
    proxy_env,
    serve_in_thread,
    upstream_requests,
)

CHUNKS = 8
DELAY_MS = 150
STREAMED_TEXT = "Hello from the mock upstream, streamed token"


@dataclass
class Recorder:
    """Wraps the proxy to note each request's method, origin and status, as the browser
    sent them (Playwright does not report CORS preflights itself)."""

    app: ASGIApp
    seen: list[dict[str, Any]] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        entry = {
            "method": scope["method"],
            "path": scope["path"],
            "origin": headers.get(b"origin", b"").decode(),
            "status": None,
        }
        self.seen.append(entry)

        async def noting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                entry["status"] = message["status"]
            await send(message)

        await self.app(scope, receive, noting_send)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium_context() as context:
        yield context


@pytest.fixture(scope="module")
def slow_upstream() -> Iterator[RunningServer]:
    with serve_in_thread(MockUpstream(MockOptions(chunks=CHUNKS, delay_ms=DELAY_MS))) as server:
        yield server


@pytest.fixture(scope="module")
def page_server() -> Iterator[RunningServer]:
    with serve_in_thread(PageApp()) as server:
        yield server


@contextlib.contextmanager
def proxy_for(
    upstream: RunningServer, page: RunningServer, **extra: str
) -> Iterator[tuple[str, Recorder]]:
    env = proxy_env(upstream.url, ALLOWED_ORIGINS=f"http://127.0.0.1:{page.port}", **extra)
    recorder = Recorder(create_app(load_settings(env)))
    with serve_in_thread(recorder) as server:
        yield server.url, recorder


def open_page(browser: Any, page_origin: str, proxy_url: str, token: str = FAKE_TOKEN) -> Any:
    tab = browser.new_page()
    tab.goto(f"{page_origin}/?proxy={proxy_url}#token={token}")
    return tab


def say(tab: Any, text: str) -> None:
    tab.fill("#prompt", text)
    tab.click("#send")


WATCH_ASSISTANT = """() => {
  window.__growth = [];
  new MutationObserver(() => {
    const bubbles = document.querySelectorAll('.assistant');
    const last = bubbles[bubbles.length - 1];
    if (last) window.__growth.push([performance.now(), last.textContent.length]);
  }).observe(document.getElementById('log'), {subtree: true, childList: true, characterData: true});
}"""


def test_tokens_appear_one_by_one_across_origins(
    browser: Any, slow_upstream: RunningServer, page_server: RunningServer
) -> None:
    with proxy_for(slow_upstream, page_server) as (proxy_url, recorder):
        tab = open_page(browser, f"http://127.0.0.1:{page_server.port}", proxy_url)
        tab.evaluate(WATCH_ASSISTANT)
        say(tab, "hello")
        tab.wait_for_selector(".assistant[data-state=done]", timeout=15_000)
        assert tab.inner_text(".assistant") == STREAMED_TEXT
        assert tab.inner_text("#status") == ""

        growth = tab.evaluate("window.__growth")
        lengths = [length for _, length in growth if length > 0]
        times = [t for t, length in growth if length > 0]
        # Eight chunks 150 ms apart: the text grew in many steps, spread over time.
        assert len(set(lengths)) >= CHUNKS - 2, growth
        assert lengths == sorted(lengths)
        spread_ms = times[-1] - times[0]
        assert spread_ms >= 0.5 * (CHUNKS - 1) * DELAY_MS, growth

        # The browser asked first (Authorization + JSON make it a preflighted request),
        # the proxy said yes, then the real POST went through.
        chat = [e for e in recorder.seen if e["path"] != "/proxy/usage"]
        methods = [(e["method"], e["status"]) for e in chat]
        assert methods[:2] == [("OPTIONS", 204), ("POST", 200)], recorder.seen
        assert chat[0]["origin"] == f"http://127.0.0.1:{page_server.port}"
        tab.close()


def test_a_page_on_another_origin_is_refused(
    browser: Any, slow_upstream: RunningServer, page_server: RunningServer
) -> None:
    with proxy_for(slow_upstream, page_server) as (proxy_url, recorder):
        before = len(upstream_requests(slow_upstream))
        # Same server, other origin: localhost is not 127.0.0.1 to a browser.
        tab = open_page(browser, f"http://localhost:{page_server.port}", proxy_url)
        say(tab, "hello")
        tab.wait_for_selector("#status.error", timeout=10_000)
        assert "ALLOWED_ORIGINS" in tab.inner_text("#status")
        assert tab.query_selector(".assistant") is None
        chat = [e for e in recorder.seen if e["path"] != "/proxy/usage"]
        assert [(e["method"], e["status"]) for e in chat] == [("OPTIONS", 403)]
        assert len(upstream_requests(slow_upstream)) == before  # nothing was spent
        tab.close()


def test_a_rate_limit_is_shown_to_the_user(
    browser: Any, slow_upstream: RunningServer, page_server: RunningServer
) -> None:
    with proxy_for(
        slow_upstream, page_server, RATE_LIMIT_REQUESTS="1", RATE_LIMIT_WINDOW=LONG_WINDOW
    ) as (proxy_url, _):
        tab = open_page(browser, f"http://127.0.0.1:{page_server.port}", proxy_url)
        say(tab, "first")
        tab.wait_for_selector(".assistant[data-state=done]", timeout=15_000)
        say(tab, "second")
        tab.wait_for_selector("#status.error", timeout=10_000)
        status = tab.inner_text("#status")
        assert status.startswith("Too many requests (429): Rate limit reached")
        # Retry-After is readable by the page (exposed by CORS) and shown.
        assert "Retry after" in status
        assert len(tab.query_selector_all(".assistant")) == 1
        tab.close()


def test_a_wrong_token_is_explained(
    browser: Any, slow_upstream: RunningServer, page_server: RunningServer
) -> None:
    with proxy_for(slow_upstream, page_server) as (proxy_url, _):
        tab = open_page(
            browser, f"http://127.0.0.1:{page_server.port}", proxy_url, token="not-the-token-at-all"
        )
        say(tab, "hello")
        tab.wait_for_selector("#status.error", timeout=10_000)
        assert tab.inner_text("#status") == "Not signed in (401): The proxy token is not valid."
        tab.close()


def test_the_page_shows_the_budget_left(
    browser: Any, slow_upstream: RunningServer, page_server: RunningServer
) -> None:
    prices = '{"mock-*": {"input": 1000, "output": 4000}}'
    with proxy_for(slow_upstream, page_server, BUDGET_PER_CALLER_USD="1", MODEL_PRICES=prices) as (
        proxy_url,
        _,
    ):
        tab = open_page(browser, f"http://127.0.0.1:{page_server.port}", proxy_url)
        tab.wait_for_selector("#quota:not([hidden])", timeout=10_000)
        assert tab.inner_text("#quota").startswith("Budget left today: $1.0000 of $1")
        say(tab, "hello")
        tab.wait_for_selector(".assistant[data-state=done]", timeout=15_000)
        # The mock reports 1 prompt token ("hello") and 8 output tokens: $0.001 + $0.032.
        tab.wait_for_function(
            "document.getElementById('quota').textContent.includes('$0.9670')", timeout=10_000
        )
        assert "(1 tokens in, 8 out)" in tab.inner_text("#quota")
        tab.close()
