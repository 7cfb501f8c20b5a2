"""Settings, read once from the environment, with one clear line per problem."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from core.access.guard_settings import (
    GuardSettings,
    callers_need_no_shared_token,
    parse_guard_settings,
)
from core.cache.settings import CacheSettings, parse_cache_settings
from core.digest import sha256
from core.env import parse_bool, parse_choice, parse_float, parse_int
from core.providers import (
    CATALOGUE,
    Provider,
    build_provider_table,
    enabled_providers,
    provider_env_names,
    split_upstreams,
)
from core.proxy.model_routes import RoutingSettings, parse_routing_settings
from core.server import ServerLimits, parse_server_limits
from core.stores import store_url_problem
from core.stores.calls import DEFAULT_STORE_TIMEOUT

MIN_TOKEN_LENGTH = 16
MIN_ADMIN_TOKEN_LENGTH = 32
MAX_TOKEN_CACHE_SECONDS = 5.0
DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024  # above OpenAI's 25 MB audio upload limit
# JSON is decoded into objects several times its size: a lower bound for JSON bodies keeps
# one request's memory a small multiple of what it sent (uploads keep the larger limit).
DEFAULT_MAX_JSON_BYTES = 10 * 1024 * 1024


class ConfigError(Exception):
    """The environment does not describe a usable proxy; `problems` names each variable."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


def hash_token(token: str) -> bytes:
    """Tokens are kept and compared only as SHA-256 digests."""
    return sha256(token)


@dataclass(frozen=True)
class Settings:
    upstream_base_url: str
    # repr=False: a Settings object printed in a traceback or log must not leak the key.
    upstream_api_key: str = field(repr=False)
    access_token_hashes: tuple[bytes, ...] = field(repr=False, default=())
    allowed_origins: tuple[str, ...] = ()
    connect_timeout: float = 10.0
    # Bounds the wait for the first byte and every gap between bytes; there is no total
    # timeout, so a long generation that keeps producing is never cut.
    read_timeout: float = 300.0
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_json_bytes: int = DEFAULT_MAX_JSON_BYTES
    access_log: bool = True
    # "auto" picks aiohttp under httpx for long-running servers, httpx's own otherwise.
    transport: str = "auto"
    # What to do with the upstream stream when the caller leaves: cancel (default) or drain.
    on_disconnect: str = "cancel"
    # Provider routes: keys (a comma list rotates) and origin overrides, by env prefix
    # (`ANTHROPIC` for ANTHROPIC_API_KEY / ANTHROPIC_UPSTREAM); see core/providers.py.
    provider_keys: Mapping[str, tuple[str, ...]] = field(repr=False, default_factory=dict)
    provider_upstreams: Mapping[str, str] = field(default_factory=dict)
    # Per-caller tokens: "" (only PROXY_ACCESS_TOKEN), sqlite:///path, dynamodb://table,
    # redis://host or rediss://host, memory://. How long a looked-up token is trusted
    # before the store is asked again: the most a revocation can lag.
    token_store: str = field(repr=False, default="")
    token_cache_seconds: float = 2.0
    # The longest a request waits for the token or limit store before a 503.
    store_timeout: float = DEFAULT_STORE_TIMEOUT
    # What a connection may hold before authentication; servers only. Validated here with
    # the rest, and read from the same variables by core/server.py when it starts a server.
    server: ServerLimits = field(default_factory=ServerLimits)
    # Browser callers: JWT sign-in, anonymous mode, client IP, rate limits, request policy
    # (core/access/guard_settings.py); all off by default.
    guard: GuardSettings = field(default_factory=GuardSettings)
    # The usage ledger's store (core/usage/ledger.py): USAGE_STORE, else LIMIT_STORE, else
    # TOKEN_STORE, else memory://.
    usage_store: str = field(repr=False, default="memory://")
    # The dashboard at /admin (core/admin): off unless ADMIN_TOKEN is set.
    admin_token: str = field(repr=False, default="")
    # The response cache (core/cache); off unless CACHE_URL is set.
    cache: CacheSettings = field(default_factory=CacheSettings)
    # Realtime (core/realtime): the longest a proxied WebSocket session lasts; the tokens it
    # reserves up front while a token limit or budget is on (settled to the metered figure);
    # whether the ephemeral-key routes may mint keys, and what each key is charged.
    realtime_max_seconds: float = 1800.0
    realtime_reserve_tokens: int = 20_000
    allow_ephemeral_keys: bool = False
    ephemeral_key_tokens: int = 20_000
    # Gemini streams that end without a finishReason are continued (core/proxy/recovery.py),
    # at most this many times per request.
    gemini_stream_recovery: bool = False
    gemini_stream_recovery_attempts: int = 2
    # MODEL_ROUTES and MODEL_FALLBACKS (core/proxy/model_routes.py); off unless set.
    routing: RoutingSettings = field(default_factory=RoutingSettings)

    def providers(self) -> tuple[Provider, ...]:
        """Every route this deployment serves (core/providers.py)."""
        return build_provider_table(
            self.provider_keys,
            self.provider_upstreams,
            self.upstream_base_url,
            self.upstream_api_key,
        )


