"""Settings for callers: sign-in by JWT, anonymous mode, client IP, rate limits, policy.

Parsed with the rest of the settings (core/config.py calls `parse_guard_settings`) and
kept in one frozen record, so the features (core/access/__init__.py) decide once, at
start, which checks a request pays for. This module imports nothing heavy: it runs at every cold start.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

from core.env import parse_bool, read_settings, setting
from core.records import Record
from core.stores import store_url_problem

# Asymmetric algorithms only: a JWKS holds public keys, and an HMAC algorithm would let
# anyone who reads the JWKS sign tokens (the HS/RS confusion attack).
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
DEFAULT_JWT_ALGORITHMS = ("RS256", "ES256")
CLIENT_IP_SOURCES = ("auto", "socket", "aws", "vercel", "cloud-run")


class GuardSettings(Record):
    """Who may call and how much: sign-in (JWT), anonymous callers, rate limits, caps."""

    # Sign-in: tokens of an identity provider, checked against its published keys.
    jwt_jwks_url: str = setting(
        "JWT_JWKS_URL",
        "",
        "The identity provider's JWKS (https://); signed-in callers then need no "
        "PROXY_ACCESS_TOKEN.",
        custom=True,
        shown_default="unset (sign-in off)",
    )
    jwt_issuer: str = setting(
        "JWT_ISSUER",
        "",
        "The `iss` the tokens must carry; required with JWT_JWKS_URL.",
        custom=True,
    )
    jwt_audiences: tuple[str, ...] = setting(
        "JWT_AUDIENCE", (), "Accepted `aud` values (comma list); unset = not checked.", custom=True
    )
    jwt_algorithms: tuple[str, ...] = setting(
        "JWT_ALGORITHMS",
        DEFAULT_JWT_ALGORITHMS,
        "Accepted signature algorithms (comma list, asymmetric only).",
        custom=True,
        shown_default=",".join(DEFAULT_JWT_ALGORITHMS),
    )
    jwt_leeway: float = setting(
        "JWT_LEEWAY_SECONDS",
        30.0,
        "Clock skew allowed on exp/nbf/iat.",
        low=0,
        high=600,
        unit="s",
    )
    jwt_cache_seconds: float = setting(
        "JWT_JWKS_CACHE_SECONDS",
        600.0,
        "How long fetched signing keys are kept.",
        low=0,
        high=86_400,
        unit="s",
    )
    # Public demos: callers without a credential, keyed by client IP.
    allow_anonymous: bool = setting(
        "ALLOW_ANONYMOUS",
        False,
        "Callers without a credential, counted per client IP; needs ALLOWED_ORIGINS (not *) "
        "and RATE_LIMIT_REQUESTS.",
    )
    client_ip_source: str = setting(
        "CLIENT_IP_SOURCE",
        "auto",
        "Where the client IP comes from: auto, socket, aws, vercel, cloud-run, xff:N "
        "(N trusted proxies) or header:NAME.",
        custom=True,
    )
    # Rate limits per caller (0 = off), over one fixed window.
    rate_limit_requests: int = setting(
        "RATE_LIMIT_REQUESTS",
        0,
        "Requests per caller per window; 0 = off.",
        low=1,
        high=10**9,
        zero_is_off=True,
    )
    rate_limit_tokens: int = setting(
        "RATE_LIMIT_TOKENS",
        0,
        "Tokens (input + output, metered) per caller per window; 0 = off.",
        low=1,
        high=10**12,
        zero_is_off=True,
    )
    rate_limit_window: float = setting(
        "RATE_LIMIT_WINDOW",
        60.0,
        "The fixed window both rate limits count over.",
        low=1,
        high=31 * 86_400,
        unit="s",
    )
    # repr=False: a redis:// URL carries the store's password.
    limit_store: str = setting(
        "LIMIT_STORE",
        "",
        "Where limit and budget counters live: sqlite:///path, redis://host, dynamodb://table, "
        "memory://.",
        custom=True,
        secret=True,
        shown_default="TOKEN_STORE, else memory:// (per process)",
    )
    limits_on_store_error: str = setting(
        "LIMITS_ON_STORE_ERROR",
        "closed",
        "While the limit store is unreachable: closed (503) or open (unmetered).",
        choices=("closed", "open"),
    )
    # Request policy.
    allowed_models: tuple[str, ...] = setting(
        "ALLOWED_MODELS",
        (),
        "Models callers may ask for (comma list, `*` wildcards); unset = any.",
        custom=True,
    )
    max_tokens_cap: int = setting(
        "MAX_TOKENS_CAP",
        0,
        "The most output tokens a request may ask for; 0 = no cap.",
        low=1,
        high=10**7,
        zero_is_off=True,
    )
    max_messages: int = setting(
        "MAX_MESSAGES",
        0,
        "The most messages a request may carry; 0 = no cap.",
        low=1,
        high=10**6,
        zero_is_off=True,
    )
    # Routes to objects stored in the provider account (files, stored responses, batches:
    # core/access/account_routes.py), which every caller shares. The default keeps them for
    # the operator's own tokens: a signed-in user or an anonymous visitor is one of many
    # people, as a scoped token's holder is.
    account_routes: str = setting(
        "ACCOUNT_ROUTES",
        "tokens",
        "Routes that read or change objects stored in the provider account every caller "
        "shares (files, stored responses and chat completions, batches, vector stores...): "
        "`tokens` allows them to proxy tokens (PROXY_ACCESS_TOKEN, an unscoped stored token) "
        "and refuses them (403) to signed-in users (JWT) and anonymous callers; `allow` "
        "allows them to those too; `refuse` to every caller. Scoped tokens are refused them "
        "always.",
        choices=("tokens", "allow", "refuse"),
    )

    @property
    def limits_on(self) -> bool:
        return self.rate_limit_requests > 0 or self.rate_limit_tokens > 0

    @property
    def policy_on(self) -> bool:
        return bool(self.allowed_models) or self.max_tokens_cap > 0 or self.max_messages > 0

    @property
    def enabled(self) -> bool:
        """True if any browser-facing check is configured; False costs a request nothing."""
        return bool(self.jwt_jwks_url) or self.allow_anonymous or self.limits_on or self.policy_on


def _split(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _check_client_ip_source(raw: str, problems: list[str]) -> None:
    kind, _, arg = raw.partition(":")
    if kind == "xff" and arg.isdigit() and int(arg) >= 1:
        return
    if kind == "header" and arg.strip():
        return
    if raw in CLIENT_IP_SOURCES:
        return
    problems.append(
        "CLIENT_IP_SOURCE must be one of auto, socket, aws, vercel, cloud-run, xff:N "
        f"(N trusted proxies) or header:NAME, got {raw!r}"
    )


def parse_guard_settings(
    env: Mapping[str, str],
    problems: list[str],
    allowed_origins: tuple[str, ...],
    token_store: str,
) -> GuardSettings:
    """Read the browser-facing settings, appending one sentence per problem."""
    jwks_url = env.get("JWT_JWKS_URL", "").strip()
    issuer = env.get("JWT_ISSUER", "").strip()
    audiences = _split(env.get("JWT_AUDIENCE", ""))
    algorithms = _split(env.get("JWT_ALGORITHMS", "")) or DEFAULT_JWT_ALGORITHMS
    if jwks_url:
        parts = urlsplit(jwks_url)
        local = parts.hostname in ("127.0.0.1", "localhost", "::1")
        if parts.scheme != "https" and not (parts.scheme == "http" and local):
            problems.append(
                f"JWT_JWKS_URL must be an https:// URL (http only on loopback), got {jwks_url!r}"
            )
        if not issuer:
            problems.append(
                "JWT_ISSUER is not set: a JWKS URL needs the issuer its tokens carry in `iss` "
                "(for example https://securetoken.google.com/<project-id>)"
            )
        refused = [a for a in algorithms if a not in ASYMMETRIC_ALGORITHMS]
        if refused:
            problems.append(
                f"JWT_ALGORITHMS may list only asymmetric algorithms "
                f"({', '.join(sorted(ASYMMETRIC_ALGORITHMS))}); refused: {', '.join(refused)}"
            )
    elif issuer or audiences:
        problems.append("JWT_ISSUER / JWT_AUDIENCE are set but JWT_JWKS_URL is not")

    limit_store = env.get("LIMIT_STORE", "").strip()
    if limit_store and (problem := store_url_problem("LIMIT_STORE", limit_store)):
        problems.append(problem)
    client_ip_source = env.get("CLIENT_IP_SOURCE", "").strip() or "auto"
    _check_client_ip_source(client_ip_source, problems)

    settings = read_settings(
        GuardSettings,
        env,
        problems,
        jwt_jwks_url=jwks_url,
        jwt_issuer=issuer,
        jwt_audiences=audiences,
        jwt_algorithms=algorithms,
        client_ip_source=client_ip_source,
        # Counters live beside the tokens unless told otherwise; memory only as a last resort.
        limit_store=limit_store or token_store or "memory://",
        allowed_models=_split(env.get("ALLOWED_MODELS", "")),
    )
    if settings.allow_anonymous:
        # A public endpoint with no origin list or no limit is an open key: refuse to start.
        if not allowed_origins or "*" in allowed_origins:
            problems.append(
                "ALLOW_ANONYMOUS=true needs ALLOWED_ORIGINS to list the pages allowed to call "
                "(not *)"
            )
        if settings.rate_limit_requests <= 0:
            problems.append(
                "ALLOW_ANONYMOUS=true needs RATE_LIMIT_REQUESTS (a per-IP limit) to be set"
            )
    return settings


def callers_need_no_shared_token(env: Mapping[str, str]) -> bool:
    """True when signed-in (JWT) or anonymous callers make PROXY_ACCESS_TOKEN optional."""
    anonymous = parse_bool(env, "ALLOW_ANONYMOUS", False, [])
    return anonymous or bool(env.get("JWT_JWKS_URL", "").strip())
