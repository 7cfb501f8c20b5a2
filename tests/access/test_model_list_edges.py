"""Model lists and lookups under ALLOWED_MODELS at their edges, in process: every spelling of
a lookup path names the model the upstream would read, and a list the proxy cannot read to
filter is never relayed unfiltered. The SDK-level behaviour is tests/sdk/test_model_lists.py."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable
from urllib.parse import parse_qs

import httpx
import pytest
import respx

from core.app import create_app
from core.config import load_settings
from tests.support.servers import FAKE_TOKEN, FAKE_UPSTREAM_KEY

AUTH = {"Authorization": f"Bearer {FAKE_TOKEN}"}
LIST = {
    "object": "list",
    "data": [
        {"id": "gpt-4o", "object": "model", "created": 1, "owned_by": "system"},
        {"id": "o3", "object": "model", "created": 2, "owned_by": "system"},
    ],
}


class Proxy:
    def __init__(self, client: httpx.AsyncClient, upstream: respx.Router) -> None:
        self.client = client
        self.upstream = upstream
        self.reply: httpx.Response | Callable[[httpx.Request], httpx.Response] = httpx.Response(
            200, json=LIST
        )

    def answer(self, request: httpx.Request) -> httpx.Response:
        return self.reply(request) if callable(self.reply) else self.reply

    async def get(self, path: str, **headers: str) -> httpx.Response:
        return await self.client.get(path, headers={**AUTH, **headers})

    @property
    def forwarded(self) -> int:
        return self.upstream.calls.call_count


@pytest.fixture()
async def proxy() -> AsyncIterator[Proxy]:
    env = {
        "UPSTREAM_BASE_URL": "https://api.upstream.test/v1",
        "UPSTREAM_API_KEY": FAKE_UPSTREAM_KEY,
        "PROXY_ACCESS_TOKEN": FAKE_TOKEN,
        "GEMINI_API_KEY": "fake-gemini-key-not-real",
        "GEMINI_UPSTREAM": "https://gemini.upstream.test",
        "ANTHROPIC_API_KEY": "fake-anthropic-key-not-real",
        "ANTHROPIC_UPSTREAM": "https://anthropic.upstream.test",
        "ALLOWED_MODELS": "gpt-4o*,gemini-*",
        "UPSTREAM_TRANSPORT": "httpx",
        "ACCESS_LOG": "false",
    }
    with respx.mock(assert_all_called=False) as upstream:
        app = create_app(load_settings(env))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://proxy.test") as c:
            proxy = Proxy(c, upstream)
            upstream.route().mock(side_effect=proxy.answer)
            yield proxy


@pytest.mark.parametrize(
    "path",
    [
        "/v1/models/o3",
        "/v1/Models/o3",
        "/v1/models%2Fo3",
        "/v1/models/o3;v=1",
        "/v1/models//o3/",
        "/v1/models/models/o3",
        "/gemini/v1beta/models/gemma-3",
        "/gemini/v1beta/models/gemma-3/operations",
        "/gemini/v1/Models/gemma-3",
    ],
)
async def test_every_spelling_of_a_refused_lookup_is_a_404_asked_of_nobody(
    proxy: Proxy, path: str
) -> None:
    reply = await proxy.get(path)
    assert reply.status_code == 404, reply.text
    assert "gemma-3" in reply.text or "o3" in reply.text
    assert proxy.forwarded == 0


async def test_an_allowed_lookup_and_a_list_head_go_through(proxy: Proxy) -> None:
    proxy.reply = httpx.Response(200, json=LIST["data"][0])  # type: ignore[index]
    assert (await proxy.get("/v1/models/gpt-4o")).json()["id"] == "gpt-4o"
    assert (await proxy.client.head("/v1/models", headers=AUTH)).status_code == 200
    assert proxy.forwarded == 2


async def test_a_list_keeps_every_other_field_and_an_error_passes_as_it_came(
    proxy: Proxy,
) -> None:
    reply = await proxy.get("/v1/models")
    assert reply.json() == {"object": "list", "data": [LIST["data"][0]]}  # type: ignore[index]
    assert int(reply.headers["content-length"]) == len(reply.content)
    refusal = {"error": {"message": "bad key", "type": "invalid_request_error"}}
    proxy.reply = httpx.Response(401, json=refusal)
    reply = await proxy.get("/v1/models")
    assert reply.status_code == 401 and reply.json() == refusal


async def test_a_bare_array_and_an_empty_gemini_page_are_read(proxy: Proxy) -> None:
    proxy.reply = httpx.Response(200, json=LIST["data"])
    assert [m["id"] for m in (await proxy.get("/v1/models")).json()] == ["gpt-4o"]
    proxy.reply = httpx.Response(200, json={})
    assert (await proxy.get("/gemini/v1beta/models")).json() == {}


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (b"o3 gpt-4o", {"content-type": "text/plain"}),
        (json.dumps({"models": LIST["data"]}).encode(), {}),  # another list name
        (json.dumps({"data": {"o3": {}}}).encode(), {}),
        (b"\x8b\x00not-brotli", {"content-encoding": "br"}),
    ],
    ids=["not-json", "other-list-name", "data-not-a-list", "brotli"],
)
async def test_a_list_that_cannot_be_filtered_is_not_relayed(
    proxy: Proxy, body: bytes, headers: dict[str, str]
) -> None:
    # A stream, not `content`: httpx would inflate (and check) the body here.
    proxy.reply = httpx.Response(200, stream=httpx.ByteStream(body), headers=headers)
    reply = await proxy.get("/v1/models")
    assert reply.status_code == 502
    assert reply.json()["error"]["code"] == "model_list_unreadable"
    assert "o3" not in reply.text
    assert reply.headers.get("x-should-retry") == "false"


def anthropic_pages(models: list[str]) -> Callable[[httpx.Request], httpx.Response]:
    """Anthropic's list, paged by `limit` and `after_id` as its API pages it."""

    def page(request: httpx.Request) -> httpx.Response:
        asked = parse_qs(request.url.query.decode())
        limit = int(asked.get("limit", ["20"])[0])
        after = asked.get("after_id", [""])[0]
        start = models.index(after) + 1 if after else 0
        shown = models[start : start + limit]
        entries = [{"type": "model", "id": m, "display_name": m} for m in shown]
        return httpx.Response(
            200,
            json={
                "data": entries,
                "has_more": start + limit < len(models),
                "first_id": shown[0] if shown else None,
                "last_id": shown[-1] if shown else None,
            },
        )

    return page


