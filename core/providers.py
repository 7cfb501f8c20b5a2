"""The provider table: one declarative record per route, no per-provider code paths.

A request whose path starts with a record's `prefix` goes to that record's `upstream`
with the rest of the path appended verbatim, so `/v1/chat/completions` on the proxy
becomes `<UPSTREAM_BASE_URL>/chat/completions`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from core.config import Settings
from core.errors import ErrorShape


@dataclass(frozen=True)
class Provider:
    name: str
    prefix: str
    upstream: str
    # How the real key travels: header name and a template with `{key}`.
    key_header: str
    key_template: str
    api_key: str = field(repr=False)
    error_shape: ErrorShape = "openai"

    @property
    def origin(self) -> str:
        """scheme://host[:port] of the upstream: the only host a request can reach."""
        parts = urlsplit(self.upstream)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def base_path(self) -> str:
        return urlsplit(self.upstream).path.rstrip("/")

    def key_header_pair(self) -> tuple[bytes, bytes]:
        return self.key_header.lower().encode(), self.key_template.format(key=self.api_key).encode()


def default_provider(settings: Settings) -> Provider:
    """`/v1/*` to UPSTREAM_BASE_URL with UPSTREAM_API_KEY as an OpenAI-style bearer key."""
    return Provider(
        name="default",
        prefix="/v1",
        upstream=settings.upstream_base_url,
        key_header="Authorization",
        key_template="Bearer {key}",
        api_key=settings.upstream_api_key,
        error_shape="openai",
    )


def build_provider_table(settings: Settings) -> tuple[Provider, ...]:
    """Every route this deployment serves, longest prefix first so the most specific wins."""
    providers = [default_provider(settings)]
    return tuple(sorted(providers, key=lambda p: len(p.prefix), reverse=True))


def match_provider(providers: tuple[Provider, ...], path: str) -> tuple[Provider, str] | None:
    """The provider serving `path` and the remainder of the path after its prefix."""
    for provider in providers:
        prefix = provider.prefix
        if path.startswith(prefix) and (len(path) == len(prefix) or path[len(prefix)] == "/"):
            return provider, path[len(prefix) :]
    return None
