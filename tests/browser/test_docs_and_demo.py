"""What a newcomer sees first, in a real headless Chromium: the documentation site's home
page (built by mkdocs --strict, served on loopback) and the pages `llm-proxy demo` prints
(the example chat page with its budget, the admin dashboard behind its sign-in).

Set DOCS_SCREENSHOTS=docs/screenshots to refresh the pictures the docs show; otherwise the
screenshots go to a temporary directory (they are still taken, so a page that cannot render
fails here)."""

from __future__ import annotations

import functools
import http.server
import os
import re
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.chromium import chromium_context
from tests.support.demo import running_demo

ROOT = Path(__file__).resolve().parents[2]
MKDOCS = Path(sys.executable).with_name("mkdocs")


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def screenshot_folder() -> Path:
    target = os.environ.get("DOCS_SCREENSHOTS")
    folder = Path(target) if target else Path(tempfile.mkdtemp(prefix="docs-shots-"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium_context() as context:
        yield context


@pytest.fixture(scope="module")
def site_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    site = tmp_path_factory.mktemp("site")
    subprocess.run(
        [str(MKDOCS), "build", "--strict", "--quiet", "--site-dir", str(site)],
        cwd=ROOT,
        check=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    handler = functools.partial(QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def test_the_site_home_page_leads_to_the_quickstart(browser: Any, site_url: str) -> None:
    tab = browser.new_page()
    tab.goto(f"{site_url}/")
    assert tab.inner_text("article h1").rstrip("¶").strip() == "llm-proxy"
    navigation = tab.inner_text("nav.md-nav--primary")
    for section in ("Quickstart", "Configuration", "Platforms", "Security model"):
        assert section in navigation
    tab.screenshot(path=str(screenshot_folder() / "site-home.png"))
    tab.click("article a[href='quickstart/']")
    tab.wait_for_url(re.compile(r".*/quickstart/$"))
    assert "make demo" in tab.inner_text("article")
    tab.close()


@pytest.fixture(scope="module")
def demo() -> Iterator[dict[str, str]]:
    with running_demo("--delay-ms", "20") as running:
        yield {
            "base": running.base,
            "chat": re.search(r"chat:\s+(\S+)", running.banner).group(1),  # type: ignore[union-attr]
            "admin": re.search(r"admin token:\s+(\S+)", running.banner).group(1),  # type: ignore[union-attr]
        }


def test_the_demo_chat_page_streams_and_shows_the_budget(
    browser: Any, demo: dict[str, str]
) -> None:
    tab = browser.new_page()
    tab.goto(demo["chat"])
    tab.wait_for_selector("#quota:not([hidden])", timeout=10_000)
    assert tab.inner_text("#quota").startswith("Budget left today: $1")
    tab.fill("#prompt", "hello")
    tab.click("#send")
    tab.wait_for_selector(".assistant[data-state=done]", timeout=15_000)
    assert "Hello from the mock upstream" in tab.inner_text(".assistant")
    tab.wait_for_function(
        "!document.getElementById('quota').textContent.includes('$1.0000 of')", timeout=10_000
    )
    tab.screenshot(path=str(screenshot_folder() / "demo-chat.png"))
    tab.close()


def test_the_demo_dashboard_signs_in_with_the_printed_token(
    browser: Any, demo: dict[str, str]
) -> None:
    tab = browser.new_page()
    tab.goto(f"{demo['base']}/admin/sign-in")
    tab.fill("#token", demo["admin"])
    tab.press("#token", "Enter")
    tab.wait_for_url(re.compile(r".*/admin/tokens$"), timeout=10_000)
    tab.goto(f"{demo['base']}/admin/usage")
    tab.wait_for_load_state("networkidle")
    assert "Sign in" not in tab.title()
    tab.screenshot(path=str(screenshot_folder() / "demo-dashboard.png"))
    tab.close()
