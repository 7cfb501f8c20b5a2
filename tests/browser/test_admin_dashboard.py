"""The admin dashboard in Debian's headless Chromium (driven by Playwright) over a real
server: the proxy on uvicorn in front of the mock upstream, the real openai SDK as a caller.

Set ADMIN_SCREENSHOTS=docs/screenshots to refresh the README's screenshots (the
screenshot test writes to a temporary directory otherwise).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import openai
import pytest
from playwright.sync_api import sync_playwright

from core.app import create_app
from core.config import load_settings
from core.types import Receive, Scope, Send
from core.usage.ledger import UsageEntry
from tests.support.admin import ADMIN_TOKEN
from tests.support.chromium import CHROMIUM, FLAGS
from tests.support.servers import FAKE_TOKEN, RunningServer, proxy_env, serve_in_thread

CACHE_SECONDS = 1.0
WRONG = "not-the-admin-token-not-the-admin-token"


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    if not shutil.which("chromium") and not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is not installed: run `make setup-browser`")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            yield browser
        finally:
            browser.close()


def dashboard_env(upstream: RunningServer, **extra: str) -> dict[str, str]:
    return proxy_env(
        upstream.url,
        ADMIN_TOKEN=ADMIN_TOKEN,
        TOKEN_STORE="memory://",
        TOKEN_CACHE_SECONDS=str(CACHE_SECONDS),
        OPENAI_API_KEY="fake-openai-key-1234",
        OPENAI_UPSTREAM=upstream.url,
        ANTHROPIC_API_KEY="fake-anthropic-key-5678",
        ANTHROPIC_UPSTREAM=upstream.url,
        GEMINI_API_KEY="mock-gemini-key-not-real-9abc",
        GEMINI_UPSTREAM=upstream.url,
        **extra,
    )


@pytest.fixture
def dashboard(mock_upstream: RunningServer) -> Iterator[tuple[RunningServer, Any]]:
    app = create_app(load_settings(dashboard_env(mock_upstream)))
    with serve_in_thread(app) as server:
        yield server, app.proxy  # type: ignore[attr-defined]


class EvilPage:
    """Another origin's page with forms that post to the dashboard."""

    def __init__(self, target: str) -> None:
        self.target = target

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        page = f"""<!doctype html><title>evil</title>
<form id="create" method="post" action="{self.target}/admin/api/tokens" enctype="text/plain">
<input name='{{"label":"evil","x":"' value='"}}'><button>create</button></form>
<form id="signin" method="post" action="{self.target}/admin/sign-in">
<input name="token" value="{ADMIN_TOKEN}"><button>sign in</button></form>"""
        body = page.encode()
        headers = [(b"content-type", b"text/html"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def sign_in(tab: Any, base: str, token: str = ADMIN_TOKEN) -> None:
    tab.goto(f"{base}/admin")
    assert tab.url.endswith("/admin/sign-in")
    tab.fill("#token", token)
    tab.click("#sign-in")


def open_page(tab: Any, base: str, page: str) -> None:
    tab.goto(f"{base}/admin/{page}")
    tab.wait_for_selector(f"body[data-ready={page}]", timeout=10_000)


def sdk(base: str, token: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/openai/v1", api_key=token, max_retries=0, timeout=10)


def chat(client: openai.OpenAI, stream: bool = False) -> str:
    messages: Any = [{"role": "user", "content": "hi"}]
    if stream:
        pieces = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=messages,
            stream=True,
            stream_options={"include_usage": True},
        )
        return "".join((c.choices[0].delta.content or "") for c in pieces if c.choices)
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=messages)
    return reply.choices[0].message.content or ""


def test_operator_signs_in_issues_a_token_sees_usage_revokes_and_switches_off(
    chromium: Any, dashboard: tuple[RunningServer, Any]
) -> None:
    server, _ = dashboard
    base = server.url
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    tab.on("dialog", lambda dialog: dialog.accept())
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))

    # A wrong token is refused, the right one opens the tokens page.
    sign_in(tab, base, WRONG)
    assert "not the admin token" in tab.inner_text(".error")
    sign_in(tab, base)
    tab.wait_for_selector("body[data-ready=tokens]")

    # Create a token: shown once, with a copy button.
    tab.fill("#label", "browser-app")
    tab.fill("#providers", "openai")
    tab.fill("#budget", "5")
    tab.click("#create")
    tab.wait_for_selector("#token-value")
    token = tab.inner_text("#token-value").strip()
    assert token.startswith("llmp_")
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
    tab.click("#copy-token")
    assert tab.evaluate("navigator.clipboard.readText()") == token
    row = tab.locator("tr[data-label=browser-app]")
    assert "active" in row.inner_text() and "$5.00" in row.inner_text()
    token_id = row.get_attribute("data-id")

    # The real SDK calls the proxy with it; the ledger records both replies.
    client = sdk(base, token)
    assert chat(client).startswith("Hello from the mock upstream")
    assert chat(client, stream=True).startswith("Hello from the mock upstream")

    open_page(tab, base, "usage")
    assert tab.locator("#chart-day-tokens rect.input").count() >= 1
    assert tab.locator("#chart-day-tokens rect.output").count() >= 1
    assert f"token:{token_id}" in tab.text_content("#chart-callers")
    assert "gpt-4o-mini" in tab.text_content("#chart-models")
    totals = tab.inner_text("#usage-totals")
    assert "2\nrequests" in totals and "18\ntokens" in totals, totals

    open_page(tab, base, "tokens")
    usage_cell = tab.locator("tr[data-label=browser-app] td.usage").inner_text()
    assert "2 req" in usage_cell and "18 tok" in usage_cell

    # Revoke: the SDK gets 401 within the token cache time.
    tab.locator("tr[data-label=browser-app] button[data-action=revoke]").click()
    tab.wait_for_selector("tr[data-label=browser-app]", state="detached")
    revoked_at = time.monotonic()
    while True:
        try:
            chat(client)
        except openai.AuthenticationError:
            break
        assert time.monotonic() - revoked_at < CACHE_SECONDS + 1.0, "still accepted"
        time.sleep(0.1)

    # Kill switch: 503 for every caller, then service again.
    shared = sdk(base, FAKE_TOKEN)
    assert chat(shared)
    open_page(tab, base, "status")
    assert tab.inner_text("#switch-state") == "Online"
    tab.click("#toggle-online")
    tab.wait_for_selector("#switch-state.offline")
    assert tab.inner_text("#service") == "offline"
    with pytest.raises(openai.InternalServerError) as raised:
        chat(shared)
    assert raised.value.status_code == 503
    tab.click("#toggle-online")
    tab.wait_for_selector("#switch-state.online")
    assert chat(shared)

    # Providers and routes show what the deployment serves, keys by their last 4 only.
    open_page(tab, base, "providers")
    providers = tab.inner_text("#provider-list")
    assert "…1234" in providers and "fake-openai-key" not in providers
    open_page(tab, base, "routes")
    assert f"{base}/openai/v1" in tab.inner_text("#route-list")
    assert f'base_url="{base}/openai/v1"' in tab.inner_text("#snippets")
    assert errors == [], errors
    context.close()


