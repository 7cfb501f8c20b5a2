"""Security review: each test pins one defect a caller could exploit (see the docstrings)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import respx

from core.access.tokens import create_token
from core.app import MisconfiguredApp, create_app
from core.config import ConfigError, load_settings
from core.stores import open_store
from core.types import ASGIApp
from tests.support.servers import FAKE_TOKEN, FAKE_UPSTREAM_KEY

UPSTREAM = "https://api.upstream.test/v1"
AUTH = {"Authorization": f"Bearer {FAKE_TOKEN}", "content-type": "application/json"}


def env(**extra: str) -> dict[str, str]:
    return {
        "UPSTREAM_BASE_URL": UPSTREAM,
        "UPSTREAM_API_KEY": FAKE_UPSTREAM_KEY,
        "PROXY_ACCESS_TOKEN": FAKE_TOKEN,
        "UPSTREAM_TRANSPORT": "httpx",
        "ACCESS_LOG": "false",
        **extra,
    }


def client(app: ASGIApp) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://proxy.test")


@pytest.fixture()
async def scoped(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """A proxy with a token store and a token limited to the model `cheap-*`."""
    url = f"sqlite:///{tmp_path}/tokens.db"
    token, _ = create_token(open_store(url), "alice", models=("cheap-*",))
    async with client(create_app(load_settings(env(TOKEN_STORE=url)))) as c:
        yield c, token


# ---- JSON bodies that name one field twice ------------------------------------------
# Python's json keeps the last value; a provider (or a gateway in front of it) that reads
# the first one would run the forbidden model or the uncapped output the proxy never saw.

DUPLICATE_MODEL = b'{"model":"expensive-model","model":"cheap-1","messages":[]}'


@respx.mock
async def test_scoped_token_refuses_a_body_that_names_the_model_twice(
    scoped: tuple[httpx.AsyncClient, str],
) -> None:
    proxy, token = scoped
    route = respx.post(f"{UPSTREAM}/chat/completions").respond(200, json={})
    headers = {"Authorization": f"Bearer {token}", "content-type": "application/json"}
    allowed = await proxy.post(
        "/v1/chat/completions", content=b'{"model":"cheap-1"}', headers=headers
    )
    assert allowed.status_code == 200
    response = await proxy.post("/v1/chat/completions", content=DUPLICATE_MODEL, headers=headers)
    assert response.status_code in (400, 403), response.text
    assert route.call_count == 1
    assert "error" in response.json()


@respx.mock
async def test_model_allowlist_refuses_a_body_that_names_the_model_twice() -> None:
    route = respx.post(f"{UPSTREAM}/chat/completions").respond(200, json={})
    async with client(create_app(load_settings(env(ALLOWED_MODELS="cheap-*")))) as proxy:
        response = await proxy.post("/v1/chat/completions", content=DUPLICATE_MODEL, headers=AUTH)
    assert response.status_code in (400, 403), response.text
    assert route.call_count == 0


@respx.mock
async def test_output_cap_refuses_a_body_that_names_max_tokens_twice() -> None:
    route = respx.post(f"{UPSTREAM}/chat/completions").respond(200, json={})
    body = b'{"model":"m","messages":[],"max_tokens":100000,"max_tokens":10}'
    async with client(create_app(load_settings(env(MAX_TOKENS_CAP="100")))) as proxy:
        response = await proxy.post("/v1/chat/completions", content=body, headers=AUTH)
    assert response.status_code == 400, response.text
    assert route.call_count == 0


# ---- the caller's ?key= in any spelling stays here -----------------------------------


@respx.mock
@pytest.mark.parametrize("param", ["KEY", "Key", "%6Bey", "%6b%65%79"])
async def test_key_param_in_another_spelling_is_not_forwarded(param: str) -> None:
    route = respx.get(url__startswith=f"{UPSTREAM}/models").respond(200, json={})
    async with client(create_app(load_settings(env()))) as proxy:
        response = await proxy.get(
            f"/v1/models?alt=sse&{param}={FAKE_TOKEN}", headers={"x-goog-api-key": FAKE_TOKEN}
        )
    assert response.status_code == 200
    sent = route.calls.last.request.url
    assert FAKE_TOKEN not in str(sent)
    assert sent.query == b"alt=sse"


@respx.mock
async def test_key_param_spelled_otherwise_still_authenticates() -> None:
    route = respx.get(url__startswith=f"{UPSTREAM}/models").respond(200, json={})
    async with client(create_app(load_settings(env()))) as proxy:
        response = await proxy.get(f"/v1/models?%6Bey={FAKE_TOKEN}")
    assert response.status_code == 200
    assert FAKE_TOKEN not in str(route.calls.last.request.url)


# ---- a path an adapter hands over already decoded -------------------------------------


@respx.mock
async def test_decoded_path_cannot_add_a_query_or_fragment_upstream() -> None:
    """Mangum (API Gateway REST, ALB) passes `raw_path: None` and a percent-decoded `path`:
    `%3F` in the caller's path must not become the start of the upstream query."""
    route = respx.route(host="api.upstream.test").respond(200, json={})
    app = create_app(load_settings(env()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "https",
        "path": "/v1/models/a?b=c#frag é",
        "raw_path": None,
        "root_path": "",
        "query_string": b"x=1",
        "headers": [(b"authorization", f"Bearer {FAKE_TOKEN}".encode())],
        "client": ("203.0.113.9", 0),
        "server": ("proxy.test", 443),
    }
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    assert sent[0]["status"] == 200
    url = route.calls.last.request.url
    assert url.raw_path == b"/v1/models/a%3Fb=c%23frag%20%C3%A9?x=1"


# ---- what a printed Settings object shows ---------------------------------------------


def test_settings_repr_hides_the_store_password() -> None:
    settings = load_settings(
        env(
            TOKEN_STORE="redis://:s3cret-store-password@redis.internal:6379/0",
            RATE_LIMIT_REQUESTS="10",
        )
    )
    assert "s3cret-store-password" not in repr(settings)
    settings = load_settings(
        env(
            LIMIT_STORE="rediss://:s3cret-store-password@redis.internal:6380",
            RATE_LIMIT_REQUESTS="1",
        )
    )
    assert "s3cret-store-password" not in repr(settings)


# ---- a misconfigured deployment answers everyone ------------------------------------


async def test_misconfigured_reply_does_not_echo_variable_values() -> None:
    """Swapping UPSTREAM_BASE_URL and UPSTREAM_API_KEY is an easy mistake; the 500 every
    caller then receives must name the variable, not print the key."""
    leaked = "sk-fake-pasted-into-wrong-var"
    import os

    saved = dict(os.environ)
    os.environ.update(
        {"UPSTREAM_BASE_URL": leaked, "UPSTREAM_API_KEY": "x", "PROXY_ACCESS_TOKEN": FAKE_TOKEN}
    )
    try:
        app = create_app()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    async with client(app) as proxy:
        response = await proxy.get("/v1/models")
    assert response.status_code == 500
    assert leaked not in response.text
    assert "UPSTREAM_BASE_URL" in response.json()["error"]["message"]


PASTED = "sk-fake-pasted-secret-0123456789"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        # Problems that quote the value inside the sentence, not after ", got ".
        ("MODEL_ROUTES", f"{PASTED}=nosuchprovider"),
        ("MODEL_FALLBACKS", f"{PASTED}>{PASTED}"),
        ("MODEL_PRICES", json.dumps({PASTED: 1})),
        ("UPSTREAM_BASE_URL", f"https://user:{PASTED}@api.upstream.test/v1?key={PASTED}"),
    ],
)
async def test_misconfigured_reply_names_only_the_variable(variable: str, value: str) -> None:
    """Every caller gets the misconfigured reply: what a problem quotes (a value, a URL, a
    secret's ARN) stays in the operator's log, whatever the problem's wording."""
    with pytest.raises(ConfigError) as caught:
        load_settings(env(**{variable: value}))
    app = MisconfiguredApp(caught.value.problems)
    async with client(app) as proxy:
        response = await proxy.get("/v1/models")
    assert response.status_code == 500
    assert variable in response.json()["error"]["message"]
    assert PASTED not in response.text
    assert "upstream.test" not in response.text