def check_base_url(name: str, raw: str) -> str | None:
    """Return a problem sentence if `raw` is not an absolute http(s) URL without query."""
    parts = urlsplit(raw)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        return f"{name} must be an absolute http(s) URL like https://api.openai.com/v1, got {raw!r}"
    if parts.query or parts.fragment or parts.username or parts.password:
        return f"{name} must not contain a query, fragment or credentials"
    return None


def check_base_urls(name: str, raw: str) -> list[str]:
    """Problems with each URL of a comma list of upstream targets (none for an empty list)."""
    urls = split_upstreams(raw)
    found = [problem for url in urls if (problem := check_base_url(name, url))]
    if len(set(urls)) != len(urls):
        found.append(f"{name} names the same target twice")
    return found


def _parse_tokens(
    env: Mapping[str, str], problems: list[str], *, required: bool = True
) -> tuple[bytes, ...]:
    raw = env.get("PROXY_ACCESS_TOKEN", "")
    tokens = [t.strip() for t in raw.split(",") if t.strip()]
    if not tokens and required:
        problems.append(
            "PROXY_ACCESS_TOKEN is not set: callers need a credential "
            "(a comma-separated list allows rotation)"
        )
    for index, token in enumerate(tokens, start=1):
        # Never echo the token itself: the message may reach a log.
        if len(token) < MIN_TOKEN_LENGTH:
            problems.append(
                f"PROXY_ACCESS_TOKEN entry {index} is shorter than {MIN_TOKEN_LENGTH} characters"
            )
    return tuple(hash_token(t) for t in tokens)


def _parse_providers(
    env: Mapping[str, str], problems: list[str]
) -> tuple[dict[str, tuple[str, ...]], dict[str, str]]:
    """Keys and upstream overrides of every catalogue provider the environment mentions."""
    keys: dict[str, tuple[str, ...]] = {}
    upstreams: dict[str, str] = {}
    for record in CATALOGUE:
        key_name, upstream_name = provider_env_names(record)
        if record.env in keys or record.env in upstreams:
            continue  # two routes of one provider (Gemini) share its variables
        record_keys = tuple(k.strip() for k in env.get(key_name, "").split(",") if k.strip())
        if any(ch in k for k in record_keys for ch in "\r\n"):
            problems.append(f"{key_name} contains a line break")
        # A comma list: several targets, spread round robin, failing over (core/providers.py).
        upstream = ",".join(split_upstreams(env.get(upstream_name, "")))
        problems.extend(check_base_urls(upstream_name, upstream))
        if record_keys and not upstream and not record.upstream:
            problems.append(
                f"{upstream_name} is not set: {record.name} has no shared host, "
                f"so {key_name} needs it (for example https://<resource>.openai.azure.com)"
            )
        if record_keys:
            keys[record.env] = record_keys
        if upstream:
            upstreams[record.env] = upstream
    return keys, upstreams


def _parse_token_store(env: Mapping[str, str], problems: list[str]) -> str:
    raw = env.get("TOKEN_STORE", "").strip()
    if raw == "sqlite":
        return "sqlite:///llm-proxy-tokens.db"
    if raw and (problem := store_url_problem("TOKEN_STORE", raw)):
        problems.append(problem)
    return raw


def usage_store_url(environ: Mapping[str, str] | None = None) -> str:
    """USAGE_STORE, else LIMIT_STORE, else TOKEN_STORE, else memory:// (per process)."""
    env = os.environ if environ is None else environ
    for name in ("USAGE_STORE", "LIMIT_STORE", "TOKEN_STORE"):
        value = env.get(name, "").strip()
        if value:
            return "sqlite:///llm-proxy-tokens.db" if value == "sqlite" else value
    return "memory://"


