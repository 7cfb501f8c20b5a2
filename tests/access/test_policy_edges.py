"""The request policy at its edges, in process: each cap at exactly its value and one past
it, each rule set alone, and the routes the policy lets pass or refuses by their kind
(reads, embeddings, uploads, batches). Found by mutation testing (docs/mutation.md): the
suite in test_policy.py only tried values far from the caps, with every rule set at once."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import respx

from core.app import create_app
from core.config import load_settings
from tests.support.servers import FAKE_TOKEN, FAKE_UPSTREAM_KEY

UPSTREAM = "https://api.upstream.test/v1"
GEMINI_UPSTREAM = "https://gemini.upstream.test"
AUTH = {"Authorization": f"Bearer {FAKE_TOKEN}"}


def env(**extra: str) -> dict[str, str]:
    return {
        "UPSTREAM_BASE_URL": UPSTREAM,
        "UPSTREAM_API_KEY": FAKE_UPSTREAM_KEY,
        "PROXY_ACCESS_TOKEN": FAKE_TOKEN,
        "GEMINI_API_KEY": "fake-gemini-key-not-real",
        "GEMINI_UPSTREAM": GEMINI_UPSTREAM,
        "UPSTREAM_TRANSPORT": "httpx",
        "ACCESS_LOG": "false",
        **extra,
    }


def chat(max_tokens: int | None = 10, messages: int = 1, **extra: object) -> dict[str, object]:
    body: dict[str, object] = {
        "model": "ok-model",
        "messages": [{"role": "user", "content": f"m{i}"} for i in range(messages)],
        **extra,
    }
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return body


class Proxy:
    """A proxy in process in front of a mock upstream that counts what reaches it."""

    def __init__(self, client: httpx.AsyncClient, upstream: respx.Router) -> None:
        self.client = client
        self.upstream = upstream

    async def post(self, path: str, **kwargs: object) -> httpx.Response:
        headers = {**AUTH, **kwargs.pop("headers", {})}  # type: ignore[dict-item]
        return await self.client.post(path, headers=headers, **kwargs)  # type: ignore[arg-type]

    @property
    def forwarded(self) -> int:
        return self.upstream.calls.call_count


async def _proxy(**settings: str) -> AsyncIterator[Proxy]:
    with respx.mock(assert_all_called=False) as upstream:
        upstream.route(host="api.upstream.test").respond(200, json={})
        upstream.route(host="gemini.upstream.test").respond(200, json={})
        app = create_app(load_settings(env(**settings)))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://proxy.test") as c:
            yield Proxy(c, upstream)


@pytest.fixture()
async def capped() -> AsyncIterator[Proxy]:
    async for proxy in _proxy(ALLOWED_MODELS="ok-*", MAX_TOKENS_CAP="256", MAX_MESSAGES="4"):
        yield proxy


@pytest.fixture()
async def models_only() -> AsyncIterator[Proxy]:
    async for proxy in _proxy(ALLOWED_MODELS="ok-*"):
        yield proxy


# ---- each cap at its value passes, one past it is refused --------------------------------


@pytest.mark.parametrize(
    ("body", "passes"),
    [
        (chat(messages=4), True),
        (chat(messages=5), False),
        (chat(max_tokens=256), True),
        (chat(max_tokens=257), False),
        # n answers of max_tokens each: the cap is on the product.
        (chat(max_tokens=128, n=2), True),
        (chat(max_tokens=129, n=2), False),
        (chat(max_tokens=100, n=3), False),
    ],
    ids=["4-messages", "5-messages", "256-tokens", "257-tokens", "2x128", "2x129", "3x100"],
)
async def test_a_cap_lets_its_own_value_through_and_refuses_one_more(
    capped: Proxy, body: dict[str, object], passes: bool
) -> None:
    reply = await capped.post("/v1/chat/completions", json=body)
    if passes:
        assert reply.status_code == 200, reply.text
        assert capped.forwarded == 1
    else:
        assert reply.status_code == 400
        assert reply.json()["error"]["code"] == "policy_violation"
        assert capped.forwarded == 0


@pytest.mark.parametrize(
    ("setting", "body", "rule"),
    [
        ({"MAX_MESSAGES": "2"}, chat(max_tokens=None, messages=3), "MAX_MESSAGES"),
        ({"MAX_TOKENS_CAP": "100"}, chat(max_tokens=10_000), "MAX_TOKENS_CAP"),
    ],
    ids=["messages-alone", "tokens-alone"],
)
async def test_each_cap_holds_when_it_is_the_only_rule(
    setting: dict[str, str], body: dict[str, object], rule: str
) -> None:
    async for proxy in _proxy(**setting):
        reply = await proxy.post("/v1/chat/completions", json=body)
        assert reply.status_code == 400
        assert reply.json()["error"]["message"].startswith(f"Policy {rule}:")
        assert proxy.forwarded == 0


# ---- what the route's kind decides -------------------------------------------------------


async def test_a_model_description_is_read_only_for_a_model_served(
    models_only: Proxy,
) -> None:
    """A read spends nothing, yet a model ALLOWED_MODELS refuses is not one this proxy
    serves: looked up, it is Gemini's own 404, answered without asking the upstream (whose
    answer would tell what it serves). A model on the list is looked up there."""
    reply = await models_only.client.get("/gemini/v1beta/models/other-model", headers=AUTH)
    assert reply.status_code == 404
    assert reply.json()["error"]["status"] == "NOT_FOUND"
    assert models_only.forwarded == 0
    reply = await models_only.client.get("/gemini/v1beta/models/ok-model", headers=AUTH)
    assert reply.status_code == 200
    assert models_only.forwarded == 1


async def test_embeddings_need_no_output_cap(capped: Proxy) -> None:
    reply = await capped.post("/v1/embeddings", json={"model": "ok-embed", "input": "hi"})
    assert reply.status_code == 200, reply.text


async def test_a_json_body_naming_no_model_is_refused_on_every_route(models_only: Proxy) -> None:
    for path, body in (
        ("/v1/embeddings", {"input": "hi"}),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
    ):
        reply = await models_only.post(path, json=body)
        assert reply.status_code == 403, path
        assert reply.json()["error"]["code"] == "model_not_allowed"
    assert models_only.forwarded == 0


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/embeddings", b""),
        ("/v1/chat/completions", b""),
        ("/v1/realtime/client_secrets", b""),
        ("/gemini/v1alpha/auth_tokens", b""),
        # A JSON body that names no model on a route the proxy cannot read either.
        ("/v1/images/generations", b"{}"),
    ],
)
async def test_a_request_that_may_spend_and_names_no_model_is_refused(
    path: str, body: bytes
) -> None:
    """An empty body has no document: it passed ALLOWED_MODELS on every route that does not
    generate text, and the provider ran (or minted a key for) its default model."""
    async for proxy in _proxy(ALLOWED_MODELS="ok-*", ALLOW_EPHEMERAL_KEYS="true"):
        reply = await proxy.post(path, content=body, headers={"content-type": "application/json"})
        assert reply.status_code == 403, reply.text
        assert "ALLOWED_MODELS" in reply.text
        assert proxy.forwarded == 0


async def test_a_generation_whose_body_is_not_json_names_no_model_and_is_refused(
    models_only: Proxy,
) -> None:
    reply = await models_only.post(
        "/v1/chat/completions", content=b"hello", headers={"content-type": "text/plain"}
    )
    assert reply.status_code == 403
    assert reply.json()["error"]["code"] == "model_not_allowed"
    assert models_only.forwarded == 0


async def test_an_upload_that_is_not_json_passes_the_model_list(models_only: Proxy) -> None:
    reply = await models_only.post(
        "/v1/files",
        content=b"--b\r\nx\r\n--b--\r\n",
        headers={"content-type": "multipart/form-data; boundary=b"},
    )
    assert reply.status_code == 200, reply.text


@pytest.mark.parametrize(
    "body", [b'  {"model": "ok-1\xff"}', b'[{"model": "ok-1\xff"}]', b'{"model": "ok-1\xff"}']
)
async def test_a_body_shaped_like_json_it_cannot_parse_is_refused_by_the_policy(
    models_only: Proxy, body: bytes
) -> None:
    """Sent as text/plain with invalid UTF-8: the refusal says why (the policy cannot read
    it), not that the caller sent bad JSON, since a lenient provider would read it."""
    reply = await models_only.post(
        "/v1/chat/completions", content=body, headers={"content-type": "text/plain"}
    )
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["code"] == "policy_violation"
    assert "not valid JSON" in error["message"]
    assert models_only.forwarded == 0


async def test_a_batch_is_refused_while_an_output_cap_is_set(capped: Proxy) -> None:
    """A batch's requests run later, outside any reply: a body that looks within the caps
    says nothing about them."""
    body = {"model": "ok-model", "input_file_id": "file-1", "max_tokens": 5, "messages": []}
    reply = await capped.post("/v1/batches", json=body)
    assert reply.status_code == 400
    assert "(a batch)" in reply.json()["error"]["message"]
    assert capped.forwarded == 0


def form(*fields: tuple[str, bytes], boundary: str = "xyz") -> tuple[bytes, dict[str, str]]:
    """A multipart form as the openai SDK sends a transcription."""
    body = b""
    for name, value in fields:
        filename = '; filename="a.wav"' if name == "file" else ""
        body += (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"{filename}\r\n\r\n'
            ).encode()
            + value
            + b"\r\n"
        )
    body += f"--{boundary}--\r\n".encode()
    return body, {"content-type": f"multipart/form-data; boundary={boundary}"}


@pytest.mark.parametrize(
    "path",
    ["/v1/audio/transcriptions", "/v1/audio/translations", "/v1/images/edits"],
)
async def test_a_form_names_its_model_and_the_list_holds_to_it(
    models_only: Proxy, path: str
) -> None:
    allowed, headers = form(("file", b"RIFF\x00\x01"), ("model", b"ok-whisper"))
    assert (await models_only.post(path, content=allowed, headers=headers)).status_code == 200
    refused, headers = form(("file", b"RIFF\x00\x01"), ("model", b"whisper-large"))
    reply = await models_only.post(path, content=refused, headers=headers)
    assert reply.status_code == 403
    assert reply.json()["error"]["code"] == "model_not_allowed"
    assert models_only.forwarded == 1


@pytest.mark.parametrize(
    "fields",
    [
        # Named twice (a provider's form reader may keep either).
        (("model", b"ok-whisper"), ("model", b"whisper-large")),
        (("model", b"ok-whisper"), ("MODEL", b"whisper-large")),
    ],
)
async def test_a_form_naming_its_model_twice_is_refused(
    models_only: Proxy, fields: tuple[tuple[str, bytes], ...]
) -> None:
    body, headers = form(("file", b"RIFF"), *fields)
    reply = await models_only.post("/v1/audio/transcriptions", content=body, headers=headers)
    assert reply.status_code == 400
    assert reply.json()["error"]["code"] == "repeated_field"
    assert models_only.forwarded == 0


async def test_a_form_the_proxy_cannot_read_is_refused_not_guessed(models_only: Proxy) -> None:
    body = b"--xyz\r\nContent-Disposition: form-data; name*=UTF-8''model\r\n\r\nbig\r\n--xyz--"
    headers = {"content-type": "multipart/form-data; boundary=xyz"}
    extended = await models_only.post("/v1/audio/transcriptions", content=body, headers=headers)
    assert extended.status_code == 400
    unclosed, headers = form(("model", b"whisper-large"))
    reply = await models_only.post(
        "/v1/audio/transcriptions", content=unclosed[:-8], headers=headers
    )
    assert reply.status_code == 400
    assert models_only.forwarded == 0


async def test_a_browsers_form_keeps_its_boundarys_case(models_only: Proxy) -> None:
    # Chrome and Safari: `----WebKitFormBoundary...`, mixed case, as fetch(FormData) sends.
    boundary = "----WebKitFormBoundary7MA4YWxkTrZu0gW"
    body, headers = form(("file", b"RIFF"), ("model", b"ok-whisper"), boundary=boundary)
    reply = await models_only.post("/v1/audio/transcriptions", content=body, headers=headers)
    assert reply.status_code == 200, reply.text


@pytest.mark.parametrize(
    "content_type",
    [
        "multipart/form-data; xboundary=aaa; boundary=bbb",
        'multipart/form-data; charset="boundary=aaa"; boundary=bbb',
    ],
)
async def test_the_boundary_is_the_parameter_a_header_parser_reads(
    models_only: Proxy, content_type: str
) -> None:
    """A decoy form under `--aaa` names an allowed model; the form under the real boundary,
    the one the provider reads, names another."""
    decoy, _ = form(("model", b"ok-whisper"), boundary="aaa")
    real, _ = form(("file", b"RIFF"), ("model", b"gpt-4o-transcribe"), boundary="bbb")
    reply = await models_only.post(
        "/v1/audio/transcriptions",
        content=decoy + real,
        headers={"content-type": content_type},
    )
    assert reply.status_code == 403, reply.text
    assert models_only.forwarded == 0


async def test_a_folded_model_field_is_read_and_a_form_naming_none_is_refused(
    models_only: Proxy,
) -> None:
    folded = (
        b'--xyz\r\nContent-Disposition: form-data;\r\n name="model"\r\n\r\n'
        b"gpt-4o-transcribe\r\n--xyz--\r\n"
    )
    headers = {"content-type": "multipart/form-data; boundary=xyz"}
    reply = await models_only.post("/v1/audio/transcriptions", content=folded, headers=headers)
    assert reply.status_code == 403
    # No model at all: the provider would run its default image model.
    body, headers = form(("image", b"PNG"), ("prompt", b"a cat"))
    reply = await models_only.post("/v1/images/edits", content=body, headers=headers)
    assert reply.status_code == 403
    assert reply.json()["error"]["code"] == "model_not_allowed"
    assert models_only.forwarded == 0


async def test_a_form_spelling_its_model_field_otherwise_is_refused(models_only: Proxy) -> None:
    """`Model` or ` model` is another field to the provider's parser, which would run its
    default model: the proxy does not read it as the model."""
    for spelled in ("Model", " model"):
        body, headers = form(("file", b"RIFF"), (spelled, b"ok-whisper"))
        reply = await models_only.post("/v1/audio/transcriptions", content=body, headers=headers)
        assert reply.status_code == 400, reply.text
        assert reply.json()["error"]["code"] == "unreadable_form"
    assert models_only.forwarded == 0


async def test_a_form_with_a_value_ending_in_a_line_break_keeps_it(models_only: Proxy) -> None:
    """Parts end at CRLF + delimiter: a value's own trailing bytes stay its own."""
    body, headers = form(("file", b"RIFF\r\n"), ("model", b"ok-whisper"))
    reply = await models_only.post("/v1/audio/transcriptions", content=body, headers=headers)
    assert reply.status_code == 200, reply.text
