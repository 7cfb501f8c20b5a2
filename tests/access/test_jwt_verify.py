"""JWT verification against a JWKS on a loopback server: keys made here, tokens minted
here, forgeries made by hand. Every refusal is an Unauthorized the caller can read."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from core.access.jwt_auth import IdentityKeysUnavailable, JWKSCache, JWTVerifier, looks_like_jwt
from core.errors import Unauthorized
from tests.access.jwt_keys import (
    AUDIENCE,
    ISSUER,
    JWKSServer,
    KeyPair,
    claims,
    ec_key,
    forge,
    jwks_served,
    mint,
    rsa_key,
)
from tests.support.servers import RunningServer


@pytest.fixture(scope="module")
def rsa_pair() -> KeyPair:
    return rsa_key("rsa-1")


@pytest.fixture(scope="module")
def ec_pair() -> KeyPair:
    return ec_key("ec-1")


@pytest.fixture
def provider(rsa_pair: KeyPair, ec_pair: KeyPair) -> Iterator[tuple[JWKSServer, RunningServer]]:
    server = JWKSServer(keys=[rsa_pair.jwk(), ec_pair.jwk()])
    with jwks_served(server) as running:
        yield server, running


def verifier(
    running: RunningServer, *, audiences: tuple[str, ...] = (AUDIENCE,), refetch: float = 30.0
) -> JWTVerifier:
    return JWTVerifier(
        JWKSCache(f"{running.url}/.well-known/jwks.json", refetch_interval=refetch),
        issuer=ISSUER,
        audiences=audiences,
        algorithms=("RS256", "ES256"),
        leeway=5,
    )


async def refused(check: JWTVerifier, token: str) -> str:
    with pytest.raises(Unauthorized) as caught:
        await check.verify(token.encode())
    return caught.value.message


async def test_rs256_and_es256_tokens_are_accepted(provider, rsa_pair, ec_pair) -> None:
    _, running = provider
    check = verifier(running)
    assert (await check.verify(mint(rsa_pair).encode()))["sub"] == "user-alice"
    assert (await check.verify(mint(ec_pair, sub="user-bob").encode()))["sub"] == "user-bob"


async def test_keys_are_cached_between_requests(provider, rsa_pair) -> None:
    server, running = provider
    check = verifier(running)
    for _ in range(5):
        await check.verify(mint(rsa_pair).encode())
    assert server.fetches == 1


async def test_expired_and_not_yet_valid_tokens_are_refused(provider, rsa_pair) -> None:
    _, running = provider
    check = verifier(running)
    now = int(time.time())
    assert "expired" in await refused(check, mint(rsa_pair, iat=now - 700, exp=now - 60))
    assert "not valid yet" in await refused(check, mint(rsa_pair, nbf=now + 120))
    # Within the leeway (5 s) a slightly-behind clock still accepts.
    assert await check.verify(mint(rsa_pair, exp=now - 2).encode())


async def test_a_token_without_exp_is_refused(provider, rsa_pair) -> None:
    _, running = provider
    assert "'exp'" in await refused(verifier(running), mint(rsa_pair, exp=None))


async def test_issuer_must_match(provider, rsa_pair) -> None:
    _, running = provider
    message = await refused(verifier(running), mint(rsa_pair, iss="https://evil.example.test/"))
    assert "another issuer" in message


async def test_audience_must_match_when_configured(provider, rsa_pair) -> None:
    _, running = provider
    check = verifier(running)
    assert "audience" in await refused(check, mint(rsa_pair, aud="some-other-app"))
    # A list that includes ours is fine (Auth0 access tokens with the userinfo audience).
    assert await check.verify(mint(rsa_pair, aud=["https://x.test/userinfo", AUDIENCE]).encode())
    # Cognito access tokens: no aud, the app client in client_id.
    assert await check.verify(mint(rsa_pair, aud=None, client_id=AUDIENCE).encode())
    assert "audience" in await refused(check, mint(rsa_pair, aud=None, client_id="other"))
    # Clerk session tokens: no aud, the authorised party in azp.
    assert await check.verify(mint(rsa_pair, aud=None, azp=AUDIENCE).encode())
    assert "audience" in await refused(check, mint(rsa_pair, aud=None))
    # Without JWT_AUDIENCE any audience passes (the issuer still has to match).
    assert await verifier(running, audiences=()).verify(mint(rsa_pair, aud="x").encode())


async def test_alg_none_is_refused(provider, rsa_pair) -> None:
    _, running = provider
    token = forge({"alg": "none", "typ": "JWT", "kid": rsa_pair.kid}, claims(), None)
    assert "algorithm 'none' is not accepted" in await refused(verifier(running), token)


async def test_hmac_signed_with_the_public_key_is_refused(provider, rsa_pair) -> None:
    """The HS/RS confusion attack: sign HS256 using the RSA public key as the secret."""
    _, running = provider
    token = forge(
        {"alg": "HS256", "typ": "JWT", "kid": rsa_pair.kid}, claims(), rsa_pair.public_pem()
    )
    assert "algorithm 'HS256' is not accepted" in await refused(verifier(running), token)


async def test_a_token_claiming_rs256_with_an_ec_key_id_is_refused(provider, ec_pair) -> None:
    _, running = provider
    other = rsa_key(ec_pair.kid)  # same kid as the published EC key, different key
    message = await refused(verifier(running), mint(other))
    assert "algorithm" in message or "signature" in message


async def test_a_tampered_payload_fails_the_signature(provider, rsa_pair) -> None:
    _, running = provider
    header, _, signature = mint(rsa_pair).split(".")
    evil = forge({"alg": "RS256"}, claims(sub="admin"), None).split(".")[1]
    assert "signature" in await refused(verifier(running), f"{header}.{evil}.{signature}")


async def test_garbage_is_malformed_not_a_crash(provider) -> None:
    _, running = provider
    assert "malformed" in await refused(verifier(running), "eyJhbGciOi.not-base64!.x")


async def test_rotation_refetches_once_for_a_new_key_id(provider, rsa_pair) -> None:
    server, running = provider
    check = verifier(running, refetch=0.0)
    await check.verify(mint(rsa_pair).encode())
    assert server.fetches == 1
    # The provider rotates: a new key appears and the old one is withdrawn.
    new = rsa_key("rsa-2")
    server.keys = [new.jwk()]
    assert (await check.verify(mint(new).encode()))["sub"] == "user-alice"
    assert server.fetches == 2
    # The withdrawn key no longer verifies once the set was refreshed.
    assert "does not publish" in await refused(check, mint(rsa_pair))


async def test_unknown_key_ids_refetch_at_most_once_per_interval(provider, rsa_pair) -> None:
    server, running = provider
    check = verifier(running, refetch=30.0)
    await check.verify(mint(rsa_pair).encode())
    stranger = rsa_key("made-up")
    for _ in range(20):
        assert "does not publish" in await refused(check, mint(stranger))
    # The first fetch counts as the recent attempt: a flood of unknown kids adds none.
    assert server.fetches == 1


async def test_provider_down_before_any_fetch_is_a_503(rsa_pair) -> None:
    server = JWKSServer(keys=[], status=503)
    with jwks_served(server) as running:
        check = verifier(running)
        with pytest.raises(IdentityKeysUnavailable):
            await check.verify(mint(rsa_pair).encode())


async def test_provider_down_later_keeps_the_cached_keys(provider, rsa_pair) -> None:
    server, running = provider
    keys = JWKSCache(f"{running.url}/jwks", cache_seconds=0.0, refetch_interval=0.0)
    check = JWTVerifier(keys, issuer=ISSUER, audiences=(AUDIENCE,))
    await check.verify(mint(rsa_pair).encode())
    server.status = 500
    # The cache is stale (0 s) and the refresh fails: the keys we had still verify.
    assert await check.verify(mint(rsa_pair).encode())
    assert server.fetches >= 2


async def test_symmetric_keys_in_a_jwks_are_ignored(rsa_pair) -> None:
    secret = b"shared-secret-in-a-public-document"
    import base64

    oct_key = {"kty": "oct", "kid": "hmac", "k": base64.urlsafe_b64encode(secret).decode()}
    server = JWKSServer(keys=[oct_key, rsa_pair.jwk()])
    with jwks_served(server) as running:
        check = JWTVerifier(
            JWKSCache(f"{running.url}/jwks"),
            issuer=ISSUER,
            algorithms=("RS256", "ES256"),
        )
        token = forge({"alg": "RS256", "kid": "hmac"}, claims(), secret)
        assert "does not publish" in await refused(check, token)


def test_only_compact_jws_looks_like_a_jwt(rsa_pair) -> None:
    assert looks_like_jwt(mint(rsa_pair).encode())
    assert not looks_like_jwt(b"llmp_abcdefghijklmnop")
    assert not looks_like_jwt(b"eyJonly.one-dot")


def whitespace_jwks(chunk: bytes, count: int, pause: float):  # type: ignore[no-untyped-def]
    """An ASGI JWKS endpoint that answers 200 and then sends `chunk` (whitespace, which JSON
    allows without end) `count` times, `pause` seconds apart."""
    import asyncio

    async def app(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(count):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await asyncio.sleep(pause)
        await send({"type": "http.response.body", "body": b""})

    return app


async def test_a_jwks_fetch_that_drips_forever_is_cut_by_the_timeout(
    monkeypatch: pytest.MonkeyPatch, rsa_pair
) -> None:
    """JWKS_TIMEOUT bounds the whole fetch, not each read: a JWKS endpoint that sends a byte
    now and then (JSON allows endless whitespace) would otherwise hold the fetch, and every
    sign-in waiting on its lock, for as long as it likes."""

    from core.access import jwt_auth

    monkeypatch.setattr(jwt_auth, "JWKS_TIMEOUT", 0.5)

    # 10 s at most, a byte every 0.1 s.
    with jwks_served(whitespace_jwks(b" ", 100, 0.1)) as running:  # type: ignore[arg-type]
        check = verifier(running)
        started = time.monotonic()
        with pytest.raises(IdentityKeysUnavailable):
            await check.verify(mint(rsa_pair).encode())
        assert time.monotonic() - started < 3


async def test_a_jwks_larger_than_the_cap_is_not_read_to_its_end(
    monkeypatch: pytest.MonkeyPatch, rsa_pair
) -> None:
    """MAX_JWKS_BYTES stops the reading, not only the parsing: an endless JWKS body is
    dropped once it passes the cap instead of being held in memory whole."""

    from core.access import jwt_auth

    monkeypatch.setattr(jwt_auth, "MAX_JWKS_BYTES", 1024)

    endless = whitespace_jwks(b" " * 65536, 256, 0.005)  # 16 MB at most

    with jwks_served(endless) as running:  # type: ignore[arg-type]
        check = verifier(running)
        started = time.monotonic()
        with pytest.raises(IdentityKeysUnavailable):
            await check.verify(mint(rsa_pair).encode())
        # The whole 16 MB take over a second to send; the cap is passed in the first chunk.
        assert time.monotonic() - started < 1