async def test_misconfigured_reply_keeps_a_store_problem_to_the_log() -> None:
    problem = "TOKEN_STORE could not be opened (OperationalError: /srv/acme-prod/tokens.db)"
    async with client(MisconfiguredApp([problem])) as proxy:
        response = await proxy.get("/v1/models")
    message = response.json()["error"]["message"]
    assert "TOKEN_STORE" in message
    assert "acme-prod" not in message


# ---- what the provider's reply says about the key owner -----------------------------


@respx.mock
async def test_anthropic_organization_id_is_not_passed_to_the_caller() -> None:
    respx.post("https://api.anthropic.test/v1/messages").respond(
        200, json={}, headers={"anthropic-organization-id": "org-key-owner", "request-id": "r1"}
    )
    settings = load_settings(
        env(ANTHROPIC_API_KEY=FAKE_UPSTREAM_KEY, ANTHROPIC_UPSTREAM="https://api.anthropic.test")
    )
    async with client(create_app(settings)) as proxy:
        response = await proxy.post(
            "/anthropic/v1/messages", content=b"{}", headers={"x-api-key": FAKE_TOKEN}
        )
    assert response.status_code == 200
    assert "anthropic-organization-id" not in response.headers
    assert response.headers["request-id"] == "r1"
    assert json.loads(response.content) == {}


