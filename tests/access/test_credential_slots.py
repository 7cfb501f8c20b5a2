"""The caller's token never reaches any provider, whichever slot it rides in.

A class, not samples: every route of the catalogue (and the default route) times every slot an
SDK puts a key in (Authorization, x-api-key, x-goog-api-key, api-key, ?key= and its lookalikes),
and all of them at once. The mock upstream records headers as the list they arrived as, so a
caller's token sent beside the real key under the same name cannot hide behind it.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from core.providers import CATALOGUE
from tests.support.secrets import assert_token_absent
from tests.support.servers import FAKE_TOKEN, RunningServer, reset_upstream, upstream_requests


def _route(prefix: str, error_shape: str) -> str:
    if prefix == "/gemini":
        return "/gemini/v1beta/models/gemini-2.0-flash:generateContent"
    if prefix == "/azure":
        return "/azure/openai/deployments/d1/chat/completions?api-version=2024-10-21"
    if error_shape == "anthropic":
        return f"{prefix}/v1/messages"
    return (
        f"{prefix}/v1/chat/completions"
        if not prefix.endswith("/openai")
        else (f"{prefix}/chat/completions")
    )


ROUTES = sorted({_route(p.prefix, p.error_shape) for p in CATALOGUE} | {"/v1/chat/completions"})

# slot name -> (headers, query parameter) carrying the token there.
SLOTS: dict[str, tuple[dict[str, str], str]] = {
    "authorization": ({"authorization": f"Bearer {FAKE_TOKEN}"}, ""),
    "authorization-lowercase-scheme": ({"authorization": f"bearer {FAKE_TOKEN}"}, ""),
    "x-api-key": ({"x-api-key": FAKE_TOKEN}, ""),
    "x-goog-api-key": ({"x-goog-api-key": FAKE_TOKEN}, ""),
    "api-key": ({"api-key": FAKE_TOKEN}, ""),
    "X-Goog-Api-Key (case)": ({"X-Goog-Api-Key": FAKE_TOKEN}, ""),
    "?key=": ({}, f"key={FAKE_TOKEN}"),
    "?KEY=": ({}, f"KEY={FAKE_TOKEN}"),
    "?%6Bey=": ({}, f"%6Bey={FAKE_TOKEN}"),
    "?key= between others": ({}, f"a=1&key={FAKE_TOKEN}&b=2"),
    "every slot at once": (
        {
            "authorization": f"Bearer {FAKE_TOKEN}",
            "x-api-key": FAKE_TOKEN,
            "x-goog-api-key": FAKE_TOKEN,
            "api-key": FAKE_TOKEN,
        },
        f"key={FAKE_TOKEN}",
    ),
}


def _body(route: str) -> dict[str, Any]:
    if route.startswith("/gemini/") and ":generate" in route:
        return {"contents": [{"parts": [{"text": "hi"}]}]}
    if route.startswith("/anthropic"):
        return {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    return {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize("slot", list(SLOTS))
@pytest.mark.parametrize("route", ROUTES)
def test_the_callers_token_reaches_no_upstream_in_any_slot(
    all_providers_proxy: RunningServer, mock_upstream: RunningServer, route: str, slot: str
) -> None:
    headers, query = SLOTS[slot]
    url = all_providers_proxy.url + route
    if query:
        url += ("&" if "?" in route else "?") + query
    reset_upstream(mock_upstream)
    reply = httpx.post(url, headers=headers, json=_body(route), timeout=10)
    assert reply.status_code == 200, reply.text
    seen = upstream_requests(mock_upstream)
    assert len(seen) == 1
    assert_token_absent(seen[0], FAKE_TOKEN)


def test_the_check_sees_a_repeated_header_the_dict_would_hide() -> None:
    # The assertion itself must fail when the token rides beside the real key.
    seen = {
        "header_list": [["x-goog-api-key", FAKE_TOKEN], ["x-goog-api-key", "sk-real"]],
        "headers": {"x-goog-api-key": "sk-real"},
        "query": "",
        "path": "/v1beta/models/m:generateContent",
    }
    with pytest.raises(AssertionError):
        assert_token_absent(seen, FAKE_TOKEN)
