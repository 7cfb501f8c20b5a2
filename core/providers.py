"""The provider table: one declarative record per route, no per-provider code paths.

A request whose path starts with a record's `prefix` goes to that record's `upstream`
with the rest of the path appended verbatim, so `/v1/chat/completions` on the proxy
becomes `<UPSTREAM_BASE_URL>/chat/completions` and `/anthropic/v1/messages` becomes
`https://api.anthropic.com/v1/messages`.

`CATALOGUE` lists every provider the proxy knows. A record is switched on by its key
variable (`<ENV>_API_KEY`, a comma list rotates) and may be pointed elsewhere with
`<ENV>_UPSTREAM` (a comma list spreads requests across several targets and fails over
between them); `build_provider_table` turns the enabled ones into live records.
Adding an OpenAI-compatible vendor is one `_compatible(...)` line.

A record may also name its OpenAI-compatible surface (`OpenAISurface`): where, under the
provider's upstream, it answers OpenAI's chat completions, and how that surface takes the
key. MODEL_ROUTES (core/proxy/model_routes.py) sends the default route's requests there by
model name.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from functools import cached_property
from typing import NamedTuple
from urllib.parse import urlsplit

from core.errors import ErrorShape
from core.protocols import WIRES, Wire
from core.records import Record, field, replace

# Statuses after which the same request is tried once more on the provider's next key.
RETRY_ON_NEXT_KEY = frozenset({429, 500, 502, 503, 504})


class KeyRing:
    """A provider's keys as ready-made headers. Each request starts on the next key in
    turn (load spreads across them) and, if that key is refused or overloaded before any
    byte reached the caller, tries each other key once."""

    def __init__(self, header: str, template: str, keys: tuple[str, ...]) -> None:
        name = header.lower().encode()
        self._headers = tuple((name, template.format(key=key).encode()) for key in keys)
        self._turn = 0

    def __len__(self) -> int:
        return len(self._headers)

    def attempts(self) -> Iterator[tuple[bytes, bytes] | None]:
        """The key header for the first try, then one per remaining key; a keyless local
        server (Ollama) gets a single None."""
        headers = self._headers
        if not headers:
            yield None
            return
        first = self._turn
        self._turn = (first + 1) % len(headers)
        for step in range(len(headers)):
            yield headers[(first + step) % len(headers)]


_ONLY_TARGET = (0,)


class Targets:
    """A provider's upstream base URLs (scheme://host[/base path]), all from configuration.
    Each request starts on the next target in turn, and moves on to the next one when a
    target cannot be reached or answers a 5xx before any byte reached the caller."""

    def __init__(self, urls: tuple[str, ...]) -> None:
        self.urls = urls
        self.base_paths = tuple(urlsplit(url).path for url in urls)
        self.origins = tuple(
            url[: len(url) - len(path)] for url, path in zip(urls, self.base_paths, strict=True)
        )
        self._turn = 0

    def __len__(self) -> int:
        return len(self.urls)

    def order(self) -> tuple[int, ...]:
        """Target indexes for one request: the one whose turn it is first, then the rest."""
        count = len(self.urls)
        if count == 1:
            return _ONLY_TARGET
        first = self._turn
        self._turn = (first + 1) % count
        return tuple((first + step) % count for step in range(count))


def next_attempt(
    status: int, key_at: int, keys: int, target_at: int, targets: int
) -> tuple[int, int] | None:
    """After a reply with `status` from key `key_at` on target `target_at`: the (key,
    target) positions to try next, or None to pass the reply on. A 429 is about the key
    (its quota): the next key, same target. A 5xx may be either's: both move on, each while
    it has one left. Every retry moves at least one position forward, so a request makes
    at most keys + targets - 1 attempts."""
    if status == 429:
        return (key_at + 1, target_at) if key_at + 1 < keys else None
    if status in RETRY_ON_NEXT_KEY:
        moved = (min(key_at + 1, keys - 1), min(target_at + 1, targets - 1))
        return moved if moved != (key_at, target_at) else None
    return None


class OpenAISurface(NamedTuple):
    """Where a provider answers OpenAI's own requests (chat completions, embeddings,
    models), and how it wants the key there: Gemini at /v1beta/openai with its key as a
    Bearer token, Anthropic's OpenAI SDK compatibility at /v1, an OpenAI-compatible
    vendor at its usual /v1."""

    # Appended to each upstream target of the record: `<target><path>/chat/completions`.
    path: str = "/v1"
    key_header: str = "Authorization"
    key_template: str = "Bearer {key}"
    # Whether it serves /embeddings (Anthropic has no embeddings API).
    embeddings: bool = True
    # Whether a stream reports usage when asked (`stream_options.include_usage`): without
    # it a capped proxy cannot meter a stream there, and refuses it.
    stream_usage: bool = True
    # Fixed headers its model list wants beside the key (Anthropic's /v1/models).
    models_headers: tuple[tuple[str, str], ...] = ()
    # The query its model list takes to answer in one page (Anthropic's gives 20 a page
    # unless asked for up to 1000).
    models_query: str = ""


class Provider(Record):
    """One upstream route: its path prefix, origin, keys and what its protocol can do."""

    name: str
    prefix: str
    # scheme://host[/base path]; the remainder of the caller's path is appended to it.
    upstream: str
    # How the real key travels: header name and a template with `{key}`.
    key_header: str = "Authorization"
    key_template: str = "Bearer {key}"
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    error_shape: ErrorShape = "openai"
    # Settings come from `<env>_API_KEY` and `<env>_UPSTREAM`.
    env: str = ""
    # Local servers (Ollama, vLLM) may run without a key; they are switched on by
    # their upstream variable instead.
    key_optional: bool = False
    # Where the model name sits in a path, for model-scoped tokens: Gemini's
    # `/models/{model}:generateContent`, Azure's `/deployments/{name}/...`.
    model_in_path: str = ""
    # Further targets beside `upstream` (`<ENV>_UPSTREAM=https://a,https://b`).
    more_upstreams: tuple[str, ...] = ()
    # ---- capabilities: what the code reads instead of a provider's name ----
    # Resumable uploads (Gemini's Files API): upload URLs in replies are rewritten to the
    # proxy, and upload legs are let in by their upload_id (core/proxy/uploads.py).
    resumable_uploads: bool = False
    # An unfinished stream may be continued (GEMINI_STREAM_RECOVERY, core/proxy/recovery.py).
    stream_recovery: bool = False
    # Its minting route issues auth tokens (Gemini) rather than OpenAI client secrets
    # (core/realtime/minting.py).
    mints_auth_tokens: bool = False
    # The realtime protocol its WebSocket sessions speak (core/realtime/wire.py), or "".
    realtime: str = "openai"
    # Its /moderations costs nothing (OpenAI's does; Mistral bills its own): then free to
    # every caller, otherwise a route the proxy cannot meter (refused while capped).
    free_moderation: bool = False
    # Its /conversations is OpenAI's Conversations API, which stores items and generates
    # nothing; elsewhere a POST there (Mistral's Conversations API) runs a model, and is
    # held to the caps as a generating route the policy cannot read (core/protocols.py).
    conversations_store_only: bool = False
    # The SDK that suits the route, and the path after the prefix its base URL takes
    # (the dashboard's snippets, core/admin/api.py).
    sdk: str = "openai"
    sdk_path: str = "/v1"
    # Its OpenAI-compatible surface, if it has one (core/proxy/model_routes.py).
    openai_surface: OpenAISurface | None = None

    @cached_property
    def wire(self) -> Wire:
        """The protocol this route speaks: usage, routes, stream options (core/protocols.py)."""
        return WIRES[self.error_shape]

    @cached_property
    def keys(self) -> KeyRing:
        return KeyRing(self.key_header, self.key_template, self.api_keys)

    @cached_property
    def targets(self) -> Targets:
        return Targets(tuple(url.rstrip("/") for url in (self.upstream, *self.more_upstreams)))

    @cached_property
    def origin(self) -> str:
        """scheme://host[:port] of the upstream: the only host a request can reach."""
        parts = urlsplit(self.upstream)
        return f"{parts.scheme}://{parts.netloc}"

    @cached_property
    def base_path(self) -> str:
        return urlsplit(self.upstream).path.rstrip("/")


