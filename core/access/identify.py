"""The identify stage: who is calling, and under which identity limits and budgets count.

In order: a JWT from the identity provider (JWT_JWKS_URL), no credential at all
(ALLOW_ANONYMOUS, from an allowed origin only), or the usual proxy token (the shared
PROXY_ACCESS_TOKEN or a stored per-caller token, core/access/credentials.py).

Limits and budgets count a stored token by its id and a signed-in user by `sub`. A shared
token may sit in every visitor's browser, so it and anonymous callers count per client IP.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.caller import SHARED_TOKEN_CALLER, Caller
from core.digest import sha256_hex
from core.errors import Forbidden

if TYPE_CHECKING:
    from core.access.client_ip import ClientIPRule
    from core.access.credentials import TokenCheck
    from core.access.jwt_auth import JWTVerifier
    from core.config import Settings
    from core.request import ProxyRequest

ANONYMOUS_CALLER = Caller("anonymous", end_user=True)


# The longest `sub` a caller's label holds whole; a longer one is cut and a digest added.
_SUB_CHARS = 200


def user_label(sub: str) -> str:
    """A signed-in user's label, the identity their limits, budget, cache entries and usage
    are kept under: `user:<sub>`. A long subject (GitHub Actions' runs past 200 characters
    with a long branch name) keeps its start, for logs, and a digest of the whole: cut
    alone, two users whose subjects began alike were one caller."""
    if len(sub) <= _SUB_CHARS:
        return "user:" + sub
    return f"user:{sub[: _SUB_CHARS - 33]}~{sha256_hex(sub, 32)}"


class Identify:
    def __init__(
        self,
        token_check: TokenCheck,
        client_ip: ClientIPRule | None = None,
        jwt: JWTVerifier | None = None,
        anonymous_origins: frozenset[bytes] | None = None,
    ) -> None:
        self.token_check = token_check
        self.client_ip = client_ip
        self.jwt = jwt
        # None: anonymous calls are off. Otherwise the pages allowed to make them.
        self.anonymous_origins = anonymous_origins

    async def caller(self, request: ProxyRequest) -> Caller:
        credential = request.credential
        if credential is not None and self.jwt is not None:
            from core.access.jwt_auth import looks_like_jwt

            if looks_like_jwt(credential):
                claims = await self.jwt.verify(credential)
                # `exp` is required and checked to be a number (core/access/jwt_auth.py).
                return Caller(
                    user_label(claims["sub"]), expires_at=float(claims["exp"]), end_user=True
                )
        if credential is None and self.anonymous_origins is not None:
            # CORS alone only stops a page from *reading* the reply; a request from another
            # site's page, or none, would still spend the key. Anonymous calls need a page
            # on the list.
            if request.origin is None or request.origin not in self.anonymous_origins:
                raise Forbidden(
                    "Calls without a credential are accepted only from the pages listed in "
                    "ALLOWED_ORIGINS."
                )
            return ANONYMOUS_CALLER
        return await self.token_check.identify(credential)

    def counted_as(self, request: ProxyRequest, caller: Caller) -> str:
        """The identity a caller's limits, budget and usage are kept under."""
        if caller.record is not None:
            return "token:" + caller.record.id
        if caller is SHARED_TOKEN_CALLER or caller is ANONYMOUS_CALLER:
            if self.client_ip is None:
                return "shared" if caller is SHARED_TOKEN_CALLER else "anonymous"
            return "ip:" + self.client_ip(request.scope)
        return caller.label  # "user:<sub>"


def build_identify(settings: Settings, token_check: TokenCheck) -> Identify:
    """The identify stage of this deployment: JWT, anonymous calls and counting per client
    IP only where their settings ask for them."""
    config = settings.guard
    jwt = None
    if config.jwt_jwks_url:
        from core.access.jwt_auth import verifier_from_settings  # PyJWT loads only here

        jwt = verifier_from_settings(
            config.jwt_jwks_url,
            config.jwt_issuer,
            config.jwt_audiences,
            config.jwt_algorithms,
            config.jwt_leeway,
            config.jwt_cache_seconds,
        )
    anonymous = None
    if config.allow_anonymous:
        anonymous = frozenset(o.encode() for o in settings.allowed_origins if o != "*")
    # Shared-token and anonymous callers are counted per client IP only where something
    # counts them, or keeps cache entries per caller.
    counts = config.limits_on or settings.usage.budgets_on or settings.cache.per_caller
    client_ip = None
    if counts:
        from core.access.client_ip import client_ip_rule

        client_ip = client_ip_rule(config.client_ip_source)
    return Identify(token_check, client_ip, jwt, anonymous)