def test_wrong_admin_tokens_are_rate_limited(
    chromium: Any, dashboard: tuple[RunningServer, Any]
) -> None:
    server, _ = dashboard
    tab = chromium.new_page()
    for _ in range(5):
        sign_in(tab, server.url, WRONG)
        assert "not the admin token" in tab.inner_text(".error")
    sign_in(tab, server.url)  # the right token, but too late for now
    assert "Too many wrong tokens" in tab.inner_text(".error")
    assert tab.url.endswith("/admin/sign-in")
    tab.close()


def test_forms_from_another_origin_are_refused(
    chromium: Any, dashboard: tuple[RunningServer, Any]
) -> None:
    server, proxy = dashboard
    context = chromium.new_context()
    tab = context.new_page()
    sign_in(tab, server.url)
    tab.wait_for_selector("body[data-ready=tokens]")
    with serve_in_thread(EvilPage(server.url)) as evil:
        # localhost is another origin than 127.0.0.1 to a browser.
        for form in ("create", "signin"):
            tab.goto(f"http://localhost:{evil.port}/")
            with tab.expect_navigation():
                tab.click(f"#{form} button")
            assert "cross" in tab.content().lower() or "another site" in tab.content()
    assert proxy.token_store.scan("token:") == []
    context.close()


def _seed(proxy: Any, token_ids: list[str]) -> None:
    """A month of plausible usage, so the charts have something to show."""
    import random

    rng = random.Random(7)  # noqa: S311 (made-up figures for a picture)
    callers = [f"token:{i}" for i in token_ids] + ["user:ada@example.com", "ip:203.0.113.7"]
    models = [
        ("openai", "gpt-4o-mini", 0.15, 0.6),
        ("anthropic", "claude-3-5-haiku", 0.8, 4.0),
        ("gemini", "gemini-2.0-flash", 0.1, 0.4),
        ("openai", "gpt-4o", 2.5, 10.0),
    ]
    now = datetime.now(UTC)
    for day in range(30):
        at = (now - timedelta(days=day)).timestamp()
        for _ in range(rng.randint(3, 9)):
            provider, model, pin, pout = rng.choice(models)
            inp, out = rng.randint(2_000, 60_000), rng.randint(500, 12_000)
            proxy.ledger.record(
                UsageEntry(
                    rng.choice(callers),
                    provider,
                    model,
                    inp,
                    out,
                    cached_input_tokens=inp // 5,
                    cost_usd=(inp * pin + out * pout) / 1e6,
                    saved_tokens=rng.choice([0, 0, 1500]),
                    at=at,
                )
            )