# ---- a body only a lenient provider reads as JSON --------------------------------------


@respx.mock
@pytest.mark.parametrize("content_type", ["text/plain", None])
async def test_policy_refuses_json_it_cannot_read(content_type: str | None) -> None:
    """Invalid UTF-8 inside a string, sent as text/plain: Python cannot parse it (so the
    policy saw no model and no cap), while a Go server (Ollama, many gateways) reads it."""
    route = respx.post(f"{UPSTREAM}/chat/completions").respond(200, json={})
    respx.post(f"{UPSTREAM}/files").respond(200, json={})
    body = b'{"model":"expensive-model","max_tokens":999999,"messages":[{"role":"user","content":"\xff"}]}'
    headers = {"Authorization": f"Bearer {FAKE_TOKEN}"}
    if content_type:
        headers["content-type"] = content_type
    settings = load_settings(env(ALLOWED_MODELS="cheap-*", MAX_TOKENS_CAP="100"))
    async with client(create_app(settings)) as proxy:
        response = await proxy.post("/v1/chat/completions", content=body, headers=headers)
        upload = await proxy.post(
            "/v1/files",
            content=b"--b\r\n\xff\r\n--b--\r\n",
            headers={**headers, "content-type": "multipart/form-data; boundary=b"},
        )
    assert response.status_code == 400, response.text
    assert route.call_count == 0
    assert upload.status_code == 200  # an upload that is not JSON still passes the policy


# ---- climbing out of the upstream's base path ----------------------------------------


@respx.mock
@pytest.mark.parametrize(
    "path", ["/v1/..;/admin", "/v1/x/.;jsessionid=1/admin", "/v1/%2e%2e;x/admin"]
)
async def test_dot_segments_with_path_parameters_are_refused(path: str) -> None:
    """Servlet containers (Tomcat, Spring, many API gateways) read `..;` as `..`: behind
    one, the caller would leave UPSTREAM_BASE_URL's path for any other on that host."""
    route = respx.route(host="api.upstream.test").respond(200, json={})
    async with client(create_app(load_settings(env()))) as proxy:
        response = await proxy.get(path, headers=AUTH)
    assert response.status_code == 400, response.text
    assert route.call_count == 0


# ---- Gemini methods on resources other than /models/ ---------------------------------
GEMINI = "https://gemini.upstream.test"


@respx.mock
async def test_model_scope_covers_gemini_tuned_models(tmp_path: Path) -> None:
    """`tunedModels/x:generateContent` runs a tuned model, whatever the body says."""
    url = f"sqlite:///{tmp_path}/tokens.db"
    token, _ = create_token(open_store(url), "bob", models=("gemini-2.0-flash*",))
    extra = {"TOKEN_STORE": url, "GEMINI_API_KEY": "fake-gemini-key", "GEMINI_UPSTREAM": GEMINI}
    route = respx.post(url__startswith=GEMINI).respond(200, json={})
    headers = {"x-goog-api-key": token, "content-type": "application/json"}
    body = b'{"model":"gemini-2.0-flash","contents":[]}'
    async with client(create_app(load_settings(env(**extra)))) as proxy:
        allowed = await proxy.post(
            "/gemini/v1beta/models/gemini-2.0-flash:generateContent", content=body, headers=headers
        )
        tuned = await proxy.post(
            "/gemini/v1beta/tunedModels/my-tuned:generateContent", content=body, headers=headers
        )
    assert allowed.status_code == 200
    assert tuned.status_code == 403, tuned.text
    assert tuned.json()["error"]["status"] == "PERMISSION_DENIED"
    assert route.call_count == 1


# ---- the model list MODEL_ROUTES builds ----------------------------------------------
ANTHROPIC = "https://anthropic.upstream.test"
ANTHROPIC_KEY = "fake-anthropic-key-for-the-list-0123"