def _compatible(name: str, upstream: str, **options: object) -> Provider:
    """An OpenAI-compatible vendor: Bearer key, OpenAI paths and error shape; its own
    OpenAI-compatible surface is itself, at /v1."""
    return Provider(
        name=name,
        prefix=f"/{name}",
        upstream=upstream,
        env=name.upper(),
        openai_surface=OPENAI_SURFACE,
        **options,  # type: ignore[arg-type]
    )


OPENAI_SURFACE = OpenAISurface()


# Each upstream is chosen so that a vendor's SDK base URL is `<proxy>/<name>` plus the path
# the vendor documents after its host (docs/providers.md lists them).
CATALOGUE: tuple[Provider, ...] = (
    _compatible(
        "openai", "https://api.openai.com", free_moderation=True, conversations_store_only=True
    ),
    Provider(
        name="anthropic",
        prefix="/anthropic",
        upstream="https://api.anthropic.com",
        key_header="x-api-key",
        key_template="{key}",
        error_shape="anthropic",
        env="ANTHROPIC",
        realtime="",
        sdk="anthropic",
        sdk_path="",
        # Anthropic's OpenAI SDK compatibility: the OpenAI SDK's Bearer key at /v1; no
        # embeddings; stream_options.include_usage is supported.
        openai_surface=OpenAISurface(
            embeddings=False,
            models_headers=(("anthropic-version", "2023-06-01"),),
            models_query="?limit=1000",
        ),
    ),
    Provider(
        name="gemini",
        prefix="/gemini",
        upstream="https://generativelanguage.googleapis.com",
        key_header="x-goog-api-key",
        key_template="{key}",
        error_shape="gemini",
        env="GEMINI",
        model_in_path="/models/",
        resumable_uploads=True,
        stream_recovery=True,
        mints_auth_tokens=True,
        realtime="gemini",
        sdk="google-genai",
        sdk_path="",
        # The same key as a Bearer token, answering in OpenAI's shape (chat, embeddings).
        openai_surface=OpenAISurface(path="/v1beta/openai"),
    ),
    # Gemini's OpenAI-compatible endpoint takes the same key as a Bearer token and
    # answers in OpenAI's shape; the longer prefix wins over `/gemini`.
    Provider(
        name="gemini",
        prefix="/gemini/v1beta/openai",
        upstream="https://generativelanguage.googleapis.com/v1beta/openai",
        env="GEMINI",
        sdk_path="/",
    ),
    # Azure has no shared host: AZURE_OPENAI_UPSTREAM=https://<resource>.openai.azure.com.
    Provider(
        name="azure",
        prefix="/azure",
        upstream="",
        key_header="api-key",
        key_template="{key}",
        env="AZURE_OPENAI",
        model_in_path="/deployments/",
        conversations_store_only=True,
        sdk="azure-openai",
        sdk_path="",
    ),
    _compatible("deepseek", "https://api.deepseek.com"),
    _compatible("groq", "https://api.groq.com/openai"),
    _compatible("mistral", "https://api.mistral.ai"),
    _compatible("openrouter", "https://openrouter.ai/api"),
    _compatible("together", "https://api.together.xyz"),
    _compatible("xai", "https://api.x.ai"),
    _compatible("fireworks", "https://api.fireworks.ai/inference"),
    _compatible("perplexity", "https://api.perplexity.ai", sdk_path=""),
    _compatible("moonshot", "https://api.moonshot.cn"),
    _compatible("zhipu", "https://open.bigmodel.cn/api/paas", sdk_path="/v4"),
    _compatible("dashscope", "https://dashscope.aliyuncs.com/compatible-mode"),
    _compatible("hunyuan", "https://api.hunyuan.cloud.tencent.com"),
    _compatible("ollama", "", key_optional=True),
    _compatible("vllm", "", key_optional=True),
)


