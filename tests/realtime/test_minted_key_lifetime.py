"""A minted key never outlives the token that minted it, nor the proxy going offline on
its schedule.

The proxy cannot revoke a minted key (docs/realtime.md): it works until it expires. A
stored token about to expire could mint, in its last second, keys that spend the owner's
money for ten more minutes; a realtime session through the proxy ends at that expiry."""

from __future__ import annotations

import datetime
import time
from pathlib import Path

import httpx
import pytest

from core.access.status import ServiceStatus, parse_window
from core.access.tokens import create_token
from core.stores import open_store
from tests.access.jwt_keys import ISSUER, JWKSServer, jwks_served, mint, rsa_key
from tests.realtime.test_ephemeral_keys import SESSION
from tests.support.fake_realtime import FakeRealtime
from tests.support.realtime import ProxyFactory

LEFT = 60  # seconds the token has left when it mints


def _expiring_token(tmp_path: Path) -> tuple[str, str, float]:
    store_url = f"sqlite:///{tmp_path}/tokens.db"
    expires_at = time.time() + LEFT
    token, _ = create_token(open_store(store_url), "leaving-soon", expires_at=expires_at)
    return store_url, token, expires_at


async def test_an_openai_client_secret_expires_with_its_token(
    start_proxy: ProxyFactory, upstream: FakeRealtime, tmp_path: Path
) -> None:
    store_url, token, _ = _expiring_token(tmp_path)
    with start_proxy(ALLOW_EPHEMERAL_KEYS="true", TOKEN_STORE=store_url) as proxy:
        headers = {"Authorization": f"Bearer {token}"}
        asked = [
            ("/v1/realtime/client_secrets", {"session": SESSION}),
            (
                "/v1/realtime/client_secrets",
                {"session": SESSION, "expires_after": {"anchor": "created_at", "seconds": 600}},
            ),
            (
                "/v1/realtime/sessions",
                {"model": "gpt-realtime", "client_secret": {"expires_after": {"seconds": 600}}},
            ),
        ]
        for path, body in asked:
            reply = httpx.post(f"{proxy.url}{path}", json=body, headers=headers, timeout=10)
            assert reply.status_code == 200, reply.text
    plain, long, beta = upstream.minted
    for minted in (plain, long):
        assert minted["body"]["expires_after"]["seconds"] <= LEFT  # main: 600
    assert beta["body"]["client_secret"]["expires_after"]["seconds"] <= LEFT


