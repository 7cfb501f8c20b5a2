"""The dashboard's sign-in and cookies against a hostile caller (issue 19, class 7, and the
cookie of class 2), over real sockets: the proxy on uvicorn, httpx as the browser."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from core.access.status import ServiceStatus
from core.app import create_app
from core.config import load_settings
from core.stores import open_store
from tests.support.admin import ADMIN_TOKEN, admin_env
from tests.support.servers import FAKE_TOKEN, RunningServer, serve_in_thread

FORM = {"content-type": "application/x-www-form-urlencoded"}


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[RunningServer]:
    env = admin_env(TOKEN_STORE=f"sqlite:///{tmp_path}/tokens.db", TOKEN_CACHE_SECONDS="0.2")
    with serve_in_thread(create_app(load_settings(env))) as server:
        yield server


async def test_concurrent_wrong_sign_ins_get_at_most_the_limit_checked(
    proxy: RunningServer,
) -> None:
    async with httpx.AsyncClient(base_url=proxy.url, timeout=30) as client:

        async def wrong() -> int:
            reply = await client.post("/admin/sign-in", content="token=wrong-guess", headers=FORM)
            return reply.status_code

        statuses = await asyncio.gather(*(wrong() for _ in range(40)))
        # 401: the guess was checked; 429: refused before any check.
        assert statuses.count(401) <= 5
        assert statuses.count(401) + statuses.count(429) == 40
        # And the right token is refused too while the window lasts.
        right = await client.post("/admin/sign-in", content=f"token={ADMIN_TOKEN}", headers=FORM)
        assert right.status_code == 429


async def test_right_sign_ins_do_not_use_up_the_failure_allowance(proxy: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=proxy.url) as client:
        for _ in range(8):
            reply = await client.post(
                "/admin/sign-in", content=f"token={ADMIN_TOKEN}", headers=FORM
            )
            assert reply.status_code == 303
        wrong = await client.post("/admin/sign-in", content="token=wrong", headers=FORM)
        assert wrong.status_code == 401


async def test_concurrent_right_bearer_calls_are_not_refused(proxy: RunningServer) -> None:
    # Each call reserves a place before its check and gives it back after: a script's
    # parallel calls must not run out of places (a SQLite store: checks run on threads).
    headers = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    async with httpx.AsyncClient(base_url=proxy.url, headers=headers, timeout=30) as client:
        replies = await asyncio.gather(*(client.get("/admin/api/tokens") for _ in range(20)))
    assert [reply.status_code for reply in replies] == [200] * 20


@pytest.mark.parametrize(
    ("headers", "secure"),
    [
        # nginx with `proxy_pass http://127.0.0.1:8787` and the usual X-Forwarded-Proto.
        ({"host": "127.0.0.1", "x-forwarded-proto": "https"}, True),
        ({"host": "127.0.0.1:8787", "forwarded": "for=1.2.3.4;proto=https"}, True),
        ({"host": "127.0.0.1", "x-forwarded-proto": "http, https"}, True),
        ({"host": "admin.example.com"}, True),
        # Local use over plain http: a Secure cookie would never come back.
        ({"host": "127.0.0.1:8787"}, False),
        ({"host": "localhost:8787", "x-forwarded-proto": "http"}, False),
    ],
)
async def test_the_session_cookie_is_secure_behind_a_tls_front_end(
    proxy: RunningServer, headers: dict[str, str], secure: bool
) -> None:
    async with httpx.AsyncClient(base_url=proxy.url) as client:
        reply = await client.post(
            "/admin/sign-in", content=f"token={ADMIN_TOKEN}", headers={**FORM, **headers}
        )
    assert reply.status_code == 303
    cookie = reply.headers["set-cookie"]
    assert ("; Secure" in cookie) is secure


async def test_a_copied_cookie_stops_working_at_sign_out(proxy: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=proxy.url) as browser:
        signed_in = await browser.post(
            "/admin/sign-in", content=f"token={ADMIN_TOKEN}", headers=FORM
        )
        assert signed_in.status_code == 303
        copied = signed_in.cookies["llmp_admin"]
        csrf = (await browser.get("/admin/api/session")).json()["csrf"]
        out = await browser.post("/admin/sign-out", headers={"x-csrf-token": csrf})
        assert out.status_code == 200
    # Another client with the cookie copied before sign-out.
    async with httpx.AsyncClient(base_url=proxy.url, cookies={"llmp_admin": copied}) as thief:
        reply = await thief.get("/admin/api/tokens")
        assert reply.status_code == 401
        assert reply.json()["error"]["code"] == "not_signed_in"
        page = await thief.get("/admin/tokens")
        assert page.status_code == 303


async def test_the_usage_report_answers_503_while_switched_off(
    proxy: RunningServer, tmp_path: Path
) -> None:
    headers = {"authorization": f"Bearer {FAKE_TOKEN}"}
    async with httpx.AsyncClient(base_url=proxy.url) as client:
        assert (await client.get("/proxy/usage", headers=headers)).status_code == 200
        ServiceStatus(open_store(f"sqlite:///{tmp_path}/tokens.db")).set_online(False)
        deadline = asyncio.get_running_loop().time() + 5
        reply = await client.get("/proxy/usage", headers=headers)
        while reply.status_code == 200 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.1)
            reply = await client.get("/proxy/usage", headers=headers)
        assert reply.status_code == 503
        assert reply.json()["error"]["code"] == "service_offline"
        assert (await client.get("/health")).status_code == 200


class TestSignOutEndsOnlyItsOwnSession:
    """Sign-out revokes one session by its id: another browser's session, and the next
    sign-in, keep working."""

    async def test_the_other_browser_and_the_next_sign_in_stay_signed_in(
        self, proxy: RunningServer
    ) -> None:
        async with (
            httpx.AsyncClient(base_url=proxy.url) as laptop,
            httpx.AsyncClient(base_url=proxy.url) as phone,
        ):
            for browser in (laptop, phone):
                signed_in = await browser.post(
                    "/admin/sign-in", content=f"token={ADMIN_TOKEN}", headers=FORM
                )
                assert signed_in.status_code == 303
            csrf = (await laptop.get("/admin/api/session")).json()["csrf"]
            assert (
                await laptop.post("/admin/sign-out", headers={"x-csrf-token": csrf})
            ).status_code == 200
            assert (await phone.get("/admin/api/tokens")).status_code == 200
            again = await laptop.post(
                "/admin/sign-in", content=f"token={ADMIN_TOKEN}", headers=FORM
            )
            assert again.status_code == 303
            assert (await laptop.get("/admin/api/tokens")).status_code == 200


class TestARightSignInGivesBackOnlyItsOwnPlace:
    async def test_the_guesses_before_it_still_count(self, proxy: RunningServer) -> None:
        """4 wrong guesses, the admin signs in, 1 more guess is checked and then the limit
        (5 a window) holds: the admin's sign-in does not buy a guesser another try."""
        async with httpx.AsyncClient(base_url=proxy.url) as client:

            async def sign_in(token: str) -> int:
                reply = await client.post("/admin/sign-in", content=f"token={token}", headers=FORM)
                return reply.status_code

            assert [await sign_in("wrong") for _ in range(4)] == [401] * 4
            assert await sign_in(ADMIN_TOKEN) == 303
            assert await sign_in("wrong") == 401
            assert await sign_in("wrong") == 429


