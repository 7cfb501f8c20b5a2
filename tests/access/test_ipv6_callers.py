"""A caller counted by its IP (the shared token, anonymous calls) cannot get a fresh limit by
changing address within the network it holds: an IPv6 host is handed a whole /64, so each
request could come from a new address in it. Counted per /64, the limit holds."""

from __future__ import annotations

import httpx
import pytest
import respx

from core.access.client_ip import client_ip_rule
from core.app import create_app
from core.config import load_settings
from tests.support.servers import FAKE_TOKEN, FAKE_UPSTREAM_KEY

UPSTREAM = "https://api.upstream.test/v1"
AUTH = {"Authorization": f"Bearer {FAKE_TOKEN}"}
USAGE = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}


def scope_from(address: str) -> dict[str, object]:
    return {"type": "http", "headers": [], "client": (address, 1234)}


@pytest.mark.parametrize(
    ("address", "counted"),
    [
        ("203.0.113.9", "203.0.113.9"),
        ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
        ("2001:DB8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("::ffff:203.0.113.9", "203.0.113.9"),  # an IPv4 caller seen by a dual-stack socket
        ("unknown", "unknown"),
    ],
)
def test_an_ipv6_caller_is_counted_by_its_network(address: str, counted: str) -> None:
    assert client_ip_rule("socket")(scope_from(address)) == counted


async def test_new_addresses_in_one_ipv6_network_share_one_request_limit() -> None:
    settings = load_settings(
        {
            "UPSTREAM_BASE_URL": UPSTREAM,
            "UPSTREAM_API_KEY": FAKE_UPSTREAM_KEY,
            "PROXY_ACCESS_TOKEN": FAKE_TOKEN,
            "UPSTREAM_TRANSPORT": "httpx",
            "ACCESS_LOG": "false",
            "RATE_LIMIT_REQUESTS": "2",
            "CLIENT_IP_SOURCE": "socket",
        }
    )
    statuses = []
    with respx.mock(assert_all_called=False) as upstream:
        upstream.route(host="api.upstream.test").respond(200, json={"choices": [], "usage": USAGE})
        app = create_app(settings)
        for host in range(1, 5):
            transport = httpx.ASGITransport(app=app, client=(f"2001:db8:1:2::{host}", 1234))
            async with httpx.AsyncClient(transport=transport, base_url="http://proxy.test") as c:
                reply = await c.post(
                    "/v1/chat/completions", json={"model": "m", "messages": []}, headers=AUTH
                )
                statuses.append(reply.status_code)
        # Another network is another caller.
        transport = httpx.ASGITransport(app=app, client=("2001:db8:1:3::1", 1234))
        async with httpx.AsyncClient(transport=transport, base_url="http://proxy.test") as c:
            reply = await c.post(
                "/v1/chat/completions", json={"model": "m", "messages": []}, headers=AUTH
            )
            statuses.append(reply.status_code)
    assert statuses == [200, 200, 429, 429, 200]