@respx.mock
async def test_the_routed_model_list_is_scrubbed_of_the_keys() -> None:
    """`GET /v1/models` under MODEL_ROUTES is a reply the proxy writes from each provider's
    own list: an upstream that echoes its key into an id, whole or masked, reached the
    caller there, past the scrubber every relayed reply goes through."""
    masked = ANTHROPIC_KEY[:7] + "****" + ANTHROPIC_KEY[-4:]
    respx.get(f"{UPSTREAM}/models").respond(
        200, json={"data": [{"id": "gpt-4o"}, {"id": f"gpt-echo-{FAKE_UPSTREAM_KEY}"}]}
    )
    respx.get(f"{ANTHROPIC}/v1/models").respond(
        200, json={"data": [{"id": "claude-a"}, {"id": f"claude-echo-{masked}"}]}
    )
    extra = {
        "ANTHROPIC_API_KEY": ANTHROPIC_KEY,
        "ANTHROPIC_UPSTREAM": ANTHROPIC,
        "MODEL_ROUTES": "claude-*=anthropic",
    }
    async with client(create_app(load_settings(env(**extra)))) as proxy:
        reply = await proxy.get("/v1/models", headers=AUTH)
    assert reply.status_code == 200, reply.text
    ids = [model["id"] for model in reply.json()["data"]]
    assert "gpt-4o" in ids and "claude-a" in ids, ids
    for secret in (FAKE_UPSTREAM_KEY, ANTHROPIC_KEY, masked, ANTHROPIC_KEY[-8:]):
        assert secret not in reply.text


# ---- a multipart form read otherwise by the provider's form parser --------------------


def _form_model_as_an_upstream_reads_it(body: bytes, boundary: bytes) -> str | None:
    """What python-multipart (FastAPI, Starlette: vLLM, LiteLLM and most OpenAI-compatible
    servers) reads as `model`: parts open at CRLF + delimiter, each Content-Disposition's
    parameters are read as a header parser reads them (quoted strings kept whole), and a
    parameter named twice keeps its last value."""
    from email.message import Message

    model = None
    parts: list[bytes] = []
    for piece in (b"\r\n" + body).split(b"\r\n--" + boundary)[1:]:
        if piece.startswith((b"\r\n", b"--")) or not parts:
            parts.append(piece)
        else:  # `--Bx`: no delimiter, the previous part's content goes on
            parts[-1] += b"\r\n--" + boundary + piece
    for part in parts:
        head, _, content = part.partition(b"\r\n\r\n")
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-disposition":
                header = Message()
                header["content-disposition"] = value.decode("latin-1")
                params = dict(header.get_params(header="content-disposition") or [])
                if params.get("name") == "model":
                    model = content.decode()
    return model


HIDDEN_MODEL_FORMS = {
    # A `;` inside a quoted parameter is no parameter boundary to a header parser.
    "quoted": (
        b'--B\r\nContent-Disposition: form-data; x="; name=y; "; name="model"\r\n\r\n'
        b"gpt-4o-transcribe\r\n"
        b'--B\r\nContent-Disposition: form-data; x="; name=model; "; name="y"\r\n\r\n'
        b"cheap-whisper\r\n"
        b'--B\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
        b"RIFF\r\n--B--\r\n"
    ),
    # `name` twice in one part: python-multipart keeps the last, the proxy read the first.
    "named-twice": (
        b'--B\r\nContent-Disposition: form-data; name="y"; name="model"\r\n\r\n'
        b"gpt-4o-transcribe\r\n"
        b'--B\r\nContent-Disposition: form-data; name="model"; name="y"\r\n\r\n'
        b"cheap-whisper\r\n"
        b'--B\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
        b"RIFF\r\n--B--\r\n"
    ),
    # A delimiter not at the start of a line is file content to the provider, a new
    # part to a reader that splits on every `--B`.
    "mid-line-delimiter": (
        b'--B\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
        b'RIFF--B\r\nContent-Disposition: form-data; name="model"\r\n\r\ncheap-whisper\r\n'
        b"--B--\r\n"
    ),
    # `--Bx` at a line start is no delimiter (one is followed by CRLF or `--`): content
    # to the provider, which then runs its default model.
    "delimiter-prefix": (
        b'--B\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
        b'RIFF\r\n--Bx\r\nContent-Disposition: form-data; name="model"\r\n\r\ncheap-whisper\r\n'
        b"--B--\r\n"
    ),
}