# Every provider route the proxy knows, switched on or not, most specific first (as
# match_provider wants them).
CATALOGUE_BY_PREFIX = tuple(sorted(CATALOGUE, key=lambda record: len(record.prefix), reverse=True))


def error_shape_for_path(path: str) -> ErrorShape:
    """The error shape of the route `path` names, switched on here or not; OpenAI's when it
    names none. For a reply made before or without a deployment's routing (the server's own
    refusals, a misconfigured deployment's): an Anthropic or Gemini SDK reads its own shape."""
    matched = match_provider(CATALOGUE_BY_PREFIX, path)
    return matched[0].error_shape if matched else "openai"


def provider_env_names(record: Provider) -> tuple[str, str]:
    """The key and upstream variable names of a catalogue record."""
    return f"{record.env}_API_KEY", f"{record.env}_UPSTREAM"


def split_upstreams(value: str) -> list[str]:
    """The targets of an `<ENV>_UPSTREAM` / `UPSTREAM_BASE_URL` value: a comma list."""
    return [part.strip().rstrip("/") for part in value.split(",") if part.strip()]


def resolve_upstream(record: Provider, override: str) -> str:
    """`<ENV>_UPSTREAM` replaces the origin; a path in it replaces the base path too."""
    if not override:
        return record.upstream
    parts = urlsplit(override)
    path = parts.path.rstrip("/")
    if path:
        return f"{parts.scheme}://{parts.netloc}{path}"
    return f"{parts.scheme}://{parts.netloc}" + urlsplit(record.upstream).path.rstrip("/")


