"""Settings, read once from the environment, with one clear line per problem."""

from __future__ import annotations

import hmac
import os
import re
from collections.abc import Mapping
from urllib.parse import urlsplit

from core.access.guard_settings import (
    GuardSettings,
    callers_need_no_shared_token,
    parse_guard_settings,
)
from core.cache.settings import CacheSettings, parse_cache_settings
from core.digest import sha256
from core.env import Setting, detect_platform, read_settings, read_value, setting
from core.providers import (
    CATALOGUE,
    Provider,
    build_provider_table,
    enabled_providers,
    provider_env_names,
    split_upstreams,
)
from core.records import Record, field
from core.routing import RoutingSettings, parse_routing_settings

# Only the limits: settings never import the runner (uvicorn and the protocols).
from core.server.limits import ServerLimits, parse_allowed_origins
from core.stores import store_url_problem
from core.stores.calls import DEFAULT_STORE_TIMEOUT
from core.usage.settings import UsageSettings, parse_usage_settings

MIN_TOKEN_LENGTH = 16
MIN_ADMIN_TOKEN_LENGTH = 32
MAX_TOKEN_CACHE_SECONDS = 5.0
DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024  # above OpenAI's 25 MB audio upload limit
# JSON is decoded into objects several times its size: a lower bound for JSON bodies keeps
# one request's memory a small multiple of what it sent (uploads keep the larger limit).
DEFAULT_MAX_JSON_BYTES = 10 * 1024 * 1024


# user:password@ in any URL a problem sentence quotes (a redis:// store, a mistyped base URL),
# its `://` mistyped or left out too (`redis:/user:pw@host`, `user:pw@host`), and up to the
# last `@` of the word (a password holding `/` or `@`: a URL reader takes the last `@`).
_URL_PASSWORD = re.compile(r"(?P<head>(?:[A-Za-z][A-Za-z0-9+.-]*:/*)?[^\s'\"/@:]*:)[^\s'\"]*@")
# A quoted URL's query string (`?key=...`, `?api-key=...`): a credential's usual place.
_URL_QUERY = re.compile(r"\?[^\s'\"]+")


def mask_url_passwords(text: str) -> str:
    """`text` with the password and the query string of every URL in it replaced by ***."""
    return _URL_QUERY.sub("?***", _URL_PASSWORD.sub(r"\g<head>***@", text))


# The shapes of the providers' keys (OpenAI and most OpenAI-compatible vendors sk-...,
# Anthropic sk-ant-..., Gemini AIza..., Groq gsk_, xAI xai-, Fireworks fw_, Perplexity
# pplx-) and of this proxy's tokens (llmp_): a key pasted into the wrong variable (a base
# URL, a number) is quoted back by that variable's problem.
_KEY_SHAPED = re.compile(r"(?:sk-|AIza|gsk_|xai-|fw_|pplx-|llmp_)[A-Za-z0-9_\-]{12,}")


def mask_key_shapes(text: str) -> str:
    """`text` with every key-shaped word cut to its first four characters and its length:
    enough to tell which value it was, not to use it."""
    return _KEY_SHAPED.sub(lambda m: f"{m[0][:4]}…({len(m[0])} characters)", text)


