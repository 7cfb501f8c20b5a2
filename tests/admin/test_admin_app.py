"""The dashboard app in-process: sign-in, session cookie, CSRF, origins, headers, the JSON
API with a bearer token, and CORS never reaching /admin."""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from core.app import create_app
from core.config import load_settings
from core.usage.ledger import UsageEntry
from tests.support.admin import ADMIN_TOKEN, admin_env, client_for, sign_in
from tests.support.servers import FAKE_TOKEN, proxy_env


def proxy_of(app: Any) -> Any:
    return app.proxy


@contextlib.asynccontextmanager
async def signed_in(app: Any) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    async with client_for(app) as client:
        reply = await sign_in(client)
        assert reply.status_code == 303 and reply.headers["location"] == "/admin/tokens"
        session = await client.get("/admin/api/session")
        yield client, session.json()["csrf"]


async def test_off_without_admin_token() -> None:
    app = create_app(load_settings(proxy_env("http://127.0.0.1:9")))
    async with client_for(app) as client:
        reply = await client.get("/admin/sign-in")
    assert reply.status_code == 404 and reply.json()["error"]["code"] == "not_found"


async def test_pages_redirect_to_sign_in_and_carry_the_security_headers(app: Any) -> None:
    async with client_for(app) as client:
        for path in ("/admin", "/admin/", "/admin/tokens", "/admin/usage", "/admin/routes"):
            reply = await client.get(path)
            assert reply.status_code == 303 and reply.headers["location"] == "/admin/sign-in"
        page = await client.get("/admin/sign-in")
        assert page.status_code == 200 and "<form" in page.text
        for reply in (
            page,
            await client.get("/admin/api/tokens"),
            await client.get("/admin/static/admin.js"),
        ):
            assert "default-src 'none'" in reply.headers["content-security-policy"]
            assert reply.headers["x-content-type-options"] == "nosniff"
            assert reply.headers["referrer-policy"] == "no-referrer"
            assert reply.headers["cache-control"] == "no-store"
        assert (await client.get("/admin/static/../app.py")).status_code == 404
        assert (await client.get("/admin/static/missing.js")).status_code == 404


async def test_sign_in_sets_a_strict_cookie_then_pages_and_api_open(app: Any) -> None:
    async with signed_in(app) as (client, csrf):
        reply = await sign_in(client_for(app))
        set_cookie = reply.headers["set-cookie"]
        assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie
        assert "Path=/admin" in set_cookie and "Secure" not in set_cookie  # loopback
        assert ADMIN_TOKEN not in set_cookie
        page = await client.get("/admin/tokens")
        assert page.status_code == 200 and "admin.js" in page.text
        assert (await client.get("/admin/api/tokens")).status_code == 200
        # A change without the CSRF header is refused; with it, done.
        made = await client.post("/admin/api/tokens", json={"label": "web"})
        assert made.status_code == 403 and made.json()["error"]["code"] == "csrf"
        made = await client.post(
            "/admin/api/tokens", json={"label": "web"}, headers={"x-csrf-token": csrf}
        )
        assert made.status_code == 201
        bad = await client.post(
            "/admin/api/tokens", json={"label": "x"}, headers={"x-csrf-token": "nope"}
        )
        assert bad.status_code == 403


async def test_the_cookie_is_secure_off_loopback(app: Any) -> None:
    async with client_for(app, host="admin.example.com") as client:
        reply = await sign_in(client)
    assert reply.headers["set-cookie"].endswith("; Secure")


async def test_cross_origin_requests_are_refused_even_with_a_session(app: Any) -> None:
    async with signed_in(app) as (client, csrf):
        for headers in (
            {"origin": "http://evil.example"},
            {"sec-fetch-site": "cross-site"},
            {"origin": "null"},
        ):
            reply = await client.put(
                "/admin/api/status",
                json={"online": False},
                headers={"x-csrf-token": csrf, **headers},
            )
            assert reply.status_code == 403 and reply.json()["error"]["code"] == "cross_origin"
        # A form posted from another site to the sign-in is refused too.
        form = await client.post(
            "/admin/sign-in",
            content=f"token={ADMIN_TOKEN}",
            headers={
                "origin": "http://evil.example",
                "content-type": "application/x-www-form-urlencoded",
            },
        )
        assert form.status_code == 403 and "set-cookie" not in form.headers
        same = await client.put(
            "/admin/api/status",
            json={"online": True},
            headers={
                "x-csrf-token": csrf,
                "origin": "http://127.0.0.1:8787",
                "sec-fetch-site": "same-origin",
            },
        )
        assert same.status_code == 200


