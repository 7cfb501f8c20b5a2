"""Provider and token settings: what switches a route on, and one clear line per problem."""

from __future__ import annotations

import pytest

from core.config import ConfigError, load_settings
from core.providers import CATALOGUE, match_provider

BASE = {"PROXY_ACCESS_TOKEN": "test-caller-token-0123456789"}


def problems(env: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    return caught.value.problems


def routes(env: dict[str, str]) -> set[str]:
    return {p.prefix for p in load_settings(env).providers()}


def test_a_provider_key_alone_is_a_working_deployment() -> None:
    assert routes({**BASE, "ANTHROPIC_API_KEY": "sk-mock-a"}) == {"/anthropic"}


def test_default_route_alone_still_works() -> None:
    env = {**BASE, "UPSTREAM_BASE_URL": "https://api.openai.com/v1", "UPSTREAM_API_KEY": "sk-mock"}
    assert routes(env) == {"/v1"}


def test_gemini_key_enables_both_of_its_routes() -> None:
    assert routes({**BASE, "GEMINI_API_KEY": "g"}) == {"/gemini", "/gemini/v1beta/openai"}


def test_every_preset_has_its_own_prefix_and_env() -> None:
    names = {p.name for p in CATALOGUE}
    for name in (
        "openai",
        "anthropic",
        "gemini",
        "azure",
        "deepseek",
        "groq",
        "mistral",
        "openrouter",
        "together",
        "xai",
        "fireworks",
        "perplexity",
        "moonshot",
        "zhipu",
        "dashscope",
        "hunyuan",
        "ollama",
        "vllm",
    ):
        assert name in names


def test_upstream_override_replaces_origin_and_keeps_the_base_path() -> None:
    settings = load_settings(
        {**BASE, "GROQ_API_KEY": "k", "GROQ_UPSTREAM": "http://127.0.0.1:9999"}
    )
    [groq] = settings.providers()
    assert groq.upstream == "http://127.0.0.1:9999/openai"
    settings = load_settings(
        {**BASE, "ANTHROPIC_API_KEY": "k", "ANTHROPIC_UPSTREAM": "https://gw.example.test/claude/"}
    )
    [anthropic] = settings.providers()
    assert anthropic.upstream == "https://gw.example.test/claude"


def test_longest_prefix_wins() -> None:
    table = load_settings({**BASE, "GEMINI_API_KEY": "g"}).providers()
    provider, rest = match_provider(table, "/gemini/v1beta/openai/chat/completions") or (None, "")
    assert provider is not None and provider.key_header == "Authorization"
    assert rest == "/chat/completions"
    provider, rest = match_provider(table, "/gemini/v1beta/models") or (None, "")
    assert provider is not None and provider.key_header == "x-goog-api-key"
    assert match_provider(table, "/geminix/v1") is None


def test_nothing_configured_names_every_missing_variable() -> None:
    found = problems({})
    assert any(p.startswith("UPSTREAM_BASE_URL is not set") for p in found)
    assert any(p.startswith("PROXY_ACCESS_TOKEN is not set") for p in found)


def test_azure_needs_its_upstream() -> None:
    [problem] = problems({**BASE, "AZURE_OPENAI_API_KEY": "k"})
    assert problem.startswith("AZURE_OPENAI_UPSTREAM is not set")


def test_bad_provider_upstream_is_named() -> None:
    [problem] = problems({**BASE, "OPENAI_API_KEY": "k", "OPENAI_UPSTREAM": "api.openai.com"})
    assert problem.startswith("OPENAI_UPSTREAM must be an absolute http(s) URL")


def test_a_key_with_a_line_break_is_refused_without_echoing_it() -> None:
    [problem] = problems({**BASE, "DEEPSEEK_API_KEY": "sk-mock\r\nx-evil: 1"})
    assert problem == "DEEPSEEK_API_KEY contains a line break"


def test_token_store_makes_the_shared_token_optional() -> None:
    settings = load_settings({"OPENAI_API_KEY": "k", "TOKEN_STORE": "sqlite:///t.db"})
    assert settings.token_store == "sqlite:///t.db"
    assert settings.access_token_hashes == ()


def test_bad_token_store_and_cache_are_named() -> None:
    found = problems(
        {**BASE, "OPENAI_API_KEY": "k", "TOKEN_STORE": "mysql://x", "TOKEN_CACHE_SECONDS": "60"}
    )
    assert any(p.startswith("TOKEN_STORE must look like") for p in found)
    assert any(p.startswith("TOKEN_CACHE_SECONDS must be at most 5") for p in found)


def test_settings_repr_shows_no_key() -> None:
    settings = load_settings({**BASE, "OPENAI_API_KEY": "sk-mock-secret-value"})
    assert "sk-mock-secret-value" not in repr(settings)
