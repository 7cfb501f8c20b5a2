"""What a provider can do is read from its record (core/providers.py), not its name."""

from __future__ import annotations

import re
from pathlib import Path

from core.admin.api import sdk_base_path
from core.providers import CATALOGUE, Provider, default_provider

CORE = Path(__file__).resolve().parents[2] / "core"


def _record(name: str, prefix: str) -> Provider:
    return next(r for r in CATALOGUE if r.name == name and r.prefix == prefix)


def test_only_geminis_own_route_has_its_upload_recovery_and_minting_capabilities() -> None:
    native = _record("gemini", "/gemini")
    assert native.resumable_uploads and native.stream_recovery and native.mints_auth_tokens
    others = [r for r in CATALOGUE if r is not native]
    assert not any(r.resumable_uploads or r.stream_recovery or r.mints_auth_tokens for r in others)


def test_realtime_sessions_speak_the_routes_protocol() -> None:
    assert _record("gemini", "/gemini").realtime == "gemini"
    assert _record("anthropic", "/anthropic").realtime == ""
    assert _record("openai", "/openai").realtime == "openai"
    # Gemini's OpenAI-compatible endpoint answers in OpenAI's shape.
    assert _record("gemini", "/gemini/v1beta/openai").realtime == "openai"


def test_each_route_names_the_sdk_and_base_path_that_suit_it() -> None:
    assert sdk_base_path(_record("anthropic", "/anthropic")) == ("anthropic", "/anthropic")
    assert sdk_base_path(_record("gemini", "/gemini")) == ("google-genai", "/gemini")
    assert sdk_base_path(_record("azure", "/azure")) == ("azure-openai", "/azure")
    compatible = _record("gemini", "/gemini/v1beta/openai")
    assert sdk_base_path(compatible) == ("openai", "/gemini/v1beta/openai/")
    assert sdk_base_path(_record("zhipu", "/zhipu")) == ("openai", "/zhipu/v4")
    assert sdk_base_path(_record("perplexity", "/perplexity")) == ("openai", "/perplexity")
    assert sdk_base_path(_record("groq", "/groq")) == ("openai", "/groq/v1")
    assert sdk_base_path(default_provider("http://127.0.0.1:9", "fake-key")) == ("openai", "/v1")


def test_no_code_path_branches_on_a_provider_name() -> None:
    comparison = re.compile(r"""(?:\.name|wire\.name)\s*[!=]=\s*["'](?:gemini|azure)["']""")
    offenders = [
        f"{path.relative_to(CORE)}:{number}"
        for path in CORE.rglob("*.py")
        if "devtools" not in path.parts
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if comparison.search(line)
    ]
    assert offenders == []
