"""The Requests page's status filter offers refusal codes by name; each must be a code the
proxy writes into the request log, or choosing it lists nothing however many such refusals
there were. Two real refusals over loopback (a request limit, a token's budget), then every
refusal code the page offers is asked of the API the page calls."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.access.tokens import create_token
from core.app import create_app
from core.config import load_settings
from tests.support.admin import ADMIN_TOKEN, admin_env
from tests.support.polling import wait_until
from tests.support.servers import RunningServer, serve_in_thread

ADMIN_JS = Path(__file__).resolve().parents[2] / "core" / "admin" / "static" / "admin.js"
BODY = {"model": "gpt-4o-mini", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}


def offered_refusal_codes() -> list[str]:
    """The status filter's options that are neither a status (429) nor a class (4xx)."""
    found = re.search(r'select\("status", "Status", \[([^\]]*)\]\)', ADMIN_JS.read_text())
    assert found, "the Requests page's status filter is no longer where this test reads it"
    options = re.findall(r'"([^"]+)"', found.group(1))
    return [option for option in options if not re.fullmatch(r"\d{3}|\dxx", option)]


@pytest.fixture
def dashboard(mock_upstream: RunningServer) -> Iterator[tuple[str, Any]]:
    env = admin_env(mock_upstream.url, RATE_LIMIT_REQUESTS="2")
    app = create_app(load_settings(env))
    with serve_in_thread(app) as server:
        yield server.url, app.proxy  # type: ignore[attr-defined]


def test_every_refusal_code_the_filter_offers_finds_its_refusals(
    dashboard: tuple[str, Any],
) -> None:
    base, proxy = dashboard
    limited, _ = create_token(proxy.token_store, "limited")
    # A budget far below one request's worst case: the first is admitted with the room
    # left, the second finds none.
    broke, _ = create_token(proxy.token_store, "broke", budget_usd=0.000001)
    url = f"{base}/openai/v1/chat/completions"
    with httpx.Client(timeout=10) as client:
        statuses = [
            client.post(url, json=BODY, headers={"authorization": f"Bearer {token}"}).status_code
            for token in (limited, limited, limited, broke, broke)
        ]
        assert statuses == [200, 200, 429, 200, 429]

        def logged(code: str) -> list[dict[str, Any]]:
            reply = client.get(
                f"{base}/admin/api/requests",
                params={"status": code},
                headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
            )
            assert reply.status_code == 200
            return list(reply.json()["requests"])

        # The log is written in the background: wait for both refusals to land.
        wait_until(lambda: logged("429"), lambda found: len(found) == 2)
        codes = offered_refusal_codes()
        assert codes, "the filter offers no refusal code"
        for code in codes:
            assert logged(code), f"the filter offers {code!r}, which no refusal carries"
