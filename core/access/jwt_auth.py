"""Signed-in callers: verify an identity provider's JWT against its published keys (JWKS).

Works with the ID/access tokens of Amazon Cognito, Auth0, Firebase Auth, Supabase
(asymmetric signing keys), Clerk and Tencent CloudBase: each publishes a JWKS URL and puts
its issuer in `iss`. Checked: the signature with a key from the JWKS, the algorithm
against JWT_ALGORITHMS (asymmetric only: no `none`, no HMAC, so a public key can never be
used as an HMAC secret), `exp` and `nbf` (with JWT_LEEWAY_SECONDS of clock skew), `iss`,
and `aud` when JWT_AUDIENCE is set (Cognito access tokens carry the app client in
`client_id`, Clerk's in `azp`; those stand in when a token has no `aud`).

Keys are cached for JWT_JWKS_CACHE_SECONDS. A token signed with a key id the cache does not
know (the provider rotated its keys) makes the proxy fetch the JWKS again, at most once
per `refetch_interval`, so a flood of made-up key ids cannot turn the proxy into a
hammer on the provider. PyJWT is imported only when this module is, i.e. only when
JWT_JWKS_URL is set.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt
from jwt import PyJWK

from core.errors import ProxyError, Unauthorized

logger = logging.getLogger("llm_proxy")

MAX_JWKS_BYTES = 1024 * 1024
JWKS_TIMEOUT = 5.0


class IdentityKeysUnavailable(ProxyError):
    """The identity provider's keys could not be fetched and none are cached."""

    status = 503
    code = "identity_keys_unavailable"
    openai_type = "server_error"


def looks_like_jwt(credential: bytes) -> bool:
    """A JWS in compact form: base64url JSON header (`eyJ`), two dots."""
    return credential.startswith(b"eyJ") and credential.count(b".") == 2