async def test_a_beta_session_secret_is_capped_even_unasked(
    start_proxy: ProxyFactory, upstream: FakeRealtime, tmp_path: Path
) -> None:
    """The beta route's default (one minute) is longer than the 30 s the token has left:
    the cap is inserted, as on `client_secrets`."""
    store_url = f"sqlite:///{tmp_path}/tokens.db"
    token, _ = create_token(open_store(store_url), "last-moments", expires_at=time.time() + 30)
    with start_proxy(ALLOW_EPHEMERAL_KEYS="true", TOKEN_STORE=store_url) as proxy:
        reply = httpx.post(
            f"{proxy.url}/v1/realtime/sessions",
            json={"model": "gpt-realtime"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert reply.status_code == 200, reply.text
    (beta,) = upstream.minted
    assert beta["body"]["client_secret"]["expires_after"]["seconds"] <= 30


async def test_a_gemini_auth_token_expires_with_its_token(
    start_proxy: ProxyFactory, upstream: FakeRealtime, tmp_path: Path
) -> None:
    store_url, token, expires_at = _expiring_token(tmp_path)
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=9)
    stamp = later.strftime("%Y-%m-%dT%H:%M:%SZ")
    with start_proxy(ALLOW_EPHEMERAL_KEYS="true", TOKEN_STORE=store_url) as proxy:
        reply = httpx.post(
            f"{proxy.url}/gemini/v1alpha/auth_tokens",
            json={"uses": 1, "expireTime": stamp, "newSessionExpireTime": stamp},
            headers={"x-goog-api-key": token},
            timeout=10,
        )
        assert reply.status_code == 200, reply.text
    body = upstream.minted[-1]["body"]
    for name in ("expireTime", "newSessionExpireTime"):
        moment = datetime.datetime.fromisoformat(body[name].replace("Z", "+00:00"))
        assert moment.timestamp() <= expires_at + 1, name  # main: nine minutes away


async def test_a_gemini_auth_token_cannot_start_a_session_after_its_token(
    start_proxy: ProxyFactory, upstream: FakeRealtime, tmp_path: Path
) -> None:
    """Google lets a new auth token start sessions for a minute by default: with 20 s left
    on the proxy token, the window is set to those 20 s."""
    store_url = f"sqlite:///{tmp_path}/tokens.db"
    expires_at = time.time() + 20
    token, _ = create_token(open_store(store_url), "gemini-last", expires_at=expires_at)
    with start_proxy(ALLOW_EPHEMERAL_KEYS="true", TOKEN_STORE=store_url) as proxy:
        reply = httpx.post(
            f"{proxy.url}/gemini/v1alpha/auth_tokens",
            json={"uses": 1},
            headers={"x-goog-api-key": token},
            timeout=10,
        )
        assert reply.status_code == 200, reply.text
    body = upstream.minted[-1]["body"]
    moment = datetime.datetime.fromisoformat(body["newSessionExpireTime"].replace("Z", "+00:00"))
    assert moment.timestamp() <= expires_at + 1


async def test_a_signed_in_user_mints_no_key_past_its_jwt(
    start_proxy: ProxyFactory, upstream: FakeRealtime
) -> None:
    signing_key = rsa_key("mint-1")
    exp = int(time.time()) + LEFT
    with (
        jwks_served(JWKSServer(keys=[signing_key.jwk()])) as jwks,
        start_proxy(
            ALLOW_EPHEMERAL_KEYS="true",
            PROXY_ACCESS_TOKEN="",
            JWT_JWKS_URL=f"{jwks.url}/.well-known/jwks.json",
            JWT_ISSUER=ISSUER,
        ) as proxy,
    ):
        reply = httpx.post(
            f"{proxy.url}/v1/realtime/client_secrets",
            json={"session": SESSION},
            headers={"Authorization": f"Bearer {mint(signing_key, exp=exp)}"},
            timeout=10,
        )
        assert reply.status_code == 200, reply.text
    assert upstream.minted[-1]["body"]["expires_after"]["seconds"] <= LEFT  # main: 600


def nightly_from(start: float, minutes: int = 30) -> str:
    """A nightly window (UTC) beginning at the minute that holds `start`."""
    first = time.gmtime(start)
    last = time.gmtime(start + minutes * 60)
    return f"{first.tm_hour:02}:{first.tm_min:02}-{last.tm_hour:02}:{last.tm_min:02}"


@pytest.mark.parametrize("kind", ["absolute", "nightly"])
async def test_a_key_minted_before_a_scheduled_window_expires_when_it_begins(
    start_proxy: ProxyFactory, upstream: FakeRealtime, tmp_path: Path, kind: str
) -> None:
    """The schedule is known in advance: a key minted a minute before the proxy goes
    offline must not open sessions with the provider for nine more minutes of it."""
    store_url = f"sqlite:///{tmp_path}/tokens.db"
    store = open_store(store_url)
    token, _ = create_token(store, "minting-before-the-night")
    # The next whole minute at least 60 s away: the window begins there.
    begins = (int(time.time()) // 60 + 2) * 60
    if kind == "absolute":
        raw: dict[str, str] = {
            "from": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(begins)),
            "to": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(begins + 3600)),
        }
    else:
        raw = {"nightly": nightly_from(begins)}
    ServiceStatus(store).set_windows([raw])
    assert parse_window(raw).covers(begins) and not parse_window(raw).covers(time.time())
    with start_proxy(ALLOW_EPHEMERAL_KEYS="true", TOKEN_STORE=store_url) as proxy:
        reply = httpx.post(
            f"{proxy.url}/v1/realtime/client_secrets",
            json={"session": SESSION},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert reply.status_code == 200, reply.text
    seconds = upstream.minted[-1]["body"]["expires_after"]["seconds"]
    assert seconds <= begins - time.time() + 1, seconds  # main: 600