class ConfigError(Exception):
    """The environment does not describe a usable proxy; `problems` names each variable.

    Each sentence may quote the value it refuses (", got ..."), for the operator; a password
    in a quoted URL, and a provider key pasted into the wrong variable, are masked here, so
    no reader of the problems (check, serve, the log) prints one."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = [mask_key_shapes(mask_url_passwords(problem)) for problem in problems]
        super().__init__("; ".join(self.problems))


def hash_token(token: str) -> bytes:
    """Tokens are kept and compared only as SHA-256 digests."""
    return sha256(token)


# The server's limits are declared beside the server (core/server/limits.py), which reads them when
# it starts; here they are described for the reference and bounded with every other number.
SERVER_LIMITS: dict[str, Setting] = {
    "max_header_bytes": Setting(
        "MAX_HEADER_BYTES",
        "Bytes of a request head (request line + headers); past this the reply is 431.",
        low=1024,
        high=1024 * 1024,
        unit="bytes",
    ),
    "header_timeout": Setting(
        "HEADER_TIMEOUT",
        "From a connection's start (or a request's first byte) to the end of its head (408).",
        low=0.1,
        high=600,
        unit="s",
    ),
    "body_timeout": Setting(
        "BODY_TIMEOUT",
        "From the end of a request's head to the end of its body; a caller that trickles its "
        "body past this gets 408.",
        low=0.1,
        high=3600,
        unit="s",
    ),
    "idle_timeout": Setting(
        "IDLE_TIMEOUT",
        "An idle keep-alive connection between requests stays open this long.",
        low=0.1,
        high=3600,
        unit="s",
    ),
    "send_timeout": Setting(
        "SEND_TIMEOUT",
        "A reply or realtime session the caller takes not one byte of for this long (its "
        "socket full) is cut, and its upstream request or session with it.",
        low=0.1,
        high=3600,
        unit="s",
    ),
    "max_connections": Setting(
        "MAX_CONNECTIONS",
        "Open connections per process; a request on one past it gets 503.",
        low=1,
        high=1_000_000,
    ),
}


class Settings(Record):
    """Everything the proxy reads from its environment, read once at start (load_settings)."""

    upstream_base_url: str = setting(
        "UPSTREAM_BASE_URL",
        "",
        "The default route's target: /v1/<path> goes to <UPSTREAM_BASE_URL>/<path>. A comma "
        "list spreads requests round robin and fails over.",
        custom=True,
        shown_default="unset (required unless a provider route is configured)",
    )
    upstream_api_key: str = setting(
        "UPSTREAM_API_KEY",
        "",
        "The real key for the default route (AWS: or UPSTREAM_API_KEY_SECRET_ID / "
        "UPSTREAM_API_KEY_SSM_PARAMETER).",
        custom=True,
        secret=True,
        shown_default="unset (required with UPSTREAM_BASE_URL)",
    )
    access_token_hashes: tuple[bytes, ...] = setting(
        "PROXY_ACCESS_TOKEN",
        (),
        f"Caller credential(s), at least {MIN_TOKEN_LENGTH} characters each; a comma list "
        "allows rotation. Optional with TOKEN_STORE, JWT_JWKS_URL or ALLOW_ANONYMOUS.",
        custom=True,
        secret=True,
        shown_default="unset",
    )
    allowed_origins: tuple[str, ...] = setting(
        "ALLOWED_ORIGINS",
        (),
        "CORS allowlist (comma list of https://app.example.com); `*` only by explicit choice.",
        custom=True,
        shown_default="unset (browsers refused)",
    )
    connect_timeout: float = setting(
        "UPSTREAM_CONNECT_TIMEOUT",
        10.0,
        "Seconds to connect to the upstream.",
        low=0.1,
        high=300,
        unit="s",
    )
    # Bounds the wait for the first byte and every gap between bytes; there is no total
    # timeout, so a long generation that keeps producing is never cut.
    read_timeout: float = setting(
        "UPSTREAM_READ_TIMEOUT",
        300.0,
        "Seconds to wait for the first byte and between bytes (no total timeout on streams).",
        low=0.1,
        high=3600,
        unit="s",
    )
    max_body_bytes: int = setting(
        "MAX_BODY_BYTES",
        DEFAULT_MAX_BODY_BYTES,
        "Request bodies above this get 413 (uploads included).",
        low=1,
        high=2 * 1024**3,
        unit="bytes",
    )
    max_json_bytes: int = setting(
        "MAX_JSON_BYTES",
        DEFAULT_MAX_JSON_BYTES,
        "JSON request bodies above this get 413 (uploads keep MAX_BODY_BYTES).",
        low=1,
        high=2 * 1024**3,
        unit="bytes",
    )
    access_log: bool = setting(
        "ACCESS_LOG", True, "One JSON access-log line per request on stderr (no secrets)."
    )
    # "auto" picks aiohttp under httpx for long-running servers, httpx's own otherwise.
    transport: str = setting(
        "UPSTREAM_TRANSPORT",
        "auto",
        "auto, aiohttp or httpx. auto: aiohttp for servers, httpx for functions.",
        choices=("auto", "aiohttp", "httpx"),
    )
    on_disconnect: str = setting(
        "ON_CLIENT_DISCONNECT",
        "cancel",
        "What happens to the upstream stream when the caller leaves: cancel or drain.",
        choices=("cancel", "drain"),
    )
    # Provider routes: keys (a comma list rotates) and origin overrides, by env prefix
    # (`ANTHROPIC` for ANTHROPIC_API_KEY / ANTHROPIC_UPSTREAM); see core/providers.py. Their
    # variables are named by the catalogue, so the reference lists them from it.
    provider_keys: Mapping[str, tuple[str, ...]] = field(repr=False, default_factory=dict)
    provider_upstreams: Mapping[str, str] = field(default_factory=dict)
    token_store: str = setting(
        "TOKEN_STORE",
        "",
        "Per-caller tokens (`llm-proxy tokens`): sqlite:///path, dynamodb://table, "
        "redis://host, rediss://host or memory://.",
        custom=True,
        secret=True,
        shown_default="unset (only PROXY_ACCESS_TOKEN)",
    )
    token_cache_seconds: float = setting(
        "TOKEN_CACHE_SECONDS",
        2.0,
        "How long a looked-up token is trusted before the store is asked again: the most a "
        "revocation can lag.",
        low=0,
        high=MAX_TOKEN_CACHE_SECONDS,
        unit="s",
    )
    store_timeout: float = setting(
        "STORE_TIMEOUT",
        DEFAULT_STORE_TIMEOUT,
        "The longest a request waits for the token or limit store before a 503.",
        low=0.05,
        high=60,
        unit="s",
    )
    # What a connection may hold before authentication; servers only (SERVER_LIMITS).
    server: ServerLimits = field(default_factory=ServerLimits)
    # Callers: JWT sign-in, anonymous mode, client IP, rate limits, request policy
    # (core/access/guard_settings.py); all off by default.
    guard: GuardSettings = field(default_factory=GuardSettings)
    # Spend caps and prices (core/usage/settings.py); off by default.
    usage: UsageSettings = field(default_factory=UsageSettings)
    usage_store: str = setting(
        "USAGE_STORE",
        "memory://",
        "The usage ledger's store (`llm-proxy usage`, the dashboard's charts).",
        custom=True,
        secret=True,
        shown_default="LIMIT_STORE, else TOKEN_STORE, else memory:// (per process)",
    )
    admin_token: str = setting(
        "ADMIN_TOKEN",
        "",
        f"The dashboard's credential (at least {MIN_ADMIN_TOKEN_LENGTH} characters, none of "
        "PROXY_ACCESS_TOKEN's); unset = no dashboard. On Lambda, Vercel or Cloud Run it needs "
        "a shared TOKEN_STORE.",
        custom=True,
        secret=True,
        shown_default="unset (dashboard off)",
    )
    # The response cache (core/cache); off unless CACHE_URL is set.
    cache: CacheSettings = field(default_factory=CacheSettings)
    realtime_max_seconds: float = setting(
        "REALTIME_MAX_SECONDS",
        1800.0,
        "A proxied WebSocket session is closed (1008) at this age.",
        low=0.1,
        high=86_400,
        unit="s",
    )
    realtime_reserve_tokens: int = setting(
        "REALTIME_RESERVE_TOKENS",
        20_000,
        "Tokens reserved per session while a token limit or budget is on; settled to the "
        "metered figure.",
        low=1,
        high=10**9,
    )
    # While a session is open: how often the kill switch and the caller's token are checked
    # again, the sessions one caller may hold open at once, and the largest frame a caller
    # may send (never above MAX_BODY_BYTES).
    realtime_recheck_seconds: float = setting(
        "REALTIME_RECHECK_SECONDS",
        5.0,
        "How often an open realtime session, or a reply still being relayed, checks the "
        "kill switch and its caller's token again (a session also on every frame that "
        "starts a turn).",
        low=0.1,
        high=3600,
        unit="s",
    )
    realtime_sessions_per_caller: int = setting(
        "REALTIME_SESSIONS_PER_CALLER",
        4,
        "Realtime sessions one caller may hold open at once, per process (0: no cap).",
        low=0,
        high=100_000,
    )
    realtime_max_frame_bytes: int = setting(
        "REALTIME_MAX_FRAME_BYTES",
        16 * 1024 * 1024,
        "The largest WebSocket frame a caller may send (never above MAX_BODY_BYTES); a larger "
        "one closes the session with 1009.",
        low=1024,
        high=64 * 1024 * 1024,
        unit="bytes",
    )
    allow_ephemeral_keys: bool = setting(
        "ALLOW_EPHEMERAL_KEYS",
        False,
        "Let callers mint short-lived provider keys (realtime client secrets, Gemini auth "
        "tokens), checked against their scopes.",
    )
    ephemeral_key_tokens: int = setting(
        "EPHEMERAL_KEY_TOKENS",
        20_000,
        "Tokens charged per minted key against the caller's token limit and budget.",
        low=1,
        high=10**9,
    )
    gemini_stream_recovery: bool = setting(
        "GEMINI_STREAM_RECOVERY",
        False,
        "Continue Gemini streams that end without a finishReason, in the same stream.",
    )
    # Each continuation is one more billed upstream call: a small upper bound.
    gemini_stream_recovery_attempts: int = setting(
        "GEMINI_STREAM_RECOVERY_ATTEMPTS",
        2,
        "The most continuations per request (each is one more billed upstream call).",
        low=1,
        high=5,
    )
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


def _parse_admin(
    env: Mapping[str, str],
    problems: list[str],
    token_hashes: tuple[bytes, ...] = (),
    token_store: str = "",
) -> tuple[str, str]:
    """ADMIN_TOKEN (the dashboard's credential) and the usage ledger's store URL."""
    admin_token = env.get("ADMIN_TOKEN", "").strip()
    if admin_token and len(admin_token) < MIN_ADMIN_TOKEN_LENGTH:
        problems.append(
            f"ADMIN_TOKEN is shorter than {MIN_ADMIN_TOKEN_LENGTH} characters: the dashboard "
            "stays off until it is long enough (python3 -c 'import secrets; "
            "print(secrets.token_urlsafe(32))')"
        )
    if admin_token:
        # A PROXY_ACCESS_TOKEN sits in every caller's app or page; as the admin credential
        # too, it would make each of them the operator (tokens, spend, the kill switch).
        digest = hash_token(admin_token)
        if any(hmac.compare_digest(digest, allowed) for allowed in token_hashes):
            problems.append(
                "ADMIN_TOKEN is also an entry of PROXY_ACCESS_TOKEN: every caller would hold "
                "the dashboard's credential; give the dashboard a secret of its own"
            )
        in_memory = not token_store or token_store.startswith("memory")
        if in_memory and detect_platform(env) in ("aws", "vercel", "cloud-run"):
            # The kill switch, sign-outs and the count of wrong admin tokens live in the
            # token store: in memory, the dashboard would switch off only the instance
            # that served it while every other instance kept spending.
            problems.append(
                "ADMIN_TOKEN on a function platform needs TOKEN_STORE to be a store every "
                "instance shares (dynamodb://... or redis://...): in memory the kill "
                "switch and sign-out reach only the instance that served the dashboard"
            )
    usage_store = usage_store_url(env)
    if env.get("USAGE_STORE", "").strip() and (
        problem := store_url_problem("USAGE_STORE", usage_store)
    ):
        problems.append(problem)
    return admin_token, usage_store


def _parse_server_limits(env: Mapping[str, str], problems: list[str]) -> ServerLimits:
    """ServerLimits from SERVER_LIMITS: its defaults are the server's own (core/server/limits.py)."""
    defaults = ServerLimits()
    values = {
        name: read_value(spec, getattr(defaults, name), env, problems)
        for name, spec in SERVER_LIMITS.items()
    }
    return ServerLimits(**values)


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
    admin_token, usage_store = _parse_admin(env, problems, token_hashes, token_store)
    origins = parse_allowed_origins(env)
    for origin in origins:
        if origin != "*" and check_base_url("ALLOWED_ORIGINS", origin):
            problems.append(
                f"ALLOWED_ORIGINS entries must look like https://app.example.com, got {origin!r}"
            )

    settings = read_settings(
        Settings,
        env,
        problems,
        upstream_base_url=base_url,
        upstream_api_key=api_key,
        access_token_hashes=token_hashes,
        allowed_origins=origins,
        provider_keys=provider_keys,
        provider_upstreams=provider_upstreams,
        token_store=token_store,
        guard=parse_guard_settings(env, problems, origins, token_store),
        usage=parse_usage_settings(env, problems),
        usage_store=usage_store,
        admin_token=admin_token,
        server=_parse_server_limits(env, problems),
        cache=parse_cache_settings(env, problems),
        routing=parse_routing_settings(
            env, problems, enabled_providers(provider_keys, provider_upstreams), bool(base_url)
        ),
    )
    if problems:
        raise ConfigError(problems)
    return settings
