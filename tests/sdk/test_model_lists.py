"""Model lists and lookups through the real openai, anthropic and google-genai SDKs show a
caller only the models it may use: those ALLOWED_MODELS lets through and, for a token
scoped to some models, those its scope names. A lookup of any other model is the SDK's
NotFound, answered without asking the upstream; an allowed one is the upstream's answer.

The holes these close: every provider's own list (`/openai/v1/models`, the default route
without MODEL_ROUTES, Gemini's OpenAI-compatible `/models`, Anthropic's `/v1/models`,
Gemini's native `models` pages) was relayed byte for byte, naming models the caller was
refused, and a lookup of a refused model was asked of the upstream."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import parse_qs

import anthropic
import httpx
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors

from core.access.tokens import create_token
from core.app import create_app
from core.config import load_settings
from core.devtools.mock_upstream.model_lists import gemini_page_token
from core.stores import open_store
from tests.support.servers import (
    FAKE_TOKEN,
    RunningServer,
    proxy_env,
    reset_upstream,
    serve_in_thread,
    upstream_requests,
)

KEYS = {
    "OPENAI": "fake-openai-key-for-list-tests",
    "ANTHROPIC": "fake-anthropic-key-for-list-tests",
    "GEMINI": "fake-gemini-key-for-list-tests",
}
# What the mock's OpenAI-shaped lists name here (`x-mock-models`).
OPENAI_MODELS = {"x-mock-models": "gpt-4o,gpt-4o-mini,o3,mock-model"}
ALLOWED_MODELS = "gpt-4o*,claude-sonnet-*,claude-haiku-*,gemini-*"
SCOPE = ("gpt-4o-mini", "claude-haiku-*", "gemini-2.5-flash")


@dataclass
class Lists:
    guarded: RunningServer  # ALLOWED_MODELS set, and a token scoped to some models
    open: RunningServer  # no rule limits models
    upstream: RunningServer
    scoped: str
    unscoped: str


@pytest.fixture(scope="module")
def lists(
    mock_upstream: RunningServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Lists]:
    store_url = f"sqlite:///{tmp_path_factory.mktemp('lists')}/tokens.db"
    store = open_store(store_url)
    scoped, _ = create_token(store, "few-models", models=SCOPE)
    unscoped, _ = create_token(store, "every-model")
    env = proxy_env(mock_upstream.url, TOKEN_STORE=store_url)
    for name, key in KEYS.items():
        env[f"{name}_API_KEY"] = key
        env[f"{name}_UPSTREAM"] = mock_upstream.url
    # A shared response cache: a list kept for one caller must never reach another.
    guarded_env = {
        **env,
        "ALLOWED_MODELS": ALLOWED_MODELS,
        "CACHE_URL": "memory://",
        "CACHE_SCOPE": "shared",
    }
    with (
        serve_in_thread(create_app(load_settings(guarded_env))) as guarded,
        serve_in_thread(create_app(load_settings(env))) as unguarded,
    ):
        yield Lists(guarded, unguarded, mock_upstream, scoped, unscoped)


# ---- OpenAI-shaped lists: OpenAI's route, the default route, Gemini's surface -------------


@dataclass(frozen=True)
class OpenAIShaped:
    base: str
    # Ids the unscoped caller sees under ALLOWED_MODELS, and the scoped caller.
    allowed: list[str]
    scoped: list[str]
    refused: str


OPENAI_SHAPED = [
    OpenAIShaped("/openai/v1", ["gpt-4o", "gpt-4o-mini"], ["gpt-4o-mini"], "o3"),
    OpenAIShaped("/v1", ["gpt-4o", "gpt-4o-mini"], ["gpt-4o-mini"], "gpt-4o"),
    OpenAIShaped(
        "/gemini/v1beta/openai",
        ["models/gemini-2.5-pro", "models/gemini-2.5-flash"],
        ["models/gemini-2.5-flash"],
        "models/gemini-2.5-pro",
    ),
]


def openai_client(server: RunningServer, base: str, key: str, **headers: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{server.url}{base}",
        api_key=key,
        max_retries=0,
        timeout=20,
        default_headers={**OPENAI_MODELS, **headers},
    )


@pytest.mark.parametrize("shaped", OPENAI_SHAPED, ids=lambda s: s.base)
@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
def test_openai_sdk_lists_only_what_the_caller_may_use(
    lists: Lists, shaped: OpenAIShaped, compressed: bool
) -> None:
    headers = {"x-mock-gzip": "1"} if compressed else {}
    for key, expected in ((lists.unscoped, shaped.allowed), (lists.scoped, shaped.scoped)):
        client = openai_client(lists.guarded, shaped.base, key, **headers)
        page = client.models.list()
        assert [model.id for model in page] == expected
        # Every other field of each entry, as the provider wrote it.
        assert {model.object for model in page} == {"model"}
        assert page.object == "list"  # type: ignore[attr-defined]


@pytest.mark.parametrize("shaped", OPENAI_SHAPED, ids=lambda s: s.base)
def test_openai_sdk_retrieves_only_what_the_caller_may_use(
    lists: Lists, shaped: OpenAIShaped
) -> None:
    client = openai_client(lists.guarded, shaped.base, lists.scoped)
    reset_upstream(lists.upstream)
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve(shaped.refused)
    assert caught.value.code == "model_not_found"
    assert upstream_requests(lists.upstream) == []  # asked of nobody: it tells nothing
    [allowed] = shaped.scoped
    assert client.models.retrieve(allowed).id == allowed
    assert len(upstream_requests(lists.upstream)) == 1


def test_a_list_is_relayed_byte_for_byte_when_no_rule_limits_models(lists: Lists) -> None:
    auth = {"Authorization": f"Bearer {FAKE_TOKEN}", **OPENAI_MODELS}
    for path in ("/v1/models", "/openai/v1/models"):
        through = httpx.get(f"{lists.open.url}{path}", headers=auth, timeout=10)
        direct = httpx.get(f"{lists.upstream.url}/v1/models", headers=OPENAI_MODELS, timeout=10)
        assert through.status_code == 200
        assert through.content == direct.content
    as_token = {"Authorization": f"Bearer {lists.unscoped}", **OPENAI_MODELS}
    reply = httpx.get(f"{lists.open.url}/openai/v1/models/o3", headers=as_token, timeout=10)
    assert reply.status_code == 200


def test_a_list_is_never_replayed_from_the_cache_to_another_caller(lists: Lists) -> None:
    """Under CACHE_SCOPE=shared the unscoped caller's list is not kept for the next one:
    a list is a read, which the cache never keeps (it keeps the POSTs that spend)."""
    path = f"{lists.guarded.url}/openai/v1/models"
    for key in (lists.unscoped, lists.scoped, lists.unscoped):
        reply = httpx.get(path, headers={"Authorization": f"Bearer {key}", **OPENAI_MODELS})
        assert reply.headers["x-proxy-cache"] == "bypass"
    ids = [m["id"] for m in reply.json()["data"]]
    scoped = httpx.get(path, headers={"Authorization": f"Bearer {lists.scoped}", **OPENAI_MODELS})
    assert ids == ["gpt-4o", "gpt-4o-mini"]
    assert [m["id"] for m in scoped.json()["data"]] == ["gpt-4o-mini"]


def test_a_compressed_list_is_inflated_filtered_and_sent_plain(lists: Lists) -> None:
    headers = {
        "Authorization": f"Bearer {lists.scoped}",
        "Accept-Encoding": "gzip",
        "x-mock-gzip": "1",
        **OPENAI_MODELS,
    }
    reply = httpx.get(f"{lists.guarded.url}/openai/v1/models", headers=headers, timeout=10)
    assert "content-encoding" not in reply.headers
    assert int(reply.headers["content-length"]) == len(reply.content)
    assert json.loads(reply.content)["data"] == [
        {"id": "gpt-4o-mini", "object": "model", "created": 0, "owned_by": "mock"}
    ]


# ---- Anthropic ----------------------------------------------------------------------------


def anthropic_client(lists: Lists, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=f"{lists.guarded.url}/anthropic", api_key=key, max_retries=0, timeout=20
    )


def test_anthropic_sdk_lists_and_retrieves_only_what_the_caller_may_use(lists: Lists) -> None:
    unscoped = anthropic_client(lists, lists.unscoped)
    scoped = anthropic_client(lists, lists.scoped)
    assert [m.id for m in unscoped.models.list()] == ["claude-sonnet-4-5", "claude-haiku-4-5"]
    assert [m.id for m in scoped.models.list()] == ["claude-haiku-4-5"]
    # Paged one at a time: each page filtered, one that would show nothing read past (the
    # SDK stops paging at an empty page), and no page promised where none would show.
    assert [m.id for m in unscoped.models.list(limit=1)] == [
        "claude-sonnet-4-5",
        "claude-haiku-4-5",
    ]
    first = unscoped.models.list(limit=1)
    assert (first.first_id, first.last_id, first.has_more) == (
        "claude-sonnet-4-5",
        "claude-sonnet-4-5",
        True,
    )
    only = scoped.models.list(limit=1)
    assert [m.id for m in only.data] == ["claude-haiku-4-5"]
    assert (only.first_id, only.last_id, only.has_more) == (
        "claude-haiku-4-5",
        "claude-haiku-4-5",
        False,
    )
    assert only.data[0].display_name == "claude-haiku-4-5"  # the entry's other fields, kept
    assert [m.id for m in scoped.models.list(limit=1)] == ["claude-haiku-4-5"]

    reset_upstream(lists.upstream)
    with pytest.raises(anthropic.NotFoundError) as caught:
        scoped.models.retrieve("claude-sonnet-4-5")
    assert caught.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    with pytest.raises(anthropic.NotFoundError):
        unscoped.models.retrieve("claude-opus-4-1")
    assert upstream_requests(lists.upstream) == []
    assert scoped.models.retrieve("claude-haiku-4-5").id == "claude-haiku-4-5"


# ---- Gemini's native API --------------------------------------------------------------------


def gemini_client(lists: Lists, key: str) -> genai.Client:
    return genai.Client(
        api_key=key,
        http_options={"base_url": f"{lists.guarded.url}/gemini", "timeout": 20_000},
    )


def test_genai_sdk_lists_and_gets_only_what_the_caller_may_use(lists: Lists) -> None:
    unscoped = gemini_client(lists, lists.unscoped)
    scoped = gemini_client(lists, lists.scoped)
    names = [m.name for m in unscoped.models.list()]
    assert names == ["models/gemini-2.5-pro", "models/gemini-2.5-flash"]
    listed = list(scoped.models.list())
    assert [m.name for m in listed] == ["models/gemini-2.5-flash"]
    assert listed[0].input_token_limit == 1048576  # the entry's other fields, kept

    reset_upstream(lists.upstream)
    with pytest.raises(genai_errors.ClientError) as caught:
        scoped.models.get(model="gemini-2.5-pro")
    assert caught.value.code == 404
    assert caught.value.status == "NOT_FOUND"
    with pytest.raises(genai_errors.ClientError):
        unscoped.models.get(model="text-embedding-004")
    assert upstream_requests(lists.upstream) == []
    assert scoped.models.get(model="gemini-2.5-flash").name == "models/gemini-2.5-flash"


def test_genai_sdk_pages_through_filtered_pages(lists: Lists) -> None:
    """One model a page: a page that would show nothing is read past (google-genai's pager
    fails on an empty page), and the page token goes on only where a model would show."""
    one = {"page_size": 1}
    unscoped = gemini_client(lists, lists.unscoped)
    scoped = gemini_client(lists, lists.scoped)
    assert [m.name for m in unscoped.models.list(config=one)] == [
        "models/gemini-2.5-pro",
        "models/gemini-2.5-flash",
    ]
    assert [m.name for m in scoped.models.list(config=one)] == ["models/gemini-2.5-flash"]


def test_a_gemini_page_keeps_its_page_token(lists: Lists) -> None:
    url = f"{lists.guarded.url}/gemini/v1beta/models"
    unscoped = {"x-goog-api-key": lists.unscoped}
    first = httpx.get(url, params={"pageSize": 1}, headers=unscoped, timeout=10).json()
    assert [m["name"] for m in first["models"]] == ["models/gemini-2.5-pro"]
    token = gemini_page_token("gemini-2.5-pro")
    assert first["nextPageToken"] == token  # the provider's own: its next page shows a model
    last = httpx.get(url, params={"pageSize": 1, "pageToken": token}, headers=unscoped).json()
    assert [m["name"] for m in last["models"]] == ["models/gemini-2.5-flash"]
    assert "nextPageToken" not in last  # the page after it would show nothing
    scoped = {"x-goog-api-key": lists.scoped}
    reset_upstream(lists.upstream)
    only = httpx.get(url, params={"pageSize": 1}, headers=scoped, timeout=10).json()
    assert [m["name"] for m in only["models"]] == ["models/gemini-2.5-flash"]
    assert "nextPageToken" not in only
    asked = [
        parse_qs(r["query"]).get("pageToken", [""])[0] for r in upstream_requests(lists.upstream)
    ]
    assert asked == ["", token, gemini_page_token("gemini-2.5-flash")]


# A Gemini catalogue whose pages of two end in a model ALLOWED_MODELS refuses (veo-*),
# with models shown past it: the upstream's token for such a page names the refused one.
GEMINI_CATALOGUE = [
    "gemini-2.5-pro",
    "veo-3.1-generate-preview",
    "gemini-2.5-flash",
    "imagen-4.0-generate-001",
    "gemini-2.5-flash-lite",
    "veo-3.0-generate-001",
    "text-embedding-004",
    "gemini-2.0-flash",
]
GEMINI_SHOWN = [f"models/{m}" for m in GEMINI_CATALOGUE if m.startswith("gemini-")]


def _named_in(token: str) -> str:
    """What a Gemini page token's bytes name (it is base64 of the page's last model)."""
    return base64.b64decode(token).decode(errors="replace")


@pytest.mark.parametrize("size", [1, 2, 3, 5])
def test_a_gemini_page_token_never_names_a_refused_model(lists: Lists, size: int) -> None:
    """Paged by hand as a caller would: each token handed out names a model shown (or
    none), and the pages show each allowed model once, in the provider's order."""
    url = f"{lists.guarded.url}/gemini/v1beta/models"
    headers = {"x-goog-api-key": lists.unscoped, "x-mock-models": ",".join(GEMINI_CATALOGUE)}
    shown: list[str] = []
    params: dict[str, str | int] = {"pageSize": size}
    for _ in range(len(GEMINI_CATALOGUE) + 1):
        reply = httpx.get(url, params=params, headers=headers, timeout=10)
        assert reply.status_code == 200, reply.text
        page = reply.json()
        names = [m["name"] for m in page.get("models", [])]
        assert names, "google-genai's pager fails on an empty page"
        shown += names
        token = page.get("nextPageToken")
        if token is None:
            break
        assert _named_in(token) in shown  # not veo-*, imagen-*, text-embedding-*
        params = {"pageSize": size, "pageToken": token}
    assert shown == GEMINI_SHOWN


