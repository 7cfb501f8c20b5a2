"""CACHE_* settings, the cache key, and what a request must be to be cached."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from core.app import FEATURES
from core.cache.key import cache_control, cache_key, cacheable_document, deterministic
from core.config import ConfigError, Settings, load_settings
from core.providers import match_provider
from core.proxy.access_log import format_line
from core.proxy.pipeline import Pipeline, build_pipeline
from core.request import ProxyRequest, build_request
from core.stages import Deployment
from core.stores import StoreSet
from core.types import RequestLog

BASE = {
    "UPSTREAM_BASE_URL": "https://api.openai.com/v1",
    "UPSTREAM_API_KEY": "fake-upstream-key-for-tests",
    "PROXY_ACCESS_TOKEN": "a-caller-token-0123456789",
    "GEMINI_API_KEY": "gemini-test-key-not-real",
    "ANTHROPIC_API_KEY": "anthropic-test-key-not-real",
    "OPENAI_API_KEY": "fake-openai-key-for-tests",
}


def settings(**env: str) -> Settings:
    return load_settings({**BASE, **env})


def stages_of(settings: Settings) -> Pipeline:
    """The stages the app builds for these settings (its feature list, in its order)."""
    return build_pipeline(Deployment(settings, StoreSet()), FEATURES, None)  # type: ignore[arg-type]


def test_the_cache_is_off_unless_cache_url_is_set() -> None:
    plain = settings()
    assert not plain.cache.on
    pipeline = stages_of(plain)
    assert not any(type(check).__name__ == "ResponseCache" for check in pipeline.after_body)


def test_defaults_and_spellings() -> None:
    cache = settings(CACHE_URL="memory").cache
    assert (cache.url, cache.ttl_seconds, cache.scope, cache.nondeterministic) == (
        "memory://",
        3600.0,
        "caller",
        False,
    )
    assert (cache.max_entry_bytes, cache.max_entries) == (1024 * 1024, 1000)
    assert settings(CACHE_URL="sqlite").cache.url == "sqlite:///llm-proxy-cache.db"
    assert "secret" not in repr(settings(CACHE_URL="redis://:secret@host:6379").cache)


def test_the_cache_check_runs_last_and_callers_are_told_apart() -> None:
    pipeline = stages_of(settings(CACHE_URL="memory"))
    assert type(pipeline.after_body[-1]).__name__ == "ResponseCache"
    # Shared-token callers get a per-address identity even with no limit configured.
    assert pipeline.identify.client_ip is not None
    # The key is made from the parsed body: a field named twice is refused, not collapsed.
    assert pipeline.strict_json


def test_every_bad_value_is_named() -> None:
    with pytest.raises(ConfigError) as raised:
        settings(
            CACHE_URL="ftp://x",
            CACHE_TTL_SECONDS="soon",
            CACHE_SCOPE="everyone",
            CACHE_NONDETERMINISTIC="maybe",
            CACHE_MAX_ENTRY_BYTES="-1",
            CACHE_MAX_ENTRIES="0",
        )
    named = " ".join(raised.value.problems)
    for name in (
        "CACHE_URL",
        "CACHE_TTL_SECONDS",
        "CACHE_SCOPE",
        "CACHE_NONDETERMINISTIC",
        "CACHE_MAX_ENTRY_BYTES",
        "CACHE_MAX_ENTRIES",
    ):
        assert name in named


def request_for(
    path: str, body: Any, method: str = "POST", headers: list[tuple[bytes, bytes]] | None = None
) -> ProxyRequest:
    providers = settings().providers()
    raw = json.dumps(body).encode() if not isinstance(body, bytes) else body
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), *(headers or [])],
    }
    matched = match_provider(providers, path)
    assert matched is not None
    request = build_request(scope, matched[0], matched[1], None)
    request.body = raw
    return request


def key(request: ProxyRequest, scope: str = "token:a") -> str:
    async def run() -> str:
        document = await cacheable_document(request)
        assert document is not None
        return await cache_key(request, document, scope)

    return asyncio.run(run())


CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}


def test_the_key_ignores_key_order_and_whitespace_only() -> None:
    base = key(request_for("/v1/chat/completions", CHAT))
    reordered = request_for(
        "/v1/chat/completions", json.dumps(dict(reversed(CHAT.items())), indent=2).encode()
    )
    assert key(reordered) == base
    assert key(request_for("/v1/chat/completions", {**CHAT, "stream": True})) != base
    assert key(request_for("/v1/chat/completions", {**CHAT, "model": "n"})) != base
    assert key(request_for("/openai/v1/chat/completions", CHAT)) != base  # another route
    assert key(request_for("/v1/chat/completions", CHAT), "token:b") != base
    assert key(request_for("/v1/chat/completions", CHAT), "shared") != base
    versioned = request_for(
        "/v1/chat/completions", CHAT, headers=[(b"openai-beta", b"assistants=v2")]
    )
    assert key(versioned) != base


def test_only_posts_of_json_to_metered_routes_are_cacheable() -> None:
    def cacheable(request: ProxyRequest) -> bool:
        return asyncio.run(cacheable_document(request)) is not None

    assert cacheable(request_for("/v1/chat/completions", CHAT))
    assert not cacheable(request_for("/v1/models", CHAT, method="GET"))
    assert not cacheable(request_for("/v1/images/generations", CHAT))  # not metered
    assert not cacheable(request_for("/v1/chat/completions", [CHAT]))  # not an object


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        ("/v1/chat/completions", CHAT, True),
        ("/v1/chat/completions", {**CHAT, "temperature": 0.0}, True),
        ("/v1/chat/completions", {**CHAT, "temperature": 0.2}, False),
        ("/v1/chat/completions", {"model": "m", "messages": []}, False),
        ("/v1/chat/completions", {**CHAT, "temperature": False}, False),
        ("/v1/embeddings", {"model": "e", "input": "hi"}, True),
        ("/anthropic/v1/messages", {"model": "c", "temperature": 0, "messages": []}, True),
        ("/anthropic/v1/messages", {"model": "c", "messages": []}, False),
        (
            "/gemini/v1beta/models/g:generateContent",
            {"contents": [], "generationConfig": {"temperature": 0}},
            True,
        ),
        ("/gemini/v1beta/models/g:generateContent", {"contents": [], "temperature": 0}, False),
    ],
)
def test_what_counts_as_deterministic(path: str, body: Any, expected: bool) -> None:
    request = request_for(path, body)
    assert deterministic(request, body) is expected


def test_cache_control_directives() -> None:
    headers = [(b"cache-control", b"No-Cache, max-age=0"), (b"cache-control", b"no-store")]
    assert cache_control(headers) == {b"no-cache", b"max-age", b"no-store"}


def test_the_access_log_line_names_a_hit_and_the_tokens_saved() -> None:
    log = RequestLog("id", "POST", "/v1/chat/completions")
    log.cache, log.cost_usd = "hit", 0.0
    log.saved_input_tokens, log.saved_output_tokens = 12, 34
    line = json.loads(format_line(log))
    assert (line["cache"], line["saved_input_tokens"], line["saved_output_tokens"]) == (
        "hit",
        12,
        34,
    )
