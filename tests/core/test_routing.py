"""MODEL_ROUTES / MODEL_FALLBACKS refused at start with one clear line each
(`llm-proxy check`), the model rewrite in the bytes, and the router's choice."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from core.config import ConfigError, load_settings
from core.providers import CATALOGUE, OpenAISurface
from core.proxy.fallbacks import model_value_span, with_model
from core.proxy.model_routes import surface_record

CLI = [sys.executable, "-m", "core.cli"]
BASE = {
    "PROXY_ACCESS_TOKEN": "test-caller-token-0123456789",
    "ANTHROPIC_API_KEY": "fake-anthropic-key",
}


def problems(**env: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings({**BASE, **env})
    return caught.value.problems


def test_a_route_to_a_provider_without_a_key_or_surface_is_refused() -> None:
    found = problems(MODEL_ROUTES="claude-*=anthropic,gemini-*=gemini,az-*=azure,x=nobody,bad")
    assert found == [
        "MODEL_ROUTES routes 'gemini-*' to gemini, which has no key: set GEMINI_API_KEY",
        found[1],
        found[2],
        "MODEL_ROUTES entries look like claude-*=anthropic (pattern=provider), got 'bad'",
    ]
    assert found[1].startswith("MODEL_ROUTES routes 'az-*' to azure, which has no OpenAI-comp")
    assert found[2].startswith("MODEL_ROUTES routes 'x' to 'nobody', which is not a provider")


def test_a_chain_naming_a_model_no_route_serves_is_refused() -> None:
    assert problems(MODEL_ROUTES="claude-*=anthropic", MODEL_FALLBACKS="claude-x>gpt-4o") == [
        "MODEL_FALLBACKS names 'gpt-4o', which no route serves (no MODEL_ROUTES pattern "
        "matches it and UPSTREAM_BASE_URL is not set)"
    ]
    assert problems(MODEL_ROUTES="claude-*=anthropic", MODEL_FALLBACKS="claude-x") == [
        "MODEL_FALLBACKS chains look like gpt-4o>claude-sonnet-4-5 (two models or more), "
        "got 'claude-x'"
    ]
    twice = problems(
        MODEL_ROUTES="claude-*=anthropic", MODEL_FALLBACKS="claude-a>claude-b,claude-a>claude-c"
    )
    assert twice == [
        "MODEL_FALLBACKS falls back from 'claude-a' in two chains: each model may have one "
        "next model"
    ]


def test_with_a_default_route_every_chain_model_is_served() -> None:
    settings = load_settings(
        {
            **BASE,
            "UPSTREAM_BASE_URL": "https://api.openai.com/v1",
            "UPSTREAM_API_KEY": "fake-openai-key",
            "MODEL_ROUTES": "claude-*=anthropic",
            "MODEL_FALLBACKS": "gpt-4o>claude-sonnet-4-5",
        }
    )
    assert settings.routing.routes == (("claude-*", "anthropic"),)
    assert settings.routing.fallbacks == (("gpt-4o", "claude-sonnet-4-5"),)


def test_check_prints_one_line_per_routing_problem() -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("UPSTREAM_", "MODEL_"))},
        **BASE,
        "MODEL_ROUTES": "claude-*=anthropic,gemini-*=gemini",
        "MODEL_FALLBACKS": "claude-x>gpt-4o",
    }
    result = subprocess.run([*CLI, "check"], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "error: MODEL_ROUTES routes 'gemini-*' to gemini, which has no key: set GEMINI_API_KEY",
        "error: MODEL_FALLBACKS names 'gpt-4o', which no route serves (no MODEL_ROUTES pattern "
        "matches it and UPSTREAM_BASE_URL is not set)",
    ]
    assert "fake-anthropic-key" not in result.stdout


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"model":"gpt-4o","n":1}', b'{"model":"claude-x","n":1}'),
        (
            b'{ "a": {"model": "inner"},\n  "model" :  "gpt-4o" }',
            b'{ "a": {"model": "inner"},\n  "model" :  "claude-x" }',
        ),
        (
            b'{"messages":[{"content":"say \\"model\\": x"}],"model":"g\\u0070t"}',
            b'{"messages":[{"content":"say \\"model\\": x"}],"model":"claude-x"}',
        ),
    ],
)
def test_only_the_top_level_model_value_changes(body: bytes, expected: bytes) -> None:
    assert with_model(body, "claude-x") == expected


@pytest.mark.parametrize(
    "body",
    [
        b'{"model":"a","model":"b"}',  # named twice: the upstream may read either
        b'{"mod\\u0065l":"a"}',  # an escaped name the bytes would not show
        b'{"model":null}',
        b'{"messages":[]}',
        b'{"model":"unterminated',
    ],
)
def test_an_ambiguous_model_is_not_rewritten(body: bytes) -> None:
    assert model_value_span(body) is None


def test_surface_records_keep_the_name_and_take_the_surface_key_header() -> None:
    gemini = next(r for r in CATALOGUE if r.name == "gemini" and r.openai_surface)
    routed = surface_record(gemini)
    assert (routed.name, routed.prefix, routed.error_shape) == ("gemini", "/v1", "openai")
    assert routed.targets.urls == ("https://generativelanguage.googleapis.com/v1beta/openai",)
    assert (routed.key_header, routed.key_template) == ("Authorization", "Bearer {key}")
    anthropic = next(r for r in CATALOGUE if r.name == "anthropic")
    assert surface_record(anthropic).targets.urls == ("https://api.anthropic.com/v1",)
    groq = next(r for r in CATALOGUE if r.name == "groq")
    assert surface_record(groq).targets.urls == ("https://api.groq.com/openai/v1",)
    assert groq.openai_surface == OpenAISurface()


def test_a_surface_without_stream_usage_is_not_asked_for_it() -> None:
    from core.protocols import Route
    from core.records import replace

    vendor = replace(
        next(r for r in CATALOGUE if r.name == "groq"),
        openai_surface=OpenAISurface(stream_usage=False),
    )
    chat = Route("metered", "chat", generates=True)
    document = {"model": "m", "stream": True}
    assert not surface_record(vendor).wire.stream_needs_usage_request(chat, document)
    assert surface_record(CATALOGUE[0]).wire.stream_needs_usage_request(chat, document)