@pytest.mark.parametrize("size", [1, 2, 3])
def test_genai_sdk_pages_a_catalogue_with_refused_models_between(lists: Lists, size: int) -> None:
    client = genai.Client(
        api_key=lists.unscoped,
        http_options={
            "base_url": f"{lists.guarded.url}/gemini",
            "timeout": 20_000,
            "headers": {"x-mock-models": ",".join(GEMINI_CATALOGUE)},
        },
    )
    assert [m.name for m in client.models.list(config={"page_size": size})] == GEMINI_SHOWN


# An Anthropic catalogue with refused models (claude-opus-*) between and at the ends.
ANTHROPIC_CATALOGUE = [
    "claude-opus-4-1",
    "claude-sonnet-4-5",
    "claude-opus-4-0",
    "claude-haiku-4-5",
    "claude-3-opus",
    "claude-sonnet-4-0",
    "claude-opus-3",
]
ANTHROPIC_SHOWN = [m for m in ANTHROPIC_CATALOGUE if "opus" not in m]


@pytest.mark.parametrize("limit", [1, 2, 3, 4])
def test_anthropic_cursors_name_only_models_shown(lists: Lists, limit: int) -> None:
    """Forward by `last_id` and back by `first_id`, as the SDK and a caller page: every
    cursor is a model shown, and the pages show each allowed model once."""
    client = anthropic.Anthropic(
        base_url=f"{lists.guarded.url}/anthropic",
        api_key=lists.unscoped,
        max_retries=0,
        timeout=20,
        default_headers={"x-mock-models": ",".join(ANTHROPIC_CATALOGUE)},
    )
    assert [m.id for m in client.models.list(limit=limit)] == ANTHROPIC_SHOWN
    page = client.models.list(limit=limit)
    forward: list[str] = []
    while True:
        forward += [m.id for m in page.data]
        assert page.first_id in forward and page.last_id in forward
        if not page.has_more:
            break
        page = client.models.list(limit=limit, after_id=page.last_id)
    assert forward == ANTHROPIC_SHOWN
    back = client.models.list(limit=limit, before_id="claude-opus-3")
    backward: list[str] = []
    while True:
        backward = [m.id for m in back.data] + backward
        assert back.first_id in backward and back.last_id in backward
        if not back.has_more:
            break
        back = client.models.list(limit=limit, before_id=back.first_id)
    assert backward == ANTHROPIC_SHOWN