@respx.mock
@pytest.mark.parametrize("form", HIDDEN_MODEL_FORMS.values(), ids=HIDDEN_MODEL_FORMS.keys())
async def test_a_form_cannot_show_the_policy_one_model_and_the_provider_another(
    form: bytes,
) -> None:
    """ALLOWED_MODELS reads `model` from a transcription's form; the provider's own form
    parser must not find another model (or none, and run its default) in the same bytes."""
    route = respx.post(f"{UPSTREAM}/audio/transcriptions").respond(200, json={"text": ""})
    headers = {
        "Authorization": f"Bearer {FAKE_TOKEN}",
        "content-type": "multipart/form-data; boundary=B",
    }
    async with client(create_app(load_settings(env(ALLOWED_MODELS="cheap-*")))) as proxy:
        response = await proxy.post("/v1/audio/transcriptions", content=form, headers=headers)
    if route.call_count:
        sent = route.calls.last.request.content
        ran = _form_model_as_an_upstream_reads_it(sent, b"B")
        pytest.fail(f"the provider was sent a form that runs {ran!r}: {response.status_code}")
    # Refused as unreadable, or read as the provider reads it (and its model refused).
    assert response.status_code in (400, 403), response.text
    assert "error" in response.json()


# ---- a field name a case-insensitive JSON reader takes for a policed one ----------------
# Go's encoding/json (Ollama, and the Go gateways many deployments put in front of vLLM or
# a vendor) matches a body's names to its fields ignoring case, with Unicode folding: `N`
# is `n`, and U+017F LATIN SMALL LETTER LONG S folds to `s` (`max_token\u017f` is
# `max_tokens`), U+212A KELVIN SIGN to `k`; of two it keeps the last.

GO_SPELLED_BODIES = {
    # 64 answers of 10 tokens: the proxy counted one.
    "N": b'{"model":"m","messages":[],"max_tokens":10,"N":64}',
    "max_tokens-long-s": '{"model":"m","messages":[],"max_tokens":10,"max_token\u017f":100000}'.encode(),
    "max_tokens-kelvin": '{"model":"m","messages":[],"max_tokens":10,"max_to\u212aens":9999}'.encode(),
    "MAX_TOKENS": b'{"model":"m","messages":[],"max_tokens":10,"MAX_TOKENS":100000}',
}


@respx.mock
@pytest.mark.parametrize("body", GO_SPELLED_BODIES.values(), ids=GO_SPELLED_BODIES.keys())
async def test_output_cap_holds_against_a_case_insensitive_upstream(body: bytes) -> None:
    route = respx.post(f"{UPSTREAM}/chat/completions").respond(200, json={})
    async with client(create_app(load_settings(env(MAX_TOKENS_CAP="100")))) as proxy:
        response = await proxy.post("/v1/chat/completions", content=body, headers=AUTH)
    assert response.status_code == 400, response.text
    assert route.call_count == 0


@respx.mock
async def test_model_scope_holds_against_a_case_insensitive_upstream(
    scoped: tuple[httpx.AsyncClient, str],
) -> None:
    """`model\u017f` is `models` to Go, `\u017ftream` is `stream`: the proxy checked neither."""
    proxy, token = scoped
    route = respx.post(f"{UPSTREAM}/chat/completions").respond(200, json={})
    headers = {"Authorization": f"Bearer {token}", "content-type": "application/json"}
    for body in (
        '{"model":"cheap-1","messages":[],"models":["cheap-1"],"model\u017f":["expensive"]}',
        '{"model":"cheap-1","messages":[],"Stream":true,"\u017ftream":true}',
    ):
        response = await proxy.post("/v1/chat/completions", content=body.encode(), headers=headers)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "repeated_field"
    assert route.call_count == 0


# ---- the model segment of a path, spelled as the upstream still reads it -------------
AZURE = "https://azure.upstream.test"


@respx.mock
@pytest.mark.parametrize(
    "path",
    [
        # ASP.NET routes (Azure OpenAI's front door) match paths ignoring case.
        "/azure/openai/Deployments/big-gpt/chat/completions",
        # Every server decodes `%64` to `d` before routing.
        "/azure/openai/%64eployments/big-gpt/chat/completions",
        # Servlet-style routers drop a segment's `;` parameters.
        "/azure/openai/deployments;v=1/big-gpt/chat/completions",
    ],
)
async def test_model_list_holds_for_a_path_model_spelled_otherwise(path: str) -> None:
    """The deployment in the path is the model Azure runs; the body's `model` is ignored.
    The proxy must read the path as the upstream does, not fall back to the body."""
    route = respx.route(host="azure.upstream.test").respond(200, json={})
    extra = {
        "AZURE_OPENAI_API_KEY": "fake-azure-key",
        "AZURE_OPENAI_UPSTREAM": AZURE,
        "ALLOWED_MODELS": "small-*",
    }
    headers = {"api-key": FAKE_TOKEN, "content-type": "application/json"}
    body = b'{"model":"small-gpt","messages":[]}'
    async with client(create_app(load_settings(env(**extra)))) as proxy:
        allowed = await proxy.post(
            "/azure/openai/deployments/small-gpt/chat/completions", content=body, headers=headers
        )
        response = await proxy.post(path, content=body, headers=headers)
    assert allowed.status_code == 200, allowed.text
    assert response.status_code in (400, 403), response.text
    assert route.call_count == 1