async def test_wrong_tokens_are_refused_then_rate_limited_per_ip(app: Any) -> None:
    async with client_for(app, ip="198.51.100.9") as client:
        for _ in range(5):
            reply = await sign_in(client, "wrong-admin-token-wrong-admin-token-00")
            assert reply.status_code == 401 and "not the admin token" in reply.text
        limited = await sign_in(client)  # even the right token, for now
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) > 0
        bearer = await client.get(
            "/admin/api/status", headers={"authorization": f"Bearer {ADMIN_TOKEN}"}
        )
        assert bearer.status_code == 429
    async with client_for(app, ip="198.51.100.10") as other:
        assert (await sign_in(other)).status_code == 303


async def test_a_proxy_token_is_never_an_admin_credential(app: Any) -> None:
    async with client_for(app) as client:
        for slot in ({"authorization": f"Bearer {FAKE_TOKEN}"}, {"x-api-key": FAKE_TOKEN}):
            reply = await client.get("/admin/api/tokens", headers=slot)
            assert reply.status_code == 401
        assert (await sign_in(client, FAKE_TOKEN)).status_code == 401


async def test_cors_never_answers_for_admin(app: Any) -> None:
    # ALLOWED_ORIGINS lists this origin (tests.support.servers.proxy_env): the proxy would say yes.
    origin = "http://app.example.test"
    async with client_for(app) as client:
        proxy_preflight = await client.options(
            "/v1/chat/completions",
            headers={"origin": origin, "access-control-request-method": "POST"},
        )
        assert proxy_preflight.headers["access-control-allow-origin"] == origin
        preflight = await client.options(
            "/admin/api/tokens",
            headers={
                "origin": origin,
                "access-control-request-method": "POST",
                "access-control-request-headers": "authorization",
            },
        )
        assert preflight.status_code != 204
        assert not any(k.startswith("access-control-") for k in preflight.headers)
        read = await client.get(
            "/admin/api/status",
            headers={"origin": origin, "authorization": f"Bearer {ADMIN_TOKEN}"},
        )
        assert read.status_code == 403
        assert not any(k.startswith("access-control-") for k in read.headers)


async def test_tokens_api_with_bearer(bearer: httpx.AsyncClient, app: Any) -> None:
    made = await bearer.post(
        "/admin/api/tokens",
        json={
            "label": "mobile",
            "providers": ["openai"],
            "models": ["gpt-4o*"],
            "expires_at": "30d",
            "budget_usd": 25,
        },
    )
    assert made.status_code == 201
    created = made.json()
    token, token_id = created["token"], created["id"]
    assert token.startswith("llmp_") and created["budget_usd"] == 25
    assert created["providers"] == ["openai"] and created["expires_at"] > 0

    listing = (await bearer.get("/admin/api/tokens")).text
    assert token not in listing and "token_hash" not in listing
    [row] = (await bearer.get("/admin/api/tokens")).json()["tokens"]
    assert row["status"] == "active" and row["usage"]["requests"] == 0

    proxy_of(app).ledger.record(
        UsageEntry(f"token:{token_id}", "openai", "gpt-4o", 100, 20, cost_usd=0.5)
    )
    [row] = (await bearer.get("/admin/api/tokens")).json()["tokens"]
    assert row["usage"]["requests"] == 1 and row["usage"]["total_tokens"] == 120

    assert (await bearer.post(f"/admin/api/tokens/{token_id}/disable")).json()[
        "status"
    ] == "disabled"
    assert (await bearer.post(f"/admin/api/tokens/{token_id}/enable")).json()["status"] == "active"
    assert (await bearer.post(f"/admin/api/tokens/{token_id}/explode")).status_code == 404
    assert (await bearer.delete(f"/admin/api/tokens/{token_id}")).json()["status"] == "revoked"
    assert (await bearer.delete(f"/admin/api/tokens/{token_id}")).status_code == 404
    assert (await bearer.get("/admin/api/tokens")).json()["tokens"] == []


