"""The request object (core/request.py): the model a request names, strict JSON (a field
named twice is refused), and the nesting bound."""

from __future__ import annotations

import pytest

from core.errors import BadRequest
from core.providers import Provider
from core.request import RepeatedField, build_request


def request_for(path: str, body: bytes, model_in_path: str = "", shape: str = "openai") -> object:
    provider = Provider(
        name="p",
        prefix="",
        upstream="https://up.test",
        error_shape=shape,
        model_in_path=model_in_path,  # type: ignore[arg-type]
    )
    scope = {
        "method": "POST",
        "path": path,
        "headers": [(b"content-type", b"application/json")],
        "query_string": b"",
    }
    request = build_request(scope, provider, path, None)
    request.body = body
    return request


@pytest.mark.parametrize(
    ("body", "path", "where", "model"),
    [
        (b'{"model": "gpt-4o"}', "/v1/chat/completions", "", "gpt-4o"),
        (b'{"model": "models/gemini-2.0-flash"}', "/chat/completions", "", "gemini-2.0-flash"),
        (b"", "/v1beta/models/gemini-2.0-flash:generateContent", "/models/", "gemini-2.0-flash"),
        (b"", "/openai/deployments/prod-4o/chat/completions", "/deployments/", "prod-4o"),
        (b'{"model": 5}', "/v1/chat/completions", "", None),
    ],
)
async def test_the_model_a_request_names(
    body: bytes, path: str, where: str, model: str | None
) -> None:
    request = request_for(path, body, where)
    assert await request.model() == model  # type: ignore[attr-defined]


async def test_json_is_parsed_once() -> None:
    request = request_for("/v1/chat/completions", b'{"model":"m","stream":true}')
    first = await request.document()  # type: ignore[attr-defined]
    assert await request.document() is first  # type: ignore[attr-defined]
    assert await request.is_stream()  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "body",
    [
        b'{"model":"a","model":"b"}',
        b'{"model":"a","Model":"b"}',
        b'{"max_tokens":1,"maxTokens":2}',
        b'{"stream_options":{},"STREAM_OPTIONS":{}}',
    ],
)
async def test_a_field_twice_in_any_spelling_is_refused(body: bytes) -> None:
    with pytest.raises(RepeatedField):
        await request_for("/v1/chat/completions", body).document()  # type: ignore[attr-defined]


async def test_unpoliced_fields_may_differ_in_case() -> None:
    # Tool schemas name properties as they like: only the fields rules read are policed.
    body = b'{"tools":[{"parameters":{"properties":{"id":{},"ID":{}}}}]}'
    assert await request_for("/v1/chat/completions", body).document()  # type: ignore[attr-defined]


async def test_deep_nesting_is_a_bad_request() -> None:
    with pytest.raises(BadRequest, match="nested"):
        await request_for("/v1/x", b"[" * 50_000 + b"]" * 50_000).document()  # type: ignore[attr-defined]