@respx.mock
async def test_model_scope_holds_for_a_gemini_method_spelled_with_an_escaped_colon(
    tmp_path: Path,
) -> None:
    """`tunedModels/x%3AgenerateContent` is `tunedModels/x:generateContent` once decoded (the
    route read it so): the tuned model runs, whatever model the body names."""
    url = f"sqlite:///{tmp_path}/tokens.db"
    token, _ = create_token(open_store(url), "bob", models=("gemini-2.0-flash*",))
    extra = {"TOKEN_STORE": url, "GEMINI_API_KEY": "fake-gemini-key", "GEMINI_UPSTREAM": GEMINI}
    route = respx.post(url__startswith=GEMINI).respond(200, json={})
    headers = {"x-goog-api-key": token, "content-type": "application/json"}
    body = b'{"model":"gemini-2.0-flash","contents":[]}'
    async with client(create_app(load_settings(env(**extra)))) as proxy:
        tuned = await proxy.post(
            "/gemini/v1beta/tunedModels/my-tuned%3AgenerateContent", content=body, headers=headers
        )
    assert tuned.status_code == 403, tuned.text
    assert route.call_count == 0


# ---- a count given as text or a float, which the upstream reads as a number ----------


@respx.mock
@pytest.mark.parametrize("count", ['"8"', "8.0", '" 8 "', '"8e0"'])
async def test_output_cap_counts_answers_given_as_text(count: str) -> None:
    """protobuf JSON (Gemini) reads an int32 from a string, and pydantic's lax mode (vLLM,
    most Python servers) from a string or an integral float: 8 answers of 100 tokens
    each, where the cap allows 100 in all."""
    extra = {"GEMINI_API_KEY": "fake-gemini-key", "GEMINI_UPSTREAM": GEMINI}
    gemini = respx.post(url__startswith=GEMINI).respond(200, json={})
    openai = respx.post(f"{UPSTREAM}/chat/completions").respond(200, json={})
    config = f'{{"maxOutputTokens":100,"candidateCount":{count}}}'
    headers = {"x-goog-api-key": FAKE_TOKEN, "content-type": "application/json"}
    async with client(create_app(load_settings(env(MAX_TOKENS_CAP="100", **extra)))) as proxy:
        native = await proxy.post(
            "/gemini/v1beta/models/gemini-2.0-flash:generateContent",
            content=f'{{"contents":[],"generationConfig":{config}}}'.encode(),
            headers=headers,
        )
        compatible = await proxy.post(
            "/v1/chat/completions",
            content=f'{{"model":"m","messages":[],"max_tokens":100,"n":{count}}}'.encode(),
            headers=AUTH,
        )
    assert native.status_code == 400, native.text
    assert compatible.status_code == 400, compatible.text
    assert gemini.call_count == openai.call_count == 0


# ---- candidates generated and billed beyond the answers returned ---------------------


@respx.mock
async def test_output_cap_counts_best_of_candidates() -> None:
    """Legacy completions' `best_of` generates (and bills) that many completions server-side
    and returns the best `n`: 20 of 100 tokens where the cap allows 100 in all."""
    route = respx.post(f"{UPSTREAM}/completions").respond(200, json={})
    body = b'{"model":"m","prompt":"hi","max_tokens":100,"best_of":20}'
    async with client(create_app(load_settings(env(MAX_TOKENS_CAP="100")))) as proxy:
        response = await proxy.post("/v1/completions", content=body, headers=AUTH)
        alone = await proxy.post(
            "/v1/completions", content=b'{"model":"m","prompt":"hi","max_tokens":100}', headers=AUTH
        )
    assert response.status_code == 400, response.text
    assert alone.status_code == 200
    assert route.call_count == 1


# ---- a model named in a form on a route the policy did not read forms on --------------


