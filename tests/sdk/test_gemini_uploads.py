"""Gemini's resumable upload (`files.upload`) through the proxy with the real google-genai
SDK: both legs reach the fake Gemini upload server through the proxy, the upload URL the
client sees names the proxy, and the upstream's host never reaches the client."""

from __future__ import annotations

import hashlib
import io
import os
from typing import Any

import httpx
from google import genai
from google.genai import types as genai_types

from tests.sdk.conftest import KEYS, SDKStack
from tests.support.servers import reset_upstream, upstream_requests

FILE_SIZE = 5 * 1024 * 1024


def recording_client(seen: list[bytes]) -> httpx.Client:
    """An httpx client that keeps every reply's headers and body: what the SDK saw."""

    def record(response: httpx.Response) -> None:
        response.read()
        seen.append(str(response.status_code).encode())
        seen.extend(name + b": " + value for name, value in response.headers.raw)
        seen.append(response.content)

    return httpx.Client(event_hooks={"response": [record]}, trust_env=False, timeout=30)


def assert_upload_went_through_proxy(
    stack: SDKStack, seen: list[bytes], data: bytes
) -> list[dict[str, Any]]:
    legs = [r for r in upstream_requests(stack.upstream) if r["path"].startswith("/upload/")]
    assert [leg["headers"]["x-goog-upload-command"] for leg in legs] == [
        "start",
        "upload, finalize",
    ]
    for leg in legs:
        # The real key only the proxy holds: each leg came through the proxy.
        assert leg["headers"]["x-goog-api-key"] == KEYS["GEMINI"]
        assert stack.token not in str(leg)
    upload = legs[1]
    assert upload["path"] == "/upload/v1beta/files"
    assert "upload_id=" in upload["query"]
    assert upload["body_length"] == len(data)
    assert upload["body_sha256"] == hashlib.sha256(data).hexdigest()
    # The upstream's host (the mock's port) never reached the client.
    mock_host = f"127.0.0.1:{stack.upstream.port}".encode()
    assert seen and not any(mock_host in item for item in seen)
    urls = [item for item in seen if item.startswith(b"x-goog-upload-url: ")]
    assert urls and all(
        url.startswith(f"x-goog-upload-url: {stack.proxy.url}/gemini/upload/".encode())
        for url in urls
    )
    return legs


def test_python_files_upload_through_the_proxy(stack: SDKStack, tmp_path: Any) -> None:
    reset_upstream(stack.upstream)
    data = os.urandom(FILE_SIZE)
    path = tmp_path / "report.bin"
    path.write_bytes(data)
    seen: list[bytes] = []
    with recording_client(seen) as http:
        options = genai_types.HttpOptions(
            base_url=f"{stack.proxy.url}/gemini", timeout=30_000, httpx_client=http
        )
        client = genai.Client(api_key=stack.token, http_options=options)
        uploaded = client.files.upload(
            file=str(path),
            config=genai_types.UploadFileConfig(mime_type="application/pdf", display_name="r"),
        )
    assert uploaded.size_bytes == FILE_SIZE
    assert uploaded.mime_type == "application/pdf"
    assert uploaded.name and uploaded.name.startswith("files/")
    assert_upload_went_through_proxy(stack, seen, data)


def test_python_files_upload_of_json_bytes(stack: SDKStack) -> None:
    """The SDK labels the raw bytes application/json: bytes that are not JSON pass, and so
    do bytes that are (never parsed, never refused)."""
    for data in (b"\x00not json{", b'{"a": 1, "a": 2}'):
        reset_upstream(stack.upstream)
        seen: list[bytes] = []
        with recording_client(seen) as http:
            options = genai_types.HttpOptions(
                base_url=f"{stack.proxy.url}/gemini", timeout=30_000, httpx_client=http
            )
            client = genai.Client(api_key=stack.token, http_options=options)
            uploaded = client.files.upload(
                file=io.BytesIO(data), config={"mime_type": "text/plain"}
            )
        assert uploaded.size_bytes == len(data)
        assert_upload_went_through_proxy(stack, seen, data)
