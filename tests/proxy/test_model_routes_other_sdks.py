"""MODEL_ROUTES with the Vercel AI SDK (@ai-sdk/openai, tools/sdk-node/routing.mjs) and
LangChain's ChatOpenAI: one base URL reaches each provider's model, streamed and not, with
tools, and a chain's fallback answers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.proxy.conftest import Routed
from tests.proxy.test_model_routes_over_sockets import only_reached
from tests.support.servers import FAKE_TOKEN

TOOLS = Path(__file__).resolve().parents[2] / "tools" / "sdk-node"
REPLY = "Hello from the mock upstream, streamed token"


@pytest.fixture(scope="module")
def node_results(routed: Routed) -> dict[str, dict[str, Any]]:
    node = shutil.which("node")
    if node is None or not (TOOLS / "node_modules").is_dir():
        raise RuntimeError("Node SDKs are not installed: run `make sdk-node`")
    done = subprocess.run(
        [node, "routing.mjs"],
        cwd=TOOLS,
        env={**os.environ, "PROXY_URL": routed.proxy.url, "TOKEN": FAKE_TOKEN},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return {line["name"]: line for line in lines}


@pytest.mark.parametrize("model", ["claude-haiku-4-5", "gemini-2.5-flash", "deepseek-chat"])
def test_vercel_ai_sdk_reaches_each_routed_model(
    node_results: dict[str, dict[str, Any]], model: str
) -> None:
    generated = node_results[f"ai.generate.{model}"]
    assert generated["ok"], generated
    assert generated["value"] == {"text": REPLY, "model": model, "header": model}
    streamed = node_results[f"ai.stream.{model}"]
    assert streamed["ok"], streamed
    assert streamed["value"] == {"text": REPLY, "usage": 8}
    called = node_results[f"ai.tools.{model}"]
    assert called == {**called, "ok": True, "value": ["get_weather"]}


def test_vercel_ai_sdk_sees_the_fallback_model(node_results: dict[str, dict[str, Any]]) -> None:
    fallback = node_results["ai.fallback"]
    assert fallback["ok"], fallback
    assert fallback["value"] == {
        "text": REPLY,
        "model": "claude-sonnet-4-5",
        "header": "claude-sonnet-4-5",
    }
    listed = node_results["openai.models"]["value"]
    assert "claude-sonnet-4-5" in listed and "gemini-2.5-pro" in listed


def test_langchain_chat_openai_reaches_routed_models(routed: Routed) -> None:
    import langchain_openai

    for model, provider in (("claude-haiku-4-5", "anthropic"), ("gemini-2.5-flash", "gemini")):
        routed.reset()
        chat = langchain_openai.ChatOpenAI(
            model=model,
            base_url=f"{routed.proxy.url}/v1",
            api_key=FAKE_TOKEN,
            max_retries=0,
        )
        assert chat.invoke("hi").content == REPLY
        assert "".join(str(chunk.content) for chunk in chat.stream("hi")) == REPLY
        bound = chat.bind_tools(
            [
                {
                    "type": "function",
                    "function": {
                        "name": "get_weather",
                        "parameters": {
                            "type": "object",
                            "properties": {"city": {"type": "string"}},
                        },
                    },
                }
            ],
            tool_choice="get_weather",
        )
        assert [call["name"] for call in bound.invoke("hi").tool_calls] == ["get_weather"]
        assert len(only_reached(routed, provider)) == 3