def _parse_admin(env: Mapping[str, str], problems: list[str]) -> tuple[str, str]:
    """ADMIN_TOKEN (the dashboard's credential) and the usage ledger's store URL."""
    admin_token = env.get("ADMIN_TOKEN", "").strip()
    if admin_token and len(admin_token) < MIN_ADMIN_TOKEN_LENGTH:
        problems.append(
            f"ADMIN_TOKEN is shorter than {MIN_ADMIN_TOKEN_LENGTH} characters: the dashboard "
            "stays off until it is long enough (python3 -c 'import secrets; "
            "print(secrets.token_urlsafe(32))')"
        )
    usage_store = usage_store_url(env)
    if env.get("USAGE_STORE", "").strip() and (
        problem := store_url_problem("USAGE_STORE", usage_store)
    ):
        problems.append(problem)
    return admin_token, usage_store


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from the environment or raise ConfigError listing every problem."""
    env = os.environ if environ is None else environ
    problems: list[str] = []

    provider_keys, provider_upstreams = _parse_providers(env, problems)
    # The default route is optional once a provider route serves something.
    default_required = not provider_keys and not provider_upstreams
    base_url = ",".join(split_upstreams(env.get("UPSTREAM_BASE_URL", "")))
    if not base_url:
        if default_required or env.get("UPSTREAM_API_KEY", "").strip():
            problems.append("UPSTREAM_BASE_URL is not set (for example https://api.openai.com/v1)")
    else:
        problems.extend(check_base_urls("UPSTREAM_BASE_URL", base_url))

    api_key = env.get("UPSTREAM_API_KEY", "").strip()
    if not api_key and (default_required or base_url):
        problems.append("UPSTREAM_API_KEY is not set: the proxy has no key to send upstream")
    elif any(ch in api_key for ch in "\r\n"):
        problems.append("UPSTREAM_API_KEY contains a line break")

    token_store = _parse_token_store(env, problems)
    token_hashes = _parse_tokens(
        env, problems, required=not token_store and not callers_need_no_shared_token(env)
    )
    cache_seconds = parse_float(env, "TOKEN_CACHE_SECONDS", 2.0, problems, allow_zero=True)
    if cache_seconds > MAX_TOKEN_CACHE_SECONDS:
        problems.append(
            f"TOKEN_CACHE_SECONDS must be at most {MAX_TOKEN_CACHE_SECONDS:g}: "
            "it bounds how long a revoked token keeps working"
        )
    admin_token, usage_store = _parse_admin(env, problems)
    origins = tuple(
        o.strip().rstrip("/") for o in env.get("ALLOWED_ORIGINS", "").split(",") if o.strip()
    )
    for origin in origins:
        if origin != "*" and check_base_url("ALLOWED_ORIGINS", origin):
            problems.append(
                f"ALLOWED_ORIGINS entries must look like https://app.example.com, got {origin!r}"
            )

    settings = Settings(
        upstream_base_url=base_url,
        upstream_api_key=api_key,
        access_token_hashes=token_hashes,
        allowed_origins=origins,
        connect_timeout=parse_float(env, "UPSTREAM_CONNECT_TIMEOUT", 10.0, problems),
        read_timeout=parse_float(env, "UPSTREAM_READ_TIMEOUT", 300.0, problems),
        max_body_bytes=parse_int(env, "MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES, problems),
        max_json_bytes=parse_int(env, "MAX_JSON_BYTES", DEFAULT_MAX_JSON_BYTES, problems),
        access_log=parse_bool(env, "ACCESS_LOG", True, problems),
        transport=parse_choice(env, "UPSTREAM_TRANSPORT", ("auto", "aiohttp", "httpx"), problems),
        on_disconnect=parse_choice(env, "ON_CLIENT_DISCONNECT", ("cancel", "drain"), problems),
        provider_keys=provider_keys,
        provider_upstreams=provider_upstreams,
        token_store=token_store,
        token_cache_seconds=cache_seconds,
        store_timeout=parse_float(env, "STORE_TIMEOUT", DEFAULT_STORE_TIMEOUT, problems),
        guard=parse_guard_settings(env, problems, origins, token_store),
        usage_store=usage_store,
        admin_token=admin_token,
        server=parse_server_limits(env, problems),
        cache=parse_cache_settings(env, problems),
        realtime_max_seconds=parse_float(env, "REALTIME_MAX_SECONDS", 1800.0, problems),
        realtime_reserve_tokens=parse_int(env, "REALTIME_RESERVE_TOKENS", 20_000, problems),
        allow_ephemeral_keys=parse_bool(env, "ALLOW_EPHEMERAL_KEYS", False, problems),
        ephemeral_key_tokens=parse_int(env, "EPHEMERAL_KEY_TOKENS", 20_000, problems),
        gemini_stream_recovery=parse_bool(env, "GEMINI_STREAM_RECOVERY", False, problems),
        gemini_stream_recovery_attempts=parse_int(
            env, "GEMINI_STREAM_RECOVERY_ATTEMPTS", 2, problems
        ),
        routing=parse_routing_settings(
            env, problems, enabled_providers(provider_keys, provider_upstreams), bool(base_url)
        ),
    )
    if problems:
        raise ConfigError(problems)
    return settings
