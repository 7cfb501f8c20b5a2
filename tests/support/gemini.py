"""Gemini helpers several suites share: the resumable upload's start headers and upload
leg (tests/proxy/test_gemini_upload_legs.py), and a proxy in front of a Gemini upstream
with an upstream whose streams never finish (tests/proxy/test_gemini_stream_recovery.py);
tests/security/test_findings.py uses both."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from core.app import create_app
from core.config import load_settings
from tests.support.scripted_upstream import ScriptedUpstream
from tests.support.servers import RunningServer, proxy_env, serve_in_thread

# ---- resumable uploads ----------------------------------------------------------------

UPLOAD_KEY = "mock-gemini-upload-key-not-real"
START = {
    "x-goog-upload-protocol": "resumable",
    "x-goog-upload-command": "start",
    "x-goog-upload-header-content-length": "11",
    "x-goog-upload-header-content-type": "text/plain",
    "content-type": "application/json",
}


def start_upload(proxy: RunningServer, token: str) -> str:
    """Starts an upload on `proxy`'s Gemini route with `token`; the upload URL it hands out."""
    reply = httpx.post(
        f"{proxy.url}/gemini/upload/v1beta/files",
        headers={**START, "x-goog-api-key": token},
        json={"file": {"display_name": "notes"}},
    )
    assert reply.status_code == 200, reply.text
    return reply.headers["x-goog-upload-url"]


def upload(url: str, data: bytes = b"hello world", **headers: str) -> httpx.Response:
    return httpx.post(
        url,
        content=data,
        headers={
            "x-goog-upload-command": "upload, finalize",
            "x-goog-upload-offset": "0",
            "content-type": "application/json",
            **headers,
        },
    )


# ---- stream recovery --------------------------------------------------------------------

RECOVERY_KEY = "mock-gemini-recovery-key-not-real"
STREAM_PATH = "/gemini/v1beta/models/gemini-test:streamGenerateContent"


@contextmanager
def gemini_proxy(upstream: RunningServer, **extra: str) -> Iterator[RunningServer]:
    env = proxy_env(
        upstream.url, GEMINI_API_KEY=RECOVERY_KEY, GEMINI_UPSTREAM=upstream.url, **extra
    )
    with serve_in_thread(create_app(load_settings(env))) as server:
        yield server


def never_finishing(
    on_request: Any = None, prompt_tokens: int = 10, output_tokens: int = 100
) -> ScriptedUpstream:
    """A Gemini upstream whose every stream ends without a finishReason, reporting
    `output_tokens` each time (a tenth of what `ask` allows): recovery asks again until
    something stops it."""

    def reply(request: dict[str, Any]) -> Any:
        if on_request is not None:
            on_request()
        candidate = {"content": {"role": "model", "parts": [{"text": "more "}]}}
        usage = {
            "promptTokenCount": prompt_tokens,
            "candidatesTokenCount": output_tokens,
            "totalTokenCount": prompt_tokens + output_tokens,
        }
        event = json.dumps({"candidates": [candidate], "usageMetadata": usage})
        return 200, [("content-type", "text/event-stream")], [(0, f"data: {event}\n\n".encode())]

    return ScriptedUpstream(reply)


def ask(proxy: RunningServer, token: str) -> httpx.Response:
    body = {
        "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
        "generationConfig": {"maxOutputTokens": 1000},
    }
    return httpx.post(
        f"{proxy.url}{STREAM_PATH}?alt=sse",
        json=body,
        headers={"x-goog-api-key": token},
        timeout=20,
    )