@respx.mock
async def test_model_list_reads_a_video_forms_model() -> None:
    """OpenAI's `POST /v1/videos` (Sora) takes a multipart form naming its model, like a
    transcription: read as JSON, the form named no model and passed ALLOWED_MODELS."""
    route = respx.post(f"{UPSTREAM}/videos").respond(200, json={})
    body = (
        b'--B\r\nContent-Disposition: form-data; name="model"\r\n\r\nsora-2-pro\r\n'
        b'--B\r\nContent-Disposition: form-data; name="prompt"\r\n\r\na cat\r\n--B--\r\n'
    )
    headers = {
        "Authorization": f"Bearer {FAKE_TOKEN}",
        "content-type": "multipart/form-data; boundary=B",
    }
    async with client(create_app(load_settings(env(ALLOWED_MODELS="gpt-4o-mini")))) as proxy:
        response = await proxy.post("/v1/videos", content=body, headers=headers)
        unnamed = await proxy.post(
            "/v1/videos",
            content=b'--B\r\nContent-Disposition: form-data; name="prompt"\r\n\r\na cat\r\n--B--\r\n',
            headers=headers,
        )
    assert response.status_code == 403, response.text
    assert unnamed.status_code == 403, unnamed.text  # Sora's default model would run
    assert route.call_count == 0


# ---- Google's system parameters: the platform reads the request otherwise --------------
# Every Google API reads `$httpMethod` (or X-HTTP-Method-Override) as the request's method,
# `$ct` as its Content-Type, and `fields` / `$fields` / X-Goog-FieldMask, `alt` and
# `callback` as the shape of its reply (cloud.google.com/apis/docs/system-parameters).

GEMINI_EXTRA = {"GEMINI_API_KEY": "fake-gemini-key", "GEMINI_UPSTREAM": GEMINI}
GEMINI_HEADERS = {"x-goog-api-key": FAKE_TOKEN, "content-type": "application/json"}
GEMINI_BODY = b'{"contents":[{"parts":[{"text":"hi"}]}]}'


@respx.mock
@pytest.mark.parametrize(
    ("query", "header"),
    [
        ("?$httpMethod=POST", {}),
        ("?%24httpMethod=POST", {}),
        ("", {"X-HTTP-Method-Override": "POST"}),
    ],
)
async def test_a_get_cannot_run_as_a_generation_upstream(
    query: str, header: dict[str, str]
) -> None:
    """A GET is a free read to the proxy (no model list, no budget): told to run it as
    POST, Google would generate with a model the list refuses, uncounted."""
    route = respx.route(url__startswith=GEMINI).respond(200, json={})
    settings = load_settings(env(ALLOWED_MODELS="gemini-2.0-flash", **GEMINI_EXTRA))
    async with client(create_app(settings)) as proxy:
        response = await proxy.request(
            "GET",
            f"/gemini/v1beta/models/gemini-2.5-pro:generateContent{query}",
            content=GEMINI_BODY,
            headers={**GEMINI_HEADERS, **header},
        )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert route.call_count == 0


@respx.mock
@pytest.mark.parametrize(
    ("query", "header"),
    [
        ("?fields=candidates", {}),
        ("?%24fields=candidates", {}),
        ("?alt=proto", {}),
        ("?callback=f", {}),
        ("?$ct=application/x-protobuf", {}),
        ("", {"X-Goog-FieldMask": "candidates"}),
    ],
)
async def test_a_budgeted_generation_cannot_hide_its_usage(
    query: str, header: dict[str, str]
) -> None:
    """A field mask without usageMetadata (or a protobuf or JSONP reply) leaves the meter
    nothing to read: the call is charged its reservation, an estimate from the body, while
    Google bills what ran (a cachedContent of a million tokens names none of them)."""
    route = respx.route(url__startswith=GEMINI).respond(200, json={})
    prices = json.dumps({"gemini-*": {"input": 1, "output": 1}})
    extra = {**GEMINI_EXTRA, "BUDGET_PER_CALLER_USD": "5", "MODEL_PRICES": prices}
    async with client(create_app(load_settings(env(**extra)))) as proxy:
        response = await proxy.post(
            f"/gemini/v1beta/models/gemini-2.0-flash:generateContent{query}",
            content=GEMINI_BODY,
            headers={**GEMINI_HEADERS, **header},
        )
        streamed = await proxy.post(
            "/gemini/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
            content=GEMINI_BODY,
            headers=GEMINI_HEADERS,
        )
    # 400 for `$ct` (refused on every route), 403 route_not_metered for the rest.
    assert response.status_code in (400, 403), response.text
    assert streamed.status_code == 200, streamed.text  # the SDK's own `alt=sse` passes
    assert route.call_count == 1


