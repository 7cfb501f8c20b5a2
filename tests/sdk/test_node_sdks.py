"""The real Node SDKs (openai, @anthropic-ai/sdk, @google/genai, the Vercel AI SDK with @ai-sdk/openai,
@ai-sdk/anthropic and @ai-sdk/google) against the proxy: tools/sdk-node/run.mjs prints one line per
case."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.sdk.conftest import KEYS, SDKStack
from tests.support.servers import reset_upstream, upstream_requests

TOOLS = Path(__file__).resolve().parents[2] / "tools" / "sdk-node"

EXPECTED_ERRORS = {
    "openai": {
        "401": "AuthenticationError",
        "403": "PermissionDeniedError",
        "429": "RateLimitError",
        "500": "InternalServerError",
    },
    "anthropic": {
        "401": "AuthenticationError",
        "403": "PermissionDeniedError",
        "429": "RateLimitError",
        "500": "InternalServerError",
    },
    "ai.openai": dict.fromkeys(("401", "403", "429", "500"), "APICallError"),
    "ai.openai.responses": dict.fromkeys(("401", "403", "429", "500"), "APICallError"),
    "ai.anthropic": dict.fromkeys(("401", "403", "429", "500"), "APICallError"),
    "ai.google": dict.fromkeys(("401", "403", "429", "500"), "APICallError"),
    # @google/genai has one error class, with the status on it.
    "gemini": dict.fromkeys(("401", "403", "429", "500"), "ApiError"),
}


@pytest.fixture(scope="module")
def node_results(stack: SDKStack) -> dict[str, dict[str, Any]]:
    node = shutil.which("node")
    if node is None or not (TOOLS / "node_modules").is_dir():
        raise RuntimeError(
            "Node SDKs are not installed: run `make sdk-node` (npm ci in tools/sdk-node)"
        )
    reset_upstream(stack.upstream)
    env = {
        **os.environ,
        "PROXY_URL": stack.proxy.url,
        "TOKEN": stack.token,
        "SCOPED_TOKEN": stack.scoped_token,
        "UPSTREAM_HOST": f"127.0.0.1:{stack.upstream.port}",
    }
    done = subprocess.run(
        [node, "run.mjs"],
        cwd=TOOLS,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    results = {}
    for line in done.stdout.splitlines():
        if not line.startswith("{"):
            continue  # a library's own notice, not a result
        case = json.loads(line)
        results[case.pop("name")] = case
    # Whatever the Node clients sent, the upstream saw real keys and never a caller token.
    seen = upstream_requests(stack.upstream)
    assert seen, "the Node SDKs reached no upstream"
    for request in seen:
        assert stack.token not in str(request) and stack.scoped_token not in str(request)
        assert request["headers"].get("authorization") == f"Bearer {KEYS['OPENAI']}" or (
            request["headers"].get("x-api-key") == KEYS["ANTHROPIC"]
            or request["headers"].get("x-goog-api-key") == KEYS["GEMINI"]
        )
    # Both legs of the Gemini upload reached the upstream, with the key only the proxy has.
    results["gemini.files.upload.legs"] = {
        "ok": True,
        "value": [
            {key: request[key] for key in ("path", "query", "body_sha256", "body_length")}
            | {"command": request["headers"].get("x-goog-upload-command")}
            for request in seen
            if str(request["path"]).startswith("/upload/")
        ],
    }
    return results


@pytest.mark.parametrize(
    "case",
    [
        "openai.chat",
        "anthropic.create",
        "ai.openai.generateText",
        "ai.openai.responses.generateText",
        "ai.anthropic.generateText",
        "ai.google.generateText",
        "gemini.generate",
    ],
)
def test_node_call_succeeds(node_results: dict[str, dict[str, Any]], case: str) -> None:
    result = node_results[case]
    assert result["ok"], result
    assert result["value"].startswith("Hello from the mock upstream")


@pytest.mark.parametrize(
    "case",
    [
        "openai.stream",
        "anthropic.stream",
        "ai.openai.streamText",
        "ai.openai.responses.streamText",
        "ai.anthropic.streamText",
        "ai.google.streamText",
        "gemini.stream",
    ],
)
def test_node_stream_yields_every_chunk(node_results: dict[str, dict[str, Any]], case: str) -> None:
    result = node_results[case]
    assert result["ok"], result
    assert result["value"] == 8  # the mock upstream's default chunk count


@pytest.mark.parametrize(
    ("sdk", "status"),
    [(sdk, status) for sdk in EXPECTED_ERRORS for status in ("401", "403", "429", "500")],
)
def test_node_error_raises_the_sdks_own_exception(
    node_results: dict[str, dict[str, Any]], sdk: str, status: str
) -> None:
    result = node_results[f"{sdk}.error.{status}"]
    assert not result["ok"]
    assert result["errorClass"] == EXPECTED_ERRORS[sdk][status], result
    assert result["status"] == int(status), result


def test_node_gemini_files_upload_through_the_proxy(
    stack: SDKStack, node_results: dict[str, dict[str, Any]]
) -> None:
    result = node_results["gemini.files.upload"]
    assert result["ok"], result
    uploaded = result["value"]
    assert uploaded["sizeBytes"] == str(5 * 1024 * 1024)
    assert uploaded["mimeType"] == "application/pdf"
    # The upload URL the SDK was handed names the proxy, under the Gemini prefix.
    assert uploaded["uploadUrls"] and all(
        url.startswith(f"x-goog-upload-url: {stack.proxy.url}/gemini/upload/v1beta/files?")
        for url in uploaded["uploadUrls"]
    )
    assert uploaded["upstreamHostSeen"] is False
    start, upload = node_results["gemini.files.upload.legs"]["value"]
    assert start["command"] == "start"
    assert upload["command"] == "upload, finalize"
    assert upload["path"] == "/upload/v1beta/files" and "upload_id=" in upload["query"]
    assert upload["body_length"] == 5 * 1024 * 1024
    assert upload["body_sha256"] == uploaded["sha256"]
