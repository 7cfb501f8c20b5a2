"""Tools the provider runs read their results into the request: the context window is reserved.

A web search, a file search, code run on the provider's side: their results are input
tokens the model reads within the same request, which the body's size says nothing of.
Only URL fetching and MCP reserved the context window; under RATE_LIMIT_TOKENS (a dollar
budget refuses tools billed per call, not a token limit), six requests with a web search
each reserved the few hundred tokens of their body, read 5,000, and all fitted a limit
with room for one. Sent at once over real sockets.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from core.protocols import WIRES
from tests.support.metered import AUTH, JSON, chat, chats_at_once, metered, models_or
from tests.support.scripted_upstream import ScriptedUpstream
from tests.support.servers import FAKE_TOKEN

_READ = {"input_tokens": 5_000, "output_tokens": 10}

_SERVER_TOOLS = [
    pytest.param(
        "/v1/responses",
        {
            "model": "fake-model",
            "max_output_tokens": 10,
            "input": "news?",
            "tools": [{"type": "web_search"}],
        },
        AUTH,
        {"usage": _READ},
        id="openai-web-search",
    ),
    pytest.param(
        "/v1/chat/completions",
        chat(max_tokens=10, tools=[{"type": "file_search", "vector_store_ids": ["vs_1"]}]),
        AUTH,
        {"usage": {"prompt_tokens": 5_000, "completion_tokens": 10}},
        id="openai-file-search",
    ),
    pytest.param(
        "/anthropic/v1/messages",
        {
            "model": "fake-model",
            "max_tokens": 10,
            "messages": [{"role": "user", "content": "news?"}],
            "tools": [{"type": "web_search_20250305", "name": "web_search"}],
        },
        {"x-api-key": FAKE_TOKEN},
        {"usage": _READ},
        id="anthropic-web-search",
    ),
    pytest.param(
        "/gemini/v1beta/models/fake-model:generateContent",
        {
            "contents": [{"parts": [{"text": "news?"}]}],
            "tools": [{"googleSearch": {}}],
            "generationConfig": {"maxOutputTokens": 10},
        },
        {"x-goog-api-key": FAKE_TOKEN},
        {"usageMetadata": {"promptTokenCount": 5_000, "candidatesTokenCount": 10}},
        id="gemini-google-search",
    ),
]


@pytest.mark.parametrize(("path", "body", "headers", "reply"), _SERVER_TOOLS)
def test_a_tool_the_provider_runs_cannot_pass_a_token_limit_concurrently(
    path: str, body: dict[str, Any], headers: dict[str, str], reply: dict[str, Any]
) -> None:
    content = json.dumps(reply).encode()
    upstream = ScriptedUpstream(models_or(lambda r: (200, JSON, [(0.5, content)])))
    with metered(upstream, RATE_LIMIT_TOKENS="6000") as proxy:
        headers = {**headers, "content-type": "application/json"}
        statuses = chats_at_once(proxy, 6, path=path, body=body, headers=headers)
    # One request fits (holding the room left); the others find none.
    assert statuses.count(200) == 1, statuses
    assert statuses.count(429) == 5, statuses


def test_only_the_tools_the_caller_runs_leave_the_body_to_bound_the_prompt() -> None:
    openai, anthropic, gemini = WIRES["openai"], WIRES["anthropic"], WIRES["gemini"]
    function = {"type": "function", "function": {"name": "f", "parameters": {}}}
    for kind in ("function", "custom", "computer_use_preview", "local_shell", "apply_patch"):
        assert openai.input_elsewhere({"tools": [{**function, "type": kind}]}) is None, kind
    for kind in ("web_search", "file_search", "code_interpreter", "mcp", "a_new_kind"):
        assert openai.input_elsewhere({"tools": [function, {"type": kind}]}) == "tools", kind
    for tool in ({"name": "f"}, {"type": "custom"}, {"type": "bash_20250124"}):
        assert anthropic.input_elsewhere({"tools": [tool]}) is None, tool
    for kind in ("web_search_20250305", "code_execution_20250825", "tool_search_tool_regex"):
        assert anthropic.input_elsewhere({"tools": [{"type": kind}]}) == "tools", kind
    for tool in ({"functionDeclarations": []}, {"computer_use": {}}):
        assert gemini.input_elsewhere({"tools": [tool]}) is None, tool
    for tool in ({"googleSearch": {}}, {"file_search": {}}, {"codeExecution": {}}):
        assert gemini.input_elsewhere({"tools": [tool]}) == "tools", tool
