"""The dashboard's Requests page in Debian's Chromium: the latest requests from the ledger's
request log (callers through the real SDKs, a refusal among them), filtered by caller,
model and status, refreshing live; latency and first-byte percentiles beside the usage
charts. ADMIN_SCREENSHOTS=docs/screenshots refreshes docs/screenshots/requests.png."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from playwright.sync_api import expect

from core.access.tokens import create_token
from core.app import create_app
from core.config import load_settings
from tests.browser.test_admin_dashboard import chromium, dashboard_env, open_page, sign_in  # noqa: F401
from tests.support.servers import RunningServer, serve_in_thread


@pytest.fixture
def traffic(mock_upstream: RunningServer) -> Iterator[tuple[RunningServer, dict[str, str]]]:
    app = create_app(load_settings(dashboard_env(mock_upstream)))
    proxy = app.proxy  # type: ignore[attr-defined]
    tokens = {
        label: create_token(proxy.token_store, label)[0] for label in ("mobile-app", "web-chat")
    }
    with serve_in_thread(app) as server:
        yield server, tokens


def send_traffic(base: str, tokens: dict[str, str]) -> None:
    mobile = openai.OpenAI(
        base_url=f"{base}/openai/v1", api_key=tokens["mobile-app"], max_retries=0
    )
    for index in range(3):
        stream = mobile.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": f"hi {index}"}], stream=True
        )
        for _ in stream:
            pass
    web = anthropic.Anthropic(
        base_url=f"{base}/anthropic", api_key=tokens["web-chat"], max_retries=0
    )
    web.messages.create(
        model="claude-haiku-test", max_tokens=50, messages=[{"role": "user", "content": "hello"}]
    )
    refused = httpx.post(
        f"{base}/openai/v1/chat/completions",
        headers={"authorization": "Bearer fake-not-a-token-0000"},
        json={"model": "gpt-4o-mini", "messages": []},
    )
    assert refused.status_code == 401


def rows(tab: Any) -> list[list[str]]:
    return [
        row.locator("td").all_text_contents() for row in tab.locator("#request-list tbody tr").all()
    ]


def wait_rows(tab: Any, count: int) -> None:
    # The page's CSP allows no eval, so the wait is Playwright's own, not a JS predicate.
    expect(tab.locator("#request-list tbody tr")).to_have_count(count, timeout=10_000)


def test_requests_page_lists_filters_and_refreshes(
    chromium: Any,  # noqa: F811
    traffic: tuple[RunningServer, dict[str, str]],
) -> None:
    server, tokens = traffic
    base = server.url
    send_traffic(base, tokens)
    context = chromium.new_context(viewport={"width": 1280, "height": 860}, device_scale_factor=1)
    tab = context.new_page()
    sign_in(tab, base)
    tab.wait_for_selector("body[data-ready=tokens]")
    open_page(tab, base, "requests")
    wait_rows(tab, 5)  # the ledger writes in the background: waited for, bounded
    listed = rows(tab)
    # Newest first: the refusal, then the Anthropic call, then three streams.
    assert listed[0][4].startswith("401 ") and listed[0][1] == "\u2013"  # no caller: a dash
    assert listed[1][1:4] == ["web-chat", "anthropic", "claude-haiku-test"]
    # "200" alone: a stream the SDK hung up on after [DONE] is complete, not a disconnect.
    assert all(row[1:5] == ["mobile-app", "openai", "gpt-4o-mini", "200"] for row in listed[2:]), (
        listed
    )
    assert all(row[6].endswith("ms") or row[6].endswith(" s") for row in listed[2:])  # first byte
    assert all("/" in row[7] for row in listed[1:])  # tokens in / out
    figures = tab.text_content("#request-percentiles")
    assert "latency p50 / p90 / p99" in figures and "5" in figures

    tab.select_option("#f-caller", "web-chat")
    wait_rows(tab, 1)
    assert rows(tab)[0][1] == "web-chat"
    assert "caller=web-chat" in tab.url
    tab.select_option("#f-caller", "")
    tab.select_option("#f-status", "4xx")
    wait_rows(tab, 1)
    assert rows(tab)[0][4].startswith("401")
    tab.select_option("#f-status", "")
    tab.select_option("#f-model", "gpt-4o-mini")
    wait_rows(tab, 3)
    tab.select_option("#f-model", "")
    wait_rows(tab, 5)

    # Live: a new request shows up without a reload.
    openai.OpenAI(
        base_url=f"{base}/openai/v1", api_key=tokens["web-chat"], max_retries=0
    ).chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "one more"}])
    wait_rows(tab, 6)
    assert rows(tab)[0][1:4] == ["web-chat", "openai", "gpt-4o"]

    # The usage page shows the same percentiles beside its charts.
    open_page(tab, base, "usage")
    assert "first byte p50 / p90 / p99" in tab.text_content("#usage-percentiles")

    target = os.environ.get("ADMIN_SCREENSHOTS")
    folder = Path(target) if target else Path(tempfile.mkdtemp(prefix="admin-shots-"))
    folder.mkdir(parents=True, exist_ok=True)
    open_page(tab, base, "requests")
    wait_rows(tab, 6)
    tab.screenshot(path=str(folder / "requests.png"), full_page=True)
    context.close()
    assert (folder / "requests.png").stat().st_size > 10_000