async def test_a_walk_that_finds_nothing_to_show_names_no_refused_model(proxy: Proxy) -> None:
    """limit=1 over a run of refused models longer than the pages the proxy reads ahead:
    the page it answers shows nothing, and its cursor must not be one of them."""
    refused = [f"claude-unlisted-{n}" for n in range(30)]
    proxy.reply = anthropic_pages([*refused, "gpt-4o-anthropic-hosted"])
    reply = await proxy.get("/anthropic/v1/models?limit=1", **{"anthropic-version": "2023-06-01"})
    assert reply.status_code == 200, reply.text
    assert "claude-unlisted" not in reply.text
    page = reply.json()
    assert page["data"] == []
    assert page["first_id"] is None and page["last_id"] is None
    assert proxy.forwarded <= 11  # the page asked for and at most 10 read ahead


def gemini_pages(
    models: list[str], honour_size: bool = True
) -> Callable[[httpx.Request], httpx.Response]:
    """Gemini's native list, paged by `pageSize` and `pageToken` as its API pages it: the
    token is the base64 of the page's last model name. `honour_size=False`: every page is
    as long as the first one asked (an upstream that would answer a re-ask differently)."""
    sizes: list[int] = []

    def page(request: httpx.Request) -> httpx.Response:
        asked = parse_qs(request.url.query.decode())
        size = int((asked.get("pageSize") or asked.get("page_size") or ["50"])[0])
        sizes.append(size)
        if not honour_size:
            size = sizes[0]
        token = asked.get("pageToken", [""])[0]
        start = models.index(base64.b64decode(token).decode()) + 1 if token else 0
        shown = models[start : start + size]
        body: dict[str, object] = {"models": [{"name": m, "version": "001"} for m in shown]}
        if start + size < len(models):
            body["nextPageToken"] = base64.b64encode(shown[-1].encode()).decode()
        return httpx.Response(200, json=body)

    return page


GEMINI_LIST = "/gemini/v1beta/models"
# A page of two ends in a refused model, with a model shown past it.
ENDS_REFUSED = ["models/gemini-2.5-pro", "models/gemma-3", "models/gemini-2.5-flash"]


