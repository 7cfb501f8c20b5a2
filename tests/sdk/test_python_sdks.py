"""The real openai, anthropic and google-genai Python SDKs, each with only its base URL and
key changed: calls succeed streaming and not, the upstream sees the real key and never the
caller's token, and every error path raises that SDK's usual exception."""

from __future__ import annotations

from typing import Any

import anthropic
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from tests.sdk.conftest import KEYS, SDKStack
from tests.support.servers import reset_upstream, upstream_requests

MESSAGES: Any = [{"role": "user", "content": "hi"}]
BAD_TOKEN = "llmp_not-a-real-token-000000000000"


def only_upstream_request(stack: SDKStack) -> dict[str, Any]:
    [seen] = upstream_requests(stack.upstream)
    assert stack.token not in str(seen) and stack.scoped_token not in str(seen)
    return seen


# ---- openai ------------------------------------------------------------------------------


def openai_client(stack: SDKStack, key: str, **options: Any) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{stack.proxy.url}/openai/v1", api_key=key, max_retries=0, timeout=20, **options
    )


def test_openai_chat_and_stream(stack: SDKStack) -> None:
    reset_upstream(stack.upstream)
    reply = openai_client(stack, stack.token).chat.completions.create(
        model="gpt-test", messages=MESSAGES
    )
    assert reply.choices[0].message.content
    seen = only_upstream_request(stack)
    assert seen["path"] == "/v1/chat/completions"
    assert seen["headers"]["authorization"] == f"Bearer {KEYS['OPENAI']}"

    stream = openai_client(stack, stack.token).chat.completions.create(
        model="gpt-test", messages=MESSAGES, stream=True, extra_headers={"x-mock-chunks": "12"}
    )
    pieces = [
        c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content
    ]
    assert len(pieces) == 12


def test_azure_openai_client(stack: SDKStack) -> None:
    reset_upstream(stack.upstream)
    client = openai.AzureOpenAI(
        azure_endpoint=f"{stack.proxy.url}/azure",
        api_key=stack.token,
        api_version="2024-10-21",
        max_retries=0,
        timeout=20,
    )
    reply = client.chat.completions.create(model="my-deployment", messages=MESSAGES)
    assert reply.choices[0].message.content
    seen = only_upstream_request(stack)
    assert seen["path"] == "/openai/deployments/my-deployment/chat/completions"
    assert seen["query"] == "api-version=2024-10-21"
    assert seen["headers"]["api-key"] == KEYS["AZURE_OPENAI"]


def test_openai_sdk_on_gemini_openai_compatible_endpoint(stack: SDKStack) -> None:
    reset_upstream(stack.upstream)
    client = openai.OpenAI(
        base_url=f"{stack.proxy.url}/gemini/v1beta/openai/", api_key=stack.token, max_retries=0
    )
    reply = client.chat.completions.create(model="gemini-2.0-flash", messages=MESSAGES)
    assert reply.choices[0].message.content
    seen = only_upstream_request(stack)
    assert seen["path"] == "/v1beta/openai/chat/completions"
    assert seen["headers"]["authorization"] == f"Bearer {KEYS['GEMINI']}"


@pytest.mark.parametrize(
    ("case", "error"),
    [
        ("401", openai.AuthenticationError),
        ("403", openai.PermissionDeniedError),
        ("429", openai.RateLimitError),
        ("500", openai.InternalServerError),
    ],
)
def test_openai_error_paths(stack: SDKStack, case: str, error: type[Exception]) -> None:
    key, headers = failure(stack, case)
    with pytest.raises(error) as caught:
        openai_client(stack, key).chat.completions.create(
            model="gpt-test", messages=MESSAGES, extra_headers=headers
        )
    assert caught.value.status_code == int(case)  # type: ignore[attr-defined]
    assert KEYS["OPENAI"] not in str(caught.value)


def failure(stack: SDKStack, case: str) -> tuple[str, dict[str, str]]:
    """The key and headers that make each error: the proxy's 401/403, the upstream's 429/500."""
    if case == "401":
        return BAD_TOKEN, {}
    if case == "403":
        return stack.scoped_token, {}
    return stack.token, {"x-mock-status": case}


# ---- anthropic ---------------------------------------------------------------------------


def anthropic_client(stack: SDKStack, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=f"{stack.proxy.url}/anthropic", api_key=key, max_retries=0, timeout=20
    )