@respx.mock
async def test_googles_openai_surface_cannot_override_the_method_either() -> None:
    """Gemini's OpenAI-compatible endpoint is served by the same platform: a GET there is a
    free read to the proxy that `$httpMethod=POST` would turn into a chat completion."""
    route = respx.route(url__startswith=GEMINI).respond(200, json={})
    settings = load_settings(env(ALLOWED_MODELS="gemini-2.0-flash", **GEMINI_EXTRA))
    async with client(create_app(settings)) as proxy:
        response = await proxy.request(
            "GET",
            "/gemini/v1beta/openai/chat/completions?$httpMethod=POST",
            content=b'{"model":"gemini-2.5-pro","messages":[]}',
            headers=AUTH,
        )
    assert response.status_code == 400, response.text
    assert route.call_count == 0


@respx.mock
@pytest.mark.parametrize("param", ["$key", "%24key", "%24KEY"])
async def test_googles_dollar_key_is_a_key_slot_too(param: str) -> None:
    """`$key` is Google's system-parameter spelling of `key`: a caller's token sent there is
    read as the credential, and goes no further than `key=` does."""
    route = respx.get(url__startswith=f"{UPSTREAM}/models").respond(200, json={})
    async with client(create_app(load_settings(env()))) as proxy:
        response = await proxy.get(f"/v1/models?alt=json&{param}={FAKE_TOKEN}")
    assert response.status_code == 200, response.text
    sent = route.calls.last.request.url
    assert FAKE_TOKEN not in str(sent)
    assert sent.query == b"alt=json"


# ---- routes that generate text, read as routes that do not ---------------------------


@respx.mock
@pytest.mark.parametrize(
    ("path", "body"),
    [
        # OpenAI's Assistants: a run generates with the assistant's model and its own cap.
        ("/v1/threads/runs", b'{"assistant_id":"a","max_completion_tokens":100000}'),
        ("/v1/threads/thread_1/runs", b'{"assistant_id":"a"}'),
        ("/v1/threads/thread_1/runs/run_1/submit_tool_outputs", b'{"tool_outputs":[]}'),
        # Ollama's native API (under OLLAMA_UPSTREAM): num_predict is its cap.
        ("/v1/api/chat", b'{"model":"m","messages":[],"options":{"num_predict":100000}}'),
        ("/v1/api/generate", b'{"model":"m","prompt":"hi","options":{"num_predict":-1}}'),
    ],
)
async def test_output_cap_holds_on_routes_that_generate_unread(path: str, body: bytes) -> None:
    """MAX_TOKENS_CAP refuses a generating route it cannot read (a batch); these generate
    too, yet were read as routes that generate nothing, and the cap did not apply."""
    route = respx.route(host="api.upstream.test").respond(200, json={})
    async with client(create_app(load_settings(env(MAX_TOKENS_CAP="100")))) as proxy:
        response = await proxy.post(path, content=body, headers=AUTH)
    assert response.status_code == 400, response.text
    assert route.call_count == 0


@respx.mock
async def test_output_cap_holds_on_anthropics_legacy_completions() -> None:
    route = respx.route(host="anthropic.upstream.test").respond(200, json={})
    extra = {"ANTHROPIC_API_KEY": "fake-anthropic-key", "ANTHROPIC_UPSTREAM": ANTHROPIC}
    body = b'{"model":"claude-2.1","prompt":"\\n\\nHuman: hi\\n\\nAssistant:","max_tokens_to_sample":100000}'
    async with client(create_app(load_settings(env(MAX_TOKENS_CAP="100", **extra)))) as proxy:
        response = await proxy.post(
            "/anthropic/v1/complete",
            content=body,
            headers={"x-api-key": FAKE_TOKEN, "content-type": "application/json"},
        )
    assert response.status_code == 400, response.text
    assert route.call_count == 0


@respx.mock
async def test_output_cap_holds_on_geminis_grounded_answers() -> None:
    """`:generateAnswer` (the AQA model) writes an answer, capped by no field the policy reads."""
    route = respx.route(url__startswith=GEMINI).respond(200, json={})
    async with client(
        create_app(load_settings(env(MAX_TOKENS_CAP="100", **GEMINI_EXTRA)))
    ) as proxy:
        response = await proxy.post(
            "/gemini/v1beta/models/aqa:generateAnswer",
            content=b'{"contents":[],"answerStyle":"VERBOSE"}',
            headers=GEMINI_HEADERS,
        )
    assert response.status_code == 400, response.text
    assert route.call_count == 0