async def test_a_gemini_page_ending_refused_is_asked_again_cut_short(proxy: Proxy) -> None:
    proxy.reply = gemini_pages(ENDS_REFUSED)
    # The caller's size in snake_case (protobuf's query names) goes from the re-ask too.
    reply = await proxy.get(f"{GEMINI_LIST}?page_size=2")
    page = reply.json()
    assert [m["name"] for m in page["models"]] == ["models/gemini-2.5-pro"]
    assert base64.b64decode(page["nextPageToken"]) == b"models/gemini-2.5-pro"
    asked = [call.request.url.params for call in proxy.upstream.calls]
    assert asked[-1].get("pageSize") == "1" and "page_size" not in asked[-1]
    assert "pageToken" not in asked[-1]  # the same page: the first
    reply = await proxy.get(f"{GEMINI_LIST}?pageSize=2&pageToken={page['nextPageToken']}")
    assert [m["name"] for m in reply.json()["models"]] == ["models/gemini-2.5-flash"]
    assert "nextPageToken" not in reply.json()


@pytest.mark.parametrize("failure", ["differs", "500", "unreadable"])
async def test_a_gemini_re_ask_that_fails_or_differs_ends_the_list(
    proxy: Proxy, failure: str
) -> None:
    pages = gemini_pages(ENDS_REFUSED, honour_size=failure != "differs")

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.params.get("pageSize") == "1" and failure != "differs":
            if failure == "500":
                return httpx.Response(500, json={"error": {"code": 500, "status": "INTERNAL"}})
            return httpx.Response(200, content=b"{not json")
        return pages(request)

    proxy.reply = answer
    reply = await proxy.get(f"{GEMINI_LIST}?pageSize=2")
    assert reply.status_code == 200, reply.text
    page = reply.json()
    assert [m["name"] for m in page["models"]] == ["models/gemini-2.5-pro"]
    assert "nextPageToken" not in page  # rather than the token naming gemma-3
    assert "gemma" not in reply.text
    assert proxy.forwarded == 3  # the page, the one read ahead, the re-ask


async def test_a_gemini_walk_that_finds_nothing_to_show_hands_out_no_token(
    proxy: Proxy,
) -> None:
    refused = [f"models/gemma-unlisted-{n}" for n in range(30)]
    proxy.reply = gemini_pages([*refused, "models/gemini-2.5-pro"])
    reply = await proxy.get(f"{GEMINI_LIST}?pageSize=1")
    assert reply.status_code == 200, reply.text
    page = reply.json()
    assert page.get("models", []) == []
    assert "nextPageToken" not in page  # every token there is names a refused model
    assert proxy.forwarded <= 11


@pytest.mark.parametrize(
    ("path", "body", "headers"),
    [
        ("/gemini/v1beta/models/o3:countTokens", {"contents": []}, {"x-goog-api-key": FAKE_TOKEN}),
        (
            "/anthropic/v1/messages/count_tokens",
            {"model": "claude-opus-4", "messages": []},
            {"x-api-key": FAKE_TOKEN},
        ),
        ("/v1/responses/input_tokens", {"model": "o3", "input": "x"}, {}),
    ],
)
async def test_counting_tokens_for_a_refused_model_asks_nobody(
    proxy: Proxy, path: str, body: dict[str, object], headers: dict[str, str]
) -> None:
    """Counting tokens spends nothing, yet the upstream's 200 or 404 says whether it serves
    the model: a lookup by another name. Before, it was asked (ALLOWED_MODELS was not read
    on a call that spends nothing)."""
    proxy.reply = httpx.Response(200, json={"totalTokens": 1, "input_tokens": 1})
    reply = await proxy.client.post(path, json=body, headers={**AUTH, **headers})
    assert reply.status_code == 403, reply.text
    assert "ALLOWED_MODELS" in reply.text
    assert proxy.forwarded == 0
    # An allowed model is counted as before.
    allowed = json.loads(
        json.dumps(body).replace('"o3"', '"gpt-4o"').replace("claude-opus-4", "gpt-4o-x")
    )
    reply = await proxy.client.post(
        path.replace("/o3:", "/gemini-2.5-flash:"), json=allowed, headers={**AUTH, **headers}
    )
    assert reply.status_code == 200, reply.text
    assert proxy.forwarded == 1