def test_anthropic_create_and_stream(stack: SDKStack) -> None:
    reset_upstream(stack.upstream)
    client = anthropic_client(stack, stack.token)
    reply = client.messages.create(model="claude-test", max_tokens=20, messages=MESSAGES)
    assert reply.content[0].text  # type: ignore[union-attr]
    seen = only_upstream_request(stack)
    assert seen["path"] == "/v1/messages"
    assert seen["headers"]["x-api-key"] == KEYS["ANTHROPIC"]
    assert seen["headers"]["anthropic-version"]

    with client.messages.stream(
        model="claude-test", max_tokens=20, messages=MESSAGES, extra_headers={"x-mock-chunks": "9"}
    ) as stream:
        pieces = list(stream.text_stream)
    assert len(pieces) == 9


def test_anthropic_count_tokens_path(stack: SDKStack) -> None:
    reset_upstream(stack.upstream)
    counted = anthropic_client(stack, stack.token).messages.count_tokens(
        model="claude-test", messages=MESSAGES
    )
    assert counted.input_tokens == 1  # the mock counts words: "hi"
    assert only_upstream_request(stack)["path"] == "/v1/messages/count_tokens"


@pytest.mark.parametrize(
    ("case", "error"),
    [
        ("401", anthropic.AuthenticationError),
        ("403", anthropic.PermissionDeniedError),
        ("429", anthropic.RateLimitError),
        ("500", anthropic.InternalServerError),
    ],
)
def test_anthropic_error_paths(stack: SDKStack, case: str, error: type[Exception]) -> None:
    key, headers = failure(stack, case)
    with pytest.raises(error) as caught:
        anthropic_client(stack, key).messages.create(
            model="claude-test", max_tokens=20, messages=MESSAGES, extra_headers=headers
        )
    assert caught.value.status_code == int(case)  # type: ignore[attr-defined]
    # The SDK read the proxy's error body: its message, not a parse failure.
    assert "error" in str(caught.value).lower()


# ---- google-genai ------------------------------------------------------------------------


def genai_client(stack: SDKStack, key: str, headers: dict[str, str] | None = None) -> genai.Client:
    options = genai_types.HttpOptions(
        base_url=f"{stack.proxy.url}/gemini", headers=headers, timeout=20_000
    )
    return genai.Client(api_key=key, http_options=options)


def test_gemini_generate_and_stream(stack: SDKStack) -> None:
    reset_upstream(stack.upstream)
    client = genai_client(stack, stack.token)
    reply = client.models.generate_content(model="gemini-2.0-flash", contents="hi")
    assert reply.text
    seen = only_upstream_request(stack)
    # The SDK picks the API version (v1 or v1beta by release); the proxy passes either.
    version = seen["path"].split("/")[1]
    assert version in ("v1", "v1beta")
    assert seen["path"] == f"/{version}/models/gemini-2.0-flash:generateContent"
    assert seen["headers"]["x-goog-api-key"] == KEYS["GEMINI"]
    assert "key=" not in seen["query"]

    reset_upstream(stack.upstream)
    # Keep the client referenced: a collected genai.Client closes its connection pool.
    streaming = genai_client(stack, stack.token, {"x-mock-chunks": "7"})
    chunks = list(streaming.models.generate_content_stream(model="gemini-2.0-flash", contents="hi"))
    assert len(chunks) == 7 and all(c.text for c in chunks)
    seen = only_upstream_request(stack)
    assert seen["path"] == f"/{version}/models/gemini-2.0-flash:streamGenerateContent"
    assert seen["query"] == "alt=sse"


@pytest.mark.parametrize(
    ("case", "error"),
    [
        ("401", genai_errors.ClientError),
        ("403", genai_errors.ClientError),
        ("429", genai_errors.ClientError),
        ("500", genai_errors.ServerError),
    ],
)
def test_gemini_error_paths(stack: SDKStack, case: str, error: type[Exception]) -> None:
    key, headers = failure(stack, case)
    client = genai_client(stack, key, headers or None)
    with pytest.raises(error) as caught:
        client.models.generate_content(model="gemini-2.0-flash", contents="hi")
    assert caught.value.code == int(case)  # type: ignore[attr-defined]
    if case in ("401", "403"):
        # The proxy's own error, in Google's shape, so the SDK shows its status and message.
        assert caught.value.status in ("UNAUTHENTICATED", "PERMISSION_DENIED")  # type: ignore[attr-defined]
