"""Usage and tool calls as the Node SDKs read them from the mock upstream through the proxy:
the OpenAI Responses API (the Vercel AI SDK's default for `openai(model)`), whole and
streamed, and each AI SDK provider's usage and tool calls. The mock counts the prompt's
words in and its chunks out."""

from __future__ import annotations

from typing import Any

import pytest

from tests.sdk.test_node_sdks import node_results  # noqa: F401  (the fixture: one Node run)

RESPONSES_USAGE = {
    "input_tokens": 1,  # "hi"
    "input_tokens_details": {"cached_tokens": 0},
    "output_tokens": 8,  # the mock's default chunk count
    "output_tokens_details": {"reasoning_tokens": 0},
    "total_tokens": 9,
}


def test_node_openai_responses(node_results: dict[str, dict[str, Any]]) -> None:  # noqa: F811
    result = node_results["openai.responses"]
    assert result["ok"], result
    assert result["value"]["text"].startswith("Hello from the mock upstream")
    assert result["value"]["usage"] == RESPONSES_USAGE


def test_node_openai_responses_stream(node_results: dict[str, dict[str, Any]]) -> None:  # noqa: F811
    result = node_results["openai.responses.stream"]
    assert result["ok"], result
    assert result["value"] == {"deltas": 8, "usage": RESPONSES_USAGE}


@pytest.mark.parametrize("label", ["openai", "openai.responses", "anthropic", "google"])
def test_ai_sdk_reads_usage(node_results: dict[str, dict[str, Any]], label: str) -> None:  # noqa: F811
    result = node_results[f"ai.{label}.usage"]
    assert result["ok"], result
    for usage in (result["value"]["generate"], result["value"]["stream"]):
        # "hi there": 2 words in; 8 chunks out.
        assert (usage["inputTokens"], usage["outputTokens"], usage["totalTokens"]) == (2, 8, 10)


@pytest.mark.parametrize("label", ["openai", "openai.responses", "anthropic", "google"])
def test_ai_sdk_reads_tool_calls(node_results: dict[str, dict[str, Any]], label: str) -> None:  # noqa: F811
    result = node_results[f"ai.{label}.tool"]
    assert result["ok"], result
    call = {"name": "get_weather", "input": {"city": "mock", "unit": "celsius"}}
    assert result["value"] == {"generate": [call], "stream": [call]}