def test_screenshots_of_every_page(chromium: Any, mock_upstream: RunningServer) -> None:
    target = os.environ.get("ADMIN_SCREENSHOTS")
    folder = Path(target) if target else Path(tempfile.mkdtemp(prefix="admin-shots-"))
    folder.mkdir(parents=True, exist_ok=True)
    app = create_app(load_settings(dashboard_env(mock_upstream)))
    proxy = app.proxy  # type: ignore[attr-defined]
    ids: list[str] = []
    from core.access.tokens import create_token, set_disabled, store_key

    for label, providers, budget in (
        ("mobile-app", ("openai", "anthropic"), 50.0),
        ("web-chat", (), None),
        ("batch-jobs", ("gemini",), 200.0),
    ):
        _, record = create_token(proxy.token_store, label, providers=providers, budget_usd=budget)
        ids.append(record.id)
        proxy.token_store.touch(store_key(record.token_hash), time.time() - 3600 * len(ids))
    set_disabled(proxy.token_store, "batch-jobs", True)
    _seed(proxy, ids[:2])
    proxy.status.set_windows([{"nightly": "02:00-03:00", "note": "provider maintenance"}])
    with serve_in_thread(app) as server:
        base = server.url
        context = chromium.new_context(
            viewport={"width": 1280, "height": 860}, device_scale_factor=1
        )
        tab = context.new_page()
        tab.goto(f"{base}/admin/sign-in")
        tab.screenshot(path=str(folder / "sign-in.png"))
        sign_in(tab, base)
        tab.wait_for_selector("body[data-ready=tokens]")
        tab.fill("#label", "new-partner")
        tab.fill("#models", "gpt-4o*")
        tab.click("#create")
        tab.wait_for_selector("#token-value")
        tab.screenshot(path=str(folder / "tokens.png"), full_page=True)
        for page in ("usage", "providers", "status", "routes"):
            open_page(tab, base, page)
            tab.screenshot(path=str(folder / f"{page}.png"), full_page=True)
        context.close()
    for name in ("sign-in", "tokens", "usage", "providers", "status", "routes"):
        assert (folder / f"{name}.png").stat().st_size > 10_000