def enabled_providers(
    keys: Mapping[str, tuple[str, ...]], upstreams: Mapping[str, str]
) -> list[Provider]:
    """Catalogue records switched on by settings (keys and upstreams keyed by `env`)."""
    enabled = []
    for record in CATALOGUE:
        record_keys = keys.get(record.env, ())
        override = upstreams.get(record.env, "")
        if not record_keys and not (record.key_optional and override):
            continue
        targets = [resolve_upstream(record, url) for url in split_upstreams(override)]
        enabled.append(
            replace(
                record,
                upstream=targets[0] if targets else record.upstream,
                more_upstreams=tuple(targets[1:]),
                api_keys=record_keys,
            )
        )
    return enabled


def default_provider(base_url: str, api_key: str) -> Provider:
    """`/v1/*` to UPSTREAM_BASE_URL with UPSTREAM_API_KEY as an OpenAI-style bearer key."""
    # A comma list rotates, as for every provider's key variable.
    keys = tuple(k.strip() for k in api_key.split(",") if k.strip())
    first, *more = split_upstreams(base_url)
    # What the catalogue says of the host (OpenAI's: free moderation, conversations that
    # generate nothing) holds only where the default route points at that host.
    hosts = [
        record
        for record in CATALOGUE
        if record.upstream and (first == record.upstream or first.startswith(record.upstream + "/"))
    ]
    return Provider(
        name="default",
        prefix="/v1",
        upstream=first,
        more_upstreams=tuple(more),
        api_keys=keys,
        error_shape="openai",
        sdk_path="",
        free_moderation=any(record.free_moderation for record in hosts),
        conversations_store_only=any(record.conversations_store_only for record in hosts),
    )


def build_provider_table(
    keys: Mapping[str, tuple[str, ...]],
    upstreams: Mapping[str, str],
    default_base_url: str = "",
    default_api_key: str = "",
) -> tuple[Provider, ...]:
    """Every route this deployment serves, longest prefix first so the most specific wins."""
    providers = enabled_providers(keys, upstreams)
    if default_base_url:
        providers.append(default_provider(default_base_url, default_api_key))
    return tuple(sorted(providers, key=lambda p: len(p.prefix), reverse=True))


def match_provider(providers: tuple[Provider, ...], path: str) -> tuple[Provider, str] | None:
    """The provider serving `path` and the remainder of the path after its prefix."""
    for provider in providers:
        prefix = provider.prefix
        if path.startswith(prefix) and (len(path) == len(prefix) or path[len(prefix)] == "/"):
            return provider, path[len(prefix) :]
    return None