async def test_an_enable_racing_a_revoke_is_a_404_and_the_token_stays_revoked(
    bearer: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two admins at once: the enable found the token, then the other's revoke landed
    before its write. The enable must not recreate the token (a read then a `put` did)."""
    from core.access import tokens

    made = (await bearer.post("/admin/api/tokens", json={"label": "mobile"})).json()
    assert (await bearer.post(f"/admin/api/tokens/{made['id']}/disable")).status_code == 200
    real_find = tokens.find_token

    def found_then_revoked(store: Any, label_or_id: str) -> Any:
        found = real_find(store, label_or_id)
        store.delete(tokens.store_key(found.token_hash))  # the other admin's revoke
        return found

    monkeypatch.setattr(tokens, "find_token", found_then_revoked)
    reply = await bearer.post(f"/admin/api/tokens/{made['id']}/enable")
    assert reply.status_code == 404, reply.text
    assert "revoked" in reply.json()["error"]["message"]
    monkeypatch.undo()
    assert (await bearer.get("/admin/api/tokens")).json()["tokens"] == []


@pytest.mark.parametrize(
    "body,says",
    [
        ({}, "label is required"),
        ({"label": " "}, "must not be blank"),
        ({"label": "x", "providers": ["opneai"]}, "unknown provider opneai"),
        ({"label": "x", "expires_at": "soon"}, "expires must be like"),
        ({"label": "x", "expires_at": 5}, "in the past"),
        ({"label": "x", "budget_usd": "lots"}, "budget_usd"),
        ({"label": "x", "models": "gpt-4o"}, None),
    ],
)
async def test_token_requests_are_checked(
    bearer: httpx.AsyncClient, body: dict, says: str | None
) -> None:
    reply = await bearer.post("/admin/api/tokens", json=body)
    if says is None:
        assert reply.status_code == 201
    else:
        assert reply.status_code == 400 and says in reply.json()["error"]["message"]


async def test_status_schedule_usage_providers_routes(bearer: httpx.AsyncClient, app: Any) -> None:
    assert (await bearer.get("/admin/api/status")).json()["online"] is True
    off = await bearer.put("/admin/api/status", json={"online": False})
    assert off.json()["online"] is False and "switched off" in off.json()["offline_reason"]
    assert (await bearer.put("/admin/api/status", json={"online": "no"})).status_code == 400
    assert (await bearer.put("/admin/api/status", json={"online": True})).json()[
        "offline_reason"
    ] is None

    schedule = await bearer.put(
        "/admin/api/schedule", json={"windows": [{"nightly": "01:00-02:00"}]}
    )
    assert schedule.json()["windows"] == [{"nightly": "01:00-02:00"}]
    assert (await bearer.get("/admin/api/schedule")).json() == {
        "windows": [{"nightly": "01:00-02:00"}]
    }
    bad = await bearer.put("/admin/api/schedule", json={"windows": [{"nightly": "1-2"}]})
    assert bad.status_code == 400 and "22:00-06:00" in bad.json()["error"]["message"]

    today = datetime.datetime.now(datetime.UTC)
    proxy_of(app).ledger.record(UsageEntry("shared", "openai", "gpt-4o", 10, 5, cost_usd=0.01))
    usage = (await bearer.get(f"/admin/api/usage?by=day&since={today.date().isoformat()}")).json()
    assert usage["rows"][0]["key"] == today.date().isoformat() and usage["total"]["requests"] == 1
    assert (await bearer.get("/admin/api/usage?by=colour")).status_code == 400
    assert (await bearer.get("/admin/api/usage?since=yesterday")).status_code == 400

    providers = (await bearer.get("/admin/api/providers")).json()["providers"]
    openai = next(p for p in providers if p["name"] == "openai")
    assert openai["keys"] == ["…WXYZ"] and openai["requests_today"] == 1
    assert "sk-mock" not in (await bearer.get("/admin/api/providers")).text

    routes = {r["prefix"]: r for r in (await bearer.get("/admin/api/routes")).json()["routes"]}
    assert routes["/openai"] == {
        "name": "openai",
        "prefix": "/openai",
        "sdk": "openai",
        "base_path": "/openai/v1",
    }
    assert routes["/v1"]["base_path"] == "/v1"


async def test_no_token_store_is_explained() -> None:
    app = create_app(load_settings(admin_env(TOKEN_STORE="")))
    async with client_for(app) as client:
        reply = await client.get(
            "/admin/api/tokens", headers={"authorization": f"Bearer {ADMIN_TOKEN}"}
        )
    assert reply.status_code == 409 and "TOKEN_STORE" in reply.json()["error"]["message"]


async def test_the_dashboard_runs_on_its_parts_alone() -> None:
    """The admin app takes the few things it uses (core/admin/app.py AdminParts), not the
    proxy's app: built here from stores, a ledger, a kill switch and a provider list."""
    from core.access.status import ServiceStatus
    from core.admin.app import AdminParts, build_admin_app
    from core.stores import open_store
    from core.usage.ledger import UsageLedger

    settings = load_settings(admin_env())
    store = open_store("memory://")
    parts = AdminParts(
        admin_token=ADMIN_TOKEN,
        client_ip_source="socket",
        token_store=store,
        failure_store=store,
        ledger=UsageLedger(open_store("memory://")),
        status=ServiceStatus(store),
        providers=settings.providers(),
    )
    assert ADMIN_TOKEN not in repr(parts)
    async with client_for(build_admin_app(parts)) as client:
        client.headers["authorization"] = f"Bearer {ADMIN_TOKEN}"
        created = await client.post("/admin/api/tokens", json={"label": "parts"})
        assert created.status_code == 201, created.text
        listed = (await client.get("/admin/api/tokens")).json()
        assert [token["label"] for token in listed["tokens"]] == ["parts"]
        providers = (await client.get("/admin/api/providers")).json()
        assert "openai" in {row["name"] for row in providers["providers"]}
        wrong = await client.get("/admin/api/tokens", headers={"authorization": "Bearer no"})
        assert wrong.status_code == 401