class JWKSCache:
    """The provider's public keys by key id, fetched lazily and refreshed on rotation."""

    def __init__(
        self,
        url: str,
        *,
        cache_seconds: float = 600.0,
        refetch_interval: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.cache_seconds = cache_seconds
        self.refetch_interval = refetch_interval
        self.clock = clock
        self._keys: dict[str, dict[str, Any]] = {}
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._lock = asyncio.Lock()
        self.fetches = 0  # for tests and logs: how often the provider was asked

    async def _fetch(self) -> None:
        self._attempted_at = self.clock()
        self.fetches += 1
        try:
            # The whole fetch in JWKS_TIMEOUT (httpx's timeout bounds each read only: a
            # body sent a byte at a time would hold the lock every sign-in waits on).
            content = await asyncio.wait_for(self._download(), JWKS_TIMEOUT)
            document = json.loads(content)
            keys = document.get("keys") if isinstance(document, dict) else None
            if not isinstance(keys, list):
                raise ValueError("no 'keys' list")
        except (httpx.HTTPError, ValueError, TimeoutError) as exc:
            # Keep the keys we have: a provider outage must not sign everyone out.
            logger.error("JWKS fetch failed: %s", type(exc).__name__)
            return
        fresh: dict[str, dict[str, Any]] = {}
        for key in keys:
            if not isinstance(key, dict) or key.get("kty") not in ("RSA", "EC", "OKP"):
                continue  # symmetric ("oct") keys have no place in a public key set
            if key.get("use", "sig") != "sig":
                continue
            fresh[str(key.get("kid", ""))] = key
        self._keys = fresh
        self._fetched_at = self.clock()

    async def _download(self) -> bytes:
        """The JWKS body, read only up to MAX_JWKS_BYTES: a larger one is refused as soon
        as it passes the cap, never held whole."""
        async with (
            httpx.AsyncClient(timeout=JWKS_TIMEOUT, follow_redirects=False) as client,
            client.stream("GET", self.url, headers={"accept": "application/json"}) as response,
        ):
            if response.status_code != 200:
                raise ValueError(f"status {response.status_code}")
            content = bytearray()
            async for chunk in response.aiter_bytes():
                content += chunk
                if len(content) > MAX_JWKS_BYTES:
                    raise ValueError("JWKS too large")
            return bytes(content)

    async def key(self, kid: str) -> dict[str, Any] | None:
        """The JWK for `kid` ("" for a token without one), fetching when stale or unknown."""
        now = self.clock()
        stale = self._fetched_at is None or now - self._fetched_at > self.cache_seconds
        if not stale and kid in self._keys:
            return self._keys[kid]
        async with self._lock:
            now = self.clock()
            stale = self._fetched_at is None or now - self._fetched_at > self.cache_seconds
            recently = (
                self._attempted_at is not None and now - self._attempted_at < self.refetch_interval
            )
            if (stale or kid not in self._keys) and not recently:
                await self._fetch()
            if self._fetched_at is None:
                raise IdentityKeysUnavailable(
                    "The sign-in provider's keys could not be fetched; try again shortly."
                )
        found = self._keys.get(kid)
        if found is None and not kid and len(self._keys) == 1:
            return next(iter(self._keys.values()))  # a token without kid, a set of one key
        return found


class JWTVerifier:
    def __init__(
        self,
        keys: JWKSCache,
        *,
        issuer: str,
        audiences: tuple[str, ...] = (),
        algorithms: tuple[str, ...] = ("RS256", "ES256"),
        leeway: float = 30.0,
    ) -> None:
        self.keys = keys
        self.issuer = issuer
        self.audiences = frozenset(audiences)
        self.algorithms = list(algorithms)
        self.leeway = leeway
        # (kid, alg) -> (the JWK, its key object): building one parses the JWK, so once.
        self._built: dict[tuple[str, str], tuple[dict[str, Any], PyJWK]] = {}

    async def verify(self, token: bytes) -> dict[str, Any]:
        """The verified claims of `token`; Unauthorized with the reason otherwise."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthorized("The sign-in token is malformed.") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise Unauthorized(
                f"The sign-in token's algorithm {str(alg)[:20]!r} is not accepted "
                f"(accepted: {', '.join(self.algorithms)})."
            )
        kid = header.get("kid", "")
        if not isinstance(kid, str):
            raise Unauthorized("The sign-in token's key id is malformed.")
        jwk = await self.keys.key(kid)
        if jwk is None:
            raise Unauthorized(
                "The sign-in token was signed with a key the provider does not publish."
            )
        key = self._key_object(kid, alg, jwk)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=self.algorithms,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "iss", "sub"], "verify_aud": False},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("The sign-in token has expired; sign in again.") from None
        except jwt.ImmatureSignatureError:
            raise Unauthorized(
                "The sign-in token is not valid yet (nbf/iat in the future)."
            ) from None
        except jwt.InvalidIssuerError:
            raise Unauthorized("The sign-in token was issued by another issuer.") from None
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthorized(f"The sign-in token has no '{exc.claim}' claim.") from None
        except jwt.InvalidAlgorithmError:
            raise Unauthorized("The sign-in token's algorithm does not match its key.") from None
        except jwt.InvalidSignatureError:
            raise Unauthorized("The sign-in token's signature is not valid.") from None
        except jwt.PyJWTError:
            raise Unauthorized("The sign-in token is not valid.") from None
        if self.audiences and not self._audience_ok(claims):
            raise Unauthorized("The sign-in token is meant for another audience (JWT_AUDIENCE).")
        if not isinstance(claims.get("sub"), str) or not claims["sub"]:
            raise Unauthorized("The sign-in token has no subject ('sub').")
        return claims

    def _audience_ok(self, claims: dict[str, Any]) -> bool:
        if "aud" in claims:
            aud = claims["aud"]
            values = aud if isinstance(aud, list) else [aud]
            return any(isinstance(v, str) and v in self.audiences for v in values)
        # Cognito access tokens name the app client in client_id; Clerk in azp.
        for name in ("client_id", "azp"):
            value = claims.get(name)
            if isinstance(value, str):
                return value in self.audiences
        return False

    def _key_object(self, kid: str, alg: str, jwk: dict[str, Any]) -> PyJWK:
        # A JWK that names its algorithm is used with that one only; otherwise with the
        # token's (already on the allowlist); PyJWT refuses a key of the wrong type.
        use_alg = str(jwk.get("alg") or alg)
        cached = self._built.get((kid, use_alg))
        # `is`: a refreshed JWKS brings new dicts, so a rotated key is never served stale.
        if cached is not None and cached[0] is jwk:
            return cached[1]
        try:
            built = PyJWK(jwk, algorithm=use_alg)
        except jwt.PyJWTError:
            raise Unauthorized("The sign-in token's key cannot verify this algorithm.") from None
        if len(self._built) > 64:
            self._built.clear()
        self._built[(kid, use_alg)] = (jwk, built)
        return built


def verifier_from_settings(
    jwks_url: str,
    issuer: str,
    audiences: tuple[str, ...],
    algorithms: tuple[str, ...],
    leeway: float,
    cache_seconds: float,
) -> JWTVerifier:
    return JWTVerifier(
        JWKSCache(jwks_url, cache_seconds=cache_seconds),
        issuer=issuer,
        audiences=audiences,
        algorithms=algorithms,
        leeway=leeway,
    )