@pytest.mark.parametrize(
    "body",
    [
        b'{"label":"a\\ud800"}',
        b'{"label":"ok","models":["m\\udfff"]}',
        b'{"label":"ok","providers":["\\ud800"]}',
    ],
)
async def test_a_lone_surrogate_is_refused_and_the_token_list_stays_readable(
    proxy: RunningServer, body: bytes
) -> None:
    # Valid JSON, yet no Unicode text: a token kept with it made every later list a 500,
    # and an error quoting it (an unknown provider) failed itself.
    bearer = {"authorization": f"Bearer {ADMIN_TOKEN}", "content-type": "application/json"}
    async with httpx.AsyncClient(base_url=proxy.url, headers=bearer) as client:
        made = await client.post("/admin/api/tokens", content=body)
        assert made.status_code == 400
        assert made.json()["error"]["code"] == "bad_json"
        listed = await client.get("/admin/api/tokens")
        assert listed.status_code == 200
        assert listed.json()["tokens"] == []


def test_a_token_named_with_an_undecodable_argument_is_refused(tmp_path: Path) -> None:
    # A shell argument's undecodable byte reaches argv as a lone surrogate (surrogateescape).
    from core.access.tokens import TokenError, create_token

    store = open_store(f"sqlite:///{tmp_path}/tokens.db")
    with pytest.raises(TokenError, match="Unicode"):
        create_token(store, "laptop-\udcff")
    with pytest.raises(TokenError, match="Unicode"):
        create_token(store, "laptop", models=("gpt-\udcff",))


async def test_a_record_stored_with_a_lone_surrogate_leaves_the_token_list_readable(
    proxy: RunningServer, tmp_path: Path
) -> None:
    """A record written before labels were checked (an older version, another tool writing
    the store) holds a lone surrogate: the list shows it escaped instead of failing with a
    500 for every token, for good."""
    from dataclasses import replace  # noqa: TID251  # a token record is a dataclass

    from core.access.tokens import create_token, store_key

    store = open_store(f"sqlite:///{tmp_path}/tokens.db")
    _, record = create_token(store, "laptop")
    store.put(store_key(record.token_hash), replace(record, label="laptop-\udcff").to_doc())
    bearer = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    async with httpx.AsyncClient(base_url=proxy.url, headers=bearer) as client:
        listed = await client.get("/admin/api/tokens")
    assert listed.status_code == 200, listed.text
    [row] = listed.json()["tokens"]
    assert row["label"] == "laptop-\udcff"  # JSON's own escape, read back as written
