"""Settings for browser callers: sign-in by JWT, anonymous mode, client IP, limits, policy.

Parsed with the rest of the settings (core/config.py calls `parse_guard_settings`) and
kept in one frozen record, so `core.proxy.pipeline.build_pipeline` can decide once, at
start, which checks a request pays for. This module imports nothing heavy: it runs at every cold start.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from core.env import parse_bool, parse_choice, parse_float, parse_int
from core.stores import store_url_problem

# Asymmetric algorithms only: a JWKS holds public keys, and an HMAC algorithm would let
# anyone who reads the JWKS sign tokens (the HS/RS confusion attack).
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
DEFAULT_JWT_ALGORITHMS = ("RS256", "ES256")
CLIENT_IP_SOURCES = ("auto", "socket", "aws", "vercel", "cloud-run")


@dataclass(frozen=True)
class GuardSettings:
    # Sign-in: tokens of an identity provider, checked against its published keys.
    jwt_jwks_url: str = ""
    jwt_issuer: str = ""
    jwt_audiences: tuple[str, ...] = ()
    jwt_algorithms: tuple[str, ...] = DEFAULT_JWT_ALGORITHMS
    jwt_leeway: float = 30.0
    jwt_cache_seconds: float = 600.0
    # Public demos: callers without a credential, keyed by client IP.
    allow_anonymous: bool = False
    # Where the client IP comes from: auto, socket, aws, vercel, cloud-run, xff:N, header:NAME.
    client_ip_source: str = "auto"
    # Rate limits per caller (0 = off), over one fixed window.
    rate_limit_requests: int = 0
    rate_limit_tokens: int = 0
    rate_limit_window: float = 60.0
    # repr=False: a redis:// URL carries the store's password.
    limit_store: str = field(repr=False, default="")
    # What a request gets while the limit store is unreachable: "closed" (503) or "open".
    limits_on_store_error: str = "closed"
    # Request policy.
    allowed_models: tuple[str, ...] = ()
    max_tokens_cap: int = 0
    max_messages: int = 0
    # Spend caps in US dollars over a UTC calendar window ("day" or "month"); 0 = none.
    budget_per_caller_usd: float = 0.0
    budget_total_usd: float = 0.0
    budget_window: str = "day"
    # MODEL_PRICES, as given (JSON); parsed where the price table is built.
    model_prices: str = ""

    @property
    def limits_on(self) -> bool:
        return self.rate_limit_requests > 0 or self.rate_limit_tokens > 0

    @property
    def budgets_on(self) -> bool:
        return self.budget_per_caller_usd > 0 or self.budget_total_usd > 0

    @property
    def caps_on(self) -> bool:
        """Some rule counts tokens or dollars: the meter must read every reply."""
        return self.rate_limit_tokens > 0 or self.budgets_on

    @property
    def policy_on(self) -> bool:
        return bool(self.allowed_models) or self.max_tokens_cap > 0 or self.max_messages > 0

    @property
    def enabled(self) -> bool:
        """True if any browser-facing check is configured; False costs a request nothing."""
        return (
            bool(self.jwt_jwks_url)
            or self.allow_anonymous
            or self.limits_on
            or self.policy_on
            or self.budgets_on
        )


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

    requests = parse_int(env, "RATE_LIMIT_REQUESTS", 0, problems, allow_zero=True)
    tokens = parse_int(env, "RATE_LIMIT_TOKENS", 0, problems, allow_zero=True)
    window = parse_float(env, "RATE_LIMIT_WINDOW", 60.0, problems, allow_zero=True)
    if window < 1:
        problems.append("RATE_LIMIT_WINDOW must be at least 1 second")
        window = 60.0
    limit_store = env.get("LIMIT_STORE", "").strip()
    if limit_store and (problem := store_url_problem("LIMIT_STORE", limit_store)):
        problems.append(problem)
    on_error = env.get("LIMITS_ON_STORE_ERROR", "").strip().lower() or "closed"
    if on_error not in ("closed", "open"):
        problems.append(f"LIMITS_ON_STORE_ERROR must be closed or open, got {on_error!r}")
        on_error = "closed"

    anonymous = parse_bool(env, "ALLOW_ANONYMOUS", False, problems)
    if anonymous:
        # A public endpoint with no origin list or no limit is an open key: refuse to start.
        if not allowed_origins or "*" in allowed_origins:
            problems.append(
                "ALLOW_ANONYMOUS=true needs ALLOWED_ORIGINS to list the pages allowed to call "
                "(not *)"
            )
        if requests <= 0:
            problems.append(
                "ALLOW_ANONYMOUS=true needs RATE_LIMIT_REQUESTS (a per-IP limit) to be set"
            )

    model_prices = env.get("MODEL_PRICES", "").strip()
    if model_prices:
        from core.usage.prices import PriceError, parse_prices

        try:
            parse_prices(model_prices)
        except PriceError as exc:
            problems.append(str(exc))

    client_ip_source = env.get("CLIENT_IP_SOURCE", "").strip() or "auto"
    _check_client_ip_source(client_ip_source, problems)

    return GuardSettings(
        jwt_jwks_url=jwks_url,
        jwt_issuer=issuer,
        jwt_audiences=audiences,
        jwt_algorithms=algorithms,
        jwt_leeway=parse_float(env, "JWT_LEEWAY_SECONDS", 30.0, problems, allow_zero=True),
        jwt_cache_seconds=parse_float(
            env, "JWT_JWKS_CACHE_SECONDS", 600.0, problems, allow_zero=True
        ),
        allow_anonymous=anonymous,
        client_ip_source=client_ip_source,
        rate_limit_requests=requests,
        rate_limit_tokens=tokens,
        rate_limit_window=window,
        # Counters live beside the tokens unless told otherwise; memory only as a last resort.
        limit_store=limit_store or token_store or "memory://",
        limits_on_store_error=on_error,
        allowed_models=_split(env.get("ALLOWED_MODELS", "")),
        max_tokens_cap=parse_int(env, "MAX_TOKENS_CAP", 0, problems, allow_zero=True),
        max_messages=parse_int(env, "MAX_MESSAGES", 0, problems, allow_zero=True),
        budget_per_caller_usd=parse_float(
            env, "BUDGET_PER_CALLER_USD", 0.0, problems, allow_zero=True
        ),
        budget_total_usd=parse_float(env, "BUDGET_TOTAL_USD", 0.0, problems, allow_zero=True),
        budget_window=parse_choice(env, "BUDGET_WINDOW", ("day", "month"), problems),
        model_prices=model_prices,
    )


def callers_need_no_shared_token(env: Mapping[str, str]) -> bool:
    """True when signed-in (JWT) or anonymous callers make PROXY_ACCESS_TOKEN optional."""
    anonymous = parse_bool(env, "ALLOW_ANONYMOUS", False, [])
    return anonymous or bool(env.get("JWT_JWKS_URL", "").strip())
