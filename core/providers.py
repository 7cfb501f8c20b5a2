"""The provider table: one declarative record per route, no per-provider code paths.

A request whose path starts with a record's `prefix` goes to that record's `upstream`
with the rest of the path appended verbatim, so `/v1/chat/completions` on the proxy
becomes `<UPSTREAM_BASE_URL>/chat/completions` and `/anthropic/v1/messages` becomes
`https://api.anthropic.com/v1/messages`.

`CATALOGUE` lists every provider the proxy knows. A record is switched on by its key
variable (`<ENV>_API_KEY`, a comma list rotates) and may be pointed elsewhere with
`<ENV>_UPSTREAM`; `build_provider_table` turns the enabled ones into live records.
Adding an OpenAI-compatible vendor is one `_compatible(...)` line.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from core.errors import ErrorShape

if TYPE_CHECKING:
    from core.config import Settings

# Statuses after which the same request is tried once more on the provider's next key.
RETRY_ON_NEXT_KEY = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class Provider:
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
    _rotation: Iterator[int] = field(
        default_factory=lambda: itertools.cycle((0,)), repr=False, compare=False
    )

    @cached_property
    def origin(self) -> str:
        """scheme://host[:port] of the upstream: the only host a request can reach."""
        parts = urlsplit(self.upstream)
        return f"{parts.scheme}://{parts.netloc}"

    @cached_property
    def base_path(self) -> str:
        return urlsplit(self.upstream).path.rstrip("/")

    @cached_property
    def key_pairs(self) -> tuple[tuple[bytes, bytes], ...]:
        """One raw header per key, in rotation order; empty for a keyless local server.
        Cached: built once per record, read on every request."""
        name = self.key_header.lower().encode()
        return tuple((name, self.key_template.format(key=key).encode()) for key in self.api_keys)

    def key_header_pair(self) -> tuple[bytes, bytes]:
        return self.key_pairs[0]

    def next_key_index(self) -> int:
        """Round-robin over the keys, so load spreads across them."""
        return next(self._rotation)

    @property
    def rotates(self) -> bool:
        return len(self.api_keys) > 1


def _compatible(name: str, upstream: str, **options: object) -> Provider:
    """An OpenAI-compatible vendor: Bearer key, OpenAI paths and error shape."""
    return Provider(name=name, prefix=f"/{name}", upstream=upstream, env=name.upper(), **options)  # type: ignore[arg-type]


# Each upstream is chosen so that a vendor's SDK base URL is `<proxy>/<name>` plus the path
# the vendor documents after its host (README, "Providers and tokens", lists them).
CATALOGUE: tuple[Provider, ...] = (
    _compatible("openai", "https://api.openai.com"),
    Provider(
        name="anthropic",
        prefix="/anthropic",
        upstream="https://api.anthropic.com",
        key_header="x-api-key",
        key_template="{key}",
        error_shape="anthropic",
        env="ANTHROPIC",
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
    ),
    # Gemini's OpenAI-compatible endpoint takes the same key as a Bearer token and
    # answers in OpenAI's shape; the longer prefix wins over `/gemini`.
    Provider(
        name="gemini",
        prefix="/gemini/v1beta/openai",
        upstream="https://generativelanguage.googleapis.com/v1beta/openai",
        env="GEMINI",
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
    ),
    _compatible("deepseek", "https://api.deepseek.com"),
    _compatible("groq", "https://api.groq.com/openai"),
    _compatible("mistral", "https://api.mistral.ai"),
    _compatible("openrouter", "https://openrouter.ai/api"),
    _compatible("together", "https://api.together.xyz"),
    _compatible("xai", "https://api.x.ai"),
    _compatible("fireworks", "https://api.fireworks.ai/inference"),
    _compatible("perplexity", "https://api.perplexity.ai"),
    _compatible("moonshot", "https://api.moonshot.cn"),
    _compatible("zhipu", "https://open.bigmodel.cn/api/paas"),
    _compatible("dashscope", "https://dashscope.aliyuncs.com/compatible-mode"),
    _compatible("hunyuan", "https://api.hunyuan.cloud.tencent.com"),
    _compatible("ollama", "", key_optional=True),
    _compatible("vllm", "", key_optional=True),
)


def provider_env_names(record: Provider) -> tuple[str, str]:
    """The key and upstream variable names of a catalogue record."""
    return f"{record.env}_API_KEY", f"{record.env}_UPSTREAM"


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
        enabled.append(
            replace(
                record,
                upstream=resolve_upstream(record, override),
                api_keys=record_keys,
                _rotation=itertools.cycle(range(max(1, len(record_keys)))),
            )
        )
    return enabled


def default_provider(settings: Settings) -> Provider:
    """`/v1/*` to UPSTREAM_BASE_URL with UPSTREAM_API_KEY as an OpenAI-style bearer key."""
    # A comma list rotates, as for every provider's key variable.
    keys = tuple(k.strip() for k in settings.upstream_api_key.split(",") if k.strip())
    return Provider(
        name="default",
        prefix="/v1",
        upstream=settings.upstream_base_url,
        api_keys=keys,
        error_shape="openai",
        _rotation=itertools.cycle(range(max(1, len(keys)))),
    )


def build_provider_table(settings: Settings) -> tuple[Provider, ...]:
    """Every route this deployment serves, longest prefix first so the most specific wins."""
    providers = enabled_providers(settings.provider_keys, settings.provider_upstreams)
    if settings.upstream_base_url:
        providers.append(default_provider(settings))
    return tuple(sorted(providers, key=lambda p: len(p.prefix), reverse=True))


def match_provider(providers: tuple[Provider, ...], path: str) -> tuple[Provider, str] | None:
    """The provider serving `path` and the remainder of the path after its prefix."""
    for provider in providers:
        prefix = provider.prefix
        if path.startswith(prefix) and (len(path) == len(prefix) or path[len(prefix)] == "/"):
            return provider, path[len(prefix) :]
    return None
