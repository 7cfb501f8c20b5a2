"""The request object (core/request.py): the model a request names, strict JSON (a field
named twice is refused), and the nesting bound."""

from __future__ import annotations

import json

import pytest

from core.errors import BadRequest
from core.protocols import WIRES
from core.providers import Provider
from core.request import RepeatedField, _parse, build_request


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


@pytest.mark.parametrize(
    "body",
    [
        '{"model":"m","messages":[{"role":"user","content":"\u00e9"}]}'.encode("utf-16"),
        '{"model":"m","messages":[{"role":"user","content":"\u00e9"}]}'.encode("utf-32-le"),
        b'\xef\xbb\xbf{"model":"m","max_tokens":3}',
        b'{"model":"m"} x',
        b'{"model":"m","MODEL":"n"}',
        b'{"Max_Tokens":1,"messages":[{"maxTokens":1,"max_tokens":2}]}',
        b"\xff",
    ],
)
def test_the_decoder_built_once_parses_as_json_loads_does(body: bytes) -> None:
    # On the event loop the strict decoder is built once (`shared`); on a worker thread
    # each body gets its own: the same document or the same refusal, every time.
    def outcome(shared: bool) -> object:
        try:
            return _parse(body, True, WIRES["openai"], shared=shared)
        except BadRequest as exc:
            return type(exc), str(exc)

    first = outcome(True)
    assert first == outcome(False) == outcome(True)
    if not isinstance(first, tuple):
        assert first == json.loads(body)


async def test_deep_nesting_is_a_bad_request() -> None:
    with pytest.raises(BadRequest, match="nested"):
        await request_for("/v1/x", b"[" * 50_000 + b"]" * 50_000).document()  # type: ignore[attr-defined]


def test_paths_are_checked_on_every_request_however_long_and_however_often() -> None:
    """Routes are worked out once per short path (a bounded cache); a refusal is never
    kept, and a long path is checked and routed afresh."""
    long_tail = "a" * 300
    for _ in range(2):
        with pytest.raises(BadRequest):
            request_for("/v1/chat/../completions", b"{}")
        with pytest.raises(BadRequest):
            request_for(f"/v1/{long_tail}/../chat/completions", b"{}")
    assert request_for("/v1/Chat//completions/", b"{}").route.name == "chat"  # type: ignore[attr-defined]
    long_path = f"/v1/{long_tail}/chat/completions"
    assert request_for(long_path, b"{}").route.name == "chat"  # type: ignore[attr-defined]
