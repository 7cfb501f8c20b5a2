"""MODEL_ROUTES and MODEL_FALLBACKS over real sockets with the real openai SDK: each model
reaches its provider's OpenAI-compatible surface with that provider's key alone; chains fall
back before the first byte and never after; scopes, budgets, the ledger and the cache follow
the provider that served."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import httpx
import openai
import pytest

from tests.proxy.conftest import KEYS, Routed
from tests.support.servers import FAKE_TOKEN, upstream_requests

HI = [{"role": "user", "content": "hi"}]
TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def client(routed: Routed, token: str = FAKE_TOKEN) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{routed.proxy.url}/v1", api_key=token, max_retries=0, timeout=20
    )


def seen(routed: Routed) -> dict[str, list[dict[str, Any]]]:
    return {name: upstream_requests(up) for name, up in routed.upstreams.items()}


def only_reached(routed: Routed, provider: str) -> list[dict[str, Any]]:
    """The requests `provider`'s upstream saw, after checking no other upstream saw any and
    each carried that provider's key and no other secret."""
    reached = seen(routed)
    assert {name for name, requests in reached.items() if requests} == {provider}
    for request in reached[provider]:
        headers = request["headers"]
        assert headers["authorization"] == f"Bearer {KEYS[provider]}"
        others = [key for name, key in KEYS.items() if name != provider]
        assert not any(key in json.dumps(headers) for key in [*others, FAKE_TOKEN])
        assert "x-api-key" not in headers and "x-goog-api-key" not in headers
    return reached[provider]


SURFACE_PATHS = {
    "anthropic": "/v1/chat/completions",
    "gemini": "/v1beta/openai/chat/completions",
    "deepseek": "/v1/chat/completions",
    "default": "/v1/chat/completions",
}
MODELS = {
    "claude-haiku-4-5": "anthropic",
    "gemini-2.5-flash": "gemini",
    "deepseek-chat": "deepseek",
    "gpt-4o-mini": "default",
}


@pytest.mark.parametrize("model", MODELS)
def test_each_model_reaches_its_provider_with_its_key_only(routed: Routed, model: str) -> None:
    provider = MODELS[model]
    routed.reset()
    raw = client(routed).chat.completions.with_raw_response.create(model=model, messages=HI)
    reply = raw.parse()
    assert reply.choices[0].message.content == "Hello from the mock upstream, streamed token"
    assert reply.model == model
    assert raw.headers["x-proxy-model"] == model
    [request] = only_reached(routed, provider)
    assert request["path"] == SURFACE_PATHS[provider]


@pytest.mark.parametrize("model", MODELS)
def test_streams_and_tools_through_each_route(routed: Routed, model: str) -> None:
    provider = MODELS[model]
    routed.reset()
    stream = client(routed).chat.completions.create(
        model=model, messages=HI, stream=True, extra_headers={"x-mock-chunks": "12"}
    )
    pieces = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta]
    assert "".join(p for p in pieces if p).startswith("Hello from the mock upstream")
    assert len([p for p in pieces if p]) == 12
    called = client(routed).chat.completions.create(
        model=model,
        messages=HI,
        tools=[TOOL],  # type: ignore[list-item]
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    [call] = called.choices[0].message.tool_calls or []
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert len(only_reached(routed, provider)) == 2


def test_embeddings_follow_the_route_where_the_surface_has_them(routed: Routed) -> None:
    routed.reset()
    vectors = client(routed).embeddings.create(model="text-embedding-004", input=["a", "b"])
    assert len(vectors.data) == 2
    [request] = only_reached(routed, "gemini")
    assert request["path"] == "/v1beta/openai/embeddings"
    # Anthropic's surface has no embeddings: a clear 400, and nothing is sent.
    with pytest.raises(openai.BadRequestError, match="no embeddings"):
        client(routed).embeddings.create(model="claude-haiku-4-5", input="a")
    assert not upstream_requests(routed.upstreams["anthropic"])


def test_model_list_is_the_union_of_the_routes(routed: Routed) -> None:
    ids = {model.id: model.owned_by for model in client(routed).models.list()}
    assert ids == {
        "claude-sonnet-4-5": "anthropic",
        "claude-haiku-4-5": "anthropic",
        "claude-opus-4-1": "anthropic",
        "gemini-2.5-pro": "gemini",
        "gemini-2.5-flash": "gemini",
        "text-embedding-004": "gemini",
        # The default route's list, less what the routes claim; deepseek's mock lists only
        # mock-model, which no deepseek-* route claims.
        "mock-model": "default",
    }
    scoped = client(routed, routed.tokens["anthropic-only"]).models.list()
    assert {model.owned_by for model in scoped} == {"anthropic"}
    # Anthropic's list answers 20 models a page unless asked for more: asked for its
    # largest page, 1000, so a catalogue past 20 models is listed whole.
    assert {r["query"] for r in seen(routed)["anthropic"]} == {"limit=1000"}


def test_a_listed_model_can_be_retrieved(routed: Routed) -> None:
    """`models.retrieve` of a model `models.list()` had just shown went to the default
    route's upstream whatever the id, which knows no claude or gemini model: a 404 "does not
    exist" for a model the same base URL lists and serves. A routed id is answered from its
    provider's list, as the list answers it; an id no route claims still goes upstream."""
    sdk = client(routed)
    listed = {model.id: model for model in sdk.models.list()}
    routed.reset()
    claude = sdk.models.retrieve("claude-haiku-4-5")
    assert (claude.id, claude.object, claude.owned_by) == ("claude-haiku-4-5", "model", "anthropic")
    assert claude == listed["claude-haiku-4-5"]
    assert sdk.models.retrieve("gemini-2.5-pro").owned_by == "gemini"
    # A routed name its provider does not list: OpenAI's own 404 for an unknown model.
    with pytest.raises(openai.NotFoundError, match="claude-nonexistent") as caught:
        sdk.models.retrieve("claude-nonexistent")
    assert caught.value.code == "model_not_found"
    reached = seen(routed)
    assert not reached["default"] and not reached["deepseek"]
    assert {r["path"] for r in reached["anthropic"]} == {"/v1/models"}
    assert {r["path"] for r in reached["gemini"]} == {"/v1beta/openai/models"}
    # A caller limited to the default route sees no claude model, listed or retrieved.
    scoped = client(routed, routed.tokens["default-only"])
    with pytest.raises(openai.NotFoundError):
        scoped.models.retrieve("claude-haiku-4-5")
    # An id no route claims is the default route's to answer, as before.
    routed.reset()
    with pytest.raises(openai.NotFoundError, match="mock upstream has no"):
        sdk.models.retrieve("gpt-4o-mini")
    assert [r["path"] for r in seen(routed)["default"]] == ["/v1/models/gpt-4o-mini"]


@pytest.mark.parametrize("model", ["claude-haiku-4-5", "gpt-4o-mini"])
def test_a_compressed_stream_keeps_no_usage_the_caller_did_not_ask_for(
    routed: Routed, model: str
) -> None:
    """Under a budget the proxy asks a stream for its usage and takes the extra chunk out
    again. An upstream that compressed the stream anyway (it is asked for identity) got
    past that: the filter read gzip bytes, so the caller's stream ended with a usage-only
    chunk (`choices: []`, which breaks `chunk.choices[0]`) and `usage` on every chunk."""
    routed.reset()
    gzip = {"x-mock-gzip": "1"}
    chunks = list(
        client(routed).chat.completions.create(
            model=model, messages=HI, stream=True, extra_headers=gzip
        )
    )
    assert all(chunk.choices for chunk in chunks), chunks[-1]
    assert all(chunk.usage is None for chunk in chunks)
    assert "usage" not in chunks[0].model_dump(exclude_unset=True)
    assert "".join(c.choices[0].delta.content or "" for c in chunks).startswith("Hello from")
    # A caller who asked for usage still gets it, once.
    asked = list(
        client(routed).chat.completions.create(
            model=model,
            messages=HI,
            stream=True,
            stream_options={"include_usage": True},
            extra_headers=gzip,
        )
    )
    assert [c.usage.completion_tokens for c in asked if c.usage is not None] == [8]


def test_chain_falls_back_on_a_503_with_only_the_model_changed(routed: Routed) -> None:
    routed.reset()
    # Spacing and key order as a hand-written client might send them.
    body = b'{ "messages" : [{"role":"user","content":"hi"}],\n "model" : "gpt-4o", "n": 1 }'
    reply = httpx.post(
        f"{routed.proxy.url}/v1/chat/completions",
        content=body,
        headers={
            "authorization": f"Bearer {FAKE_TOKEN}",
            "content-type": "application/json",
            "x-mock-fail-models": "gpt-4o",
        },
    )
    assert reply.status_code == 200
    assert reply.headers["x-proxy-model"] == "claude-sonnet-4-5"
    assert reply.json()["model"] == "claude-sonnet-4-5"
    reached = seen(routed)
    [failed] = reached["default"]
    assert failed["body_sha256"] == hashlib.sha256(body).hexdigest()
    [served] = reached["anthropic"]
    expected = body.replace(b'"gpt-4o"', b'"claude-sonnet-4-5"')
    assert served["body_sha256"] == hashlib.sha256(expected).hexdigest()
    assert served["headers"]["authorization"] == f"Bearer {KEYS['anthropic']}"
    assert not reached["gemini"]


def test_a_body_with_a_models_list_is_not_rewritten_for_the_next_model(routed: Routed) -> None:
    """`models` (OpenRouter's list, tried in turn) may repeat `model`. A fallback rewrote
    `model` alone, so the next provider got a body whose `models` still named the failed
    model: admitted, scoped and priced as one model, run as another by a provider that
    reads the list. Such a body is not rewritten: the caller gets the failure."""
    routed.reset()
    body = b'{"model":"gpt-4o","models":["gpt-4o"],"messages":[{"role":"user","content":"hi"}]}'
    reply = httpx.post(
        f"{routed.proxy.url}/v1/chat/completions",
        content=body,
        headers={
            "authorization": f"Bearer {FAKE_TOKEN}",
            "content-type": "application/json",
            "x-mock-fail-models": "gpt-4o",
        },
    )
    assert reply.status_code == 503, reply.text
    reached = seen(routed)
    assert len(reached["default"]) == 1
    assert not reached["anthropic"] and not reached["gemini"]


def test_chain_goes_on_to_the_last_model_and_streams(routed: Routed) -> None:
    routed.reset()
    raw = client(routed).chat.completions.with_raw_response.create(
        model="gpt-4o",
        messages=HI,
        stream=True,
        extra_headers={"x-mock-fail-models": "gpt-4o,claude-sonnet-4-5"},
    )
    assert raw.headers["x-proxy-model"] == "gemini-2.5-pro"
    chunks = list(raw.parse())
    assert {chunk.model for chunk in chunks} == {"gemini-2.5-pro"}
    reached = seen(routed)
    assert [len(reached[name]) for name in ("default", "anthropic", "gemini")] == [1, 1, 1]
    assert reached["gemini"][0]["path"] == "/v1beta/openai/chat/completions"


def test_every_model_failing_gives_the_last_failure(routed: Routed) -> None:
    routed.reset()
    with pytest.raises(openai.InternalServerError) as caught:
        client(routed).chat.completions.create(
            model="gpt-4o",
            messages=HI,
            extra_headers={"x-mock-fail-models": "gpt-4o,claude-sonnet-4-5,gemini-2.5-pro"},
        )
    assert caught.value.status_code == 503
    assert caught.value.response.headers["x-proxy-model"] == "gemini-2.5-pro"


def test_chain_falls_back_on_a_refused_connection(routed: Routed) -> None:
    routed.reset()
    raw = client(routed).chat.completions.with_raw_response.create(
        model="mistral-large", messages=HI
    )
    assert raw.headers["x-proxy-model"] == "gemini-2.5-flash"
    assert raw.parse().model == "gemini-2.5-flash"
    only_reached(routed, "gemini")


def test_no_fallback_after_the_first_byte(routed: Routed) -> None:
    routed.reset()
    with (
        httpx.stream(
            "POST",
            f"{routed.proxy.url}/v1/chat/completions",
            json={"model": "gpt-4o", "messages": HI, "stream": True},
            headers={"authorization": f"Bearer {FAKE_TOKEN}", "x-mock-cut-after": "3"},
        ) as reply,
        pytest.raises(httpx.HTTPError),
    ):
        assert reply.headers["x-proxy-model"] == "gpt-4o"
        for _ in reply.iter_bytes():
            pass
    only_reached(routed, "default")


def test_a_scoped_token_reaches_no_provider_outside_its_scope(routed: Routed) -> None:
    routed.reset()
    scoped = client(routed, routed.tokens["default-only"])
    with pytest.raises(openai.PermissionDeniedError, match="anthropic"):
        scoped.chat.completions.create(model="claude-haiku-4-5", messages=HI)
    assert scoped.chat.completions.create(model="gpt-4o-mini", messages=HI).choices
    # Through a chain: every fallback is outside the scope, so the caller gets gpt-4o's 503.
    with pytest.raises(openai.InternalServerError):
        scoped.chat.completions.create(
            model="gpt-4o", messages=HI, extra_headers={"x-mock-fail-models": "gpt-4o"}
        )
    only_reached(routed, "default")
    # A token for anthropic alone skips gemini in a chain as well, and reaches claude.
    routed.reset()
    claude_only = client(routed, routed.tokens["anthropic-only"])
    with pytest.raises(openai.PermissionDeniedError):
        claude_only.chat.completions.create(model="gpt-4o", messages=HI)
    assert not any(seen(routed).values())


def _poll(condition: Any, timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.02)


def test_ledger_and_budget_charge_the_provider_that_served(routed: Routed) -> None:
    token = routed.tokens["any"]  # this test's own caller: no other test's usage is in it
    ledger = routed.ledger
    routed.reset()
    reply = client(routed, token).chat.completions.create(
        model="gpt-4o",
        messages=HI,
        stream=True,
        extra_headers={"x-mock-fail-models": "gpt-4o"},
    )
    assert "".join(c.choices[0].delta.content or "" for c in reply if c.choices)

    def recorded() -> dict[tuple[str, str], int]:
        return {
            (group.provider, group.model): group.counters.get("requests", 0)
            for group in ledger._groups(None)
            if group.caller == routed.any_caller
        }

    # Written in the background: polled, bounded. The failed gpt-4o attempt spent nothing.
    everything = lambda: [(g.caller, g.provider, g.model) for g in ledger._groups(None)]  # noqa: E731
    assert _poll(recorded, timeout=15) == {("anthropic", "claude-sonnet-4-5"): 1}, everything()
    usage = httpx.get(
        f"{routed.proxy.url}/proxy/usage", headers={"authorization": f"Bearer {token}"}
    ).json()
    # "hi" is 1 prompt token, 8 chunks 8 output tokens, at claude's $100 per million.
    assert usage["spent_usd"] == pytest.approx(9 * 100 / 1_000_000)
    assert (usage["input_tokens"], usage["output_tokens"]) == (1, 8)


def test_a_fallback_gets_the_room_the_failed_attempt_reserved(routed: Routed) -> None:
    token = routed.tokens["small-budget"]
    routed.reset()
    raw = client(routed, token).chat.completions.with_raw_response.create(
        model="gpt-4o", messages=HI, extra_headers={"x-mock-fail-models": "gpt-4o"}
    )
    assert raw.headers["x-proxy-model"] == "claude-sonnet-4-5"
    usage = httpx.get(
        f"{routed.proxy.url}/proxy/usage", headers={"authorization": f"Bearer {token}"}
    ).json()
    assert usage["spent_usd"] == pytest.approx(9 * 100 / 1_000_000)  # claude's, and only it


def test_cache_keeps_a_routed_reply_under_its_provider(routed: Routed) -> None:
    routed.reset()
    ask = {"model": "claude-haiku-4-5", "messages": HI, "temperature": 0}
    first = client(routed).chat.completions.with_raw_response.create(**ask)  # type: ignore[arg-type]
    second = client(routed).chat.completions.with_raw_response.create(**ask)  # type: ignore[arg-type]
    assert first.headers["x-proxy-cache"] == "miss"
    assert second.headers["x-proxy-cache"] == "hit"
    assert second.headers["x-proxy-model"] == "claude-haiku-4-5"
    assert len(only_reached(routed, "anthropic")) == 1


def test_a_fallback_that_calls_the_next_model_is_a_miss_not_a_hit(routed: Routed) -> None:
    """A stored reply for the chain's next model is not replayed mid-exchange: the call is
    made. It was reported as a hit all the same (the header, and the access log's cache
    and saved tokens), though the provider answered and billed."""
    routed.reset()
    ask = {"messages": HI, "temperature": 0}
    headers = {"authorization": f"Bearer {FAKE_TOKEN}", "x-mock-fail-models": "gpt-4o"}
    url = f"{routed.proxy.url}/v1/chat/completions"
    stored = httpx.post(url, json={**ask, "model": "claude-sonnet-4-5"}, headers=headers)
    assert stored.headers["x-proxy-cache"] == "miss"
    routed.reset()
    fell_back = httpx.post(url, json={**ask, "model": "gpt-4o"}, headers=headers)
    assert fell_back.status_code == 200
    assert fell_back.headers["x-proxy-model"] == "claude-sonnet-4-5"
    assert len(seen(routed)["anthropic"]) == 1  # the call was made
    assert fell_back.headers["x-proxy-cache"] == "miss"


def test_fallback_from_a_provider_with_several_targets_to_one_with_one() -> None:
    """The target the failed provider's last attempt pinned is not carried to the next
    provider (which has fewer targets)."""
    from core.app import create_app
    from core.config import load_settings
    from core.devtools.mock_upstream import MockOptions, MockUpstream
    from tests.support.servers import proxy_env, serve_in_thread

    with (
        serve_in_thread(MockUpstream(MockOptions())) as first,
        serve_in_thread(MockUpstream(MockOptions())) as second,
        serve_in_thread(MockUpstream(MockOptions())) as claude,
    ):
        env = proxy_env(
            first.url,
            UPSTREAM_BASE_URL=f"{first.url}/v1,{second.url}/v1",
            ANTHROPIC_API_KEY=KEYS["anthropic"],
            ANTHROPIC_UPSTREAM=claude.url,
            MODEL_ROUTES="claude-*=anthropic",
            MODEL_FALLBACKS="gpt-4o>claude-sonnet-4-5",
        )
        with serve_in_thread(create_app(load_settings(env))) as proxy:
            for _ in range(3):  # each request starts on the other target
                reply = httpx.post(
                    f"{proxy.url}/v1/chat/completions",
                    json={"model": "gpt-4o", "messages": HI},
                    headers={
                        "authorization": f"Bearer {FAKE_TOKEN}",
                        "x-mock-fail-models": "gpt-4o",
                    },
                )
                assert reply.status_code == 200, reply.text
                assert reply.headers["x-proxy-model"] == "claude-sonnet-4-5"
        assert len(upstream_requests(claude)) == 3
        assert len(upstream_requests(first)) == len(upstream_requests(second)) == 3


def test_browsers_may_read_which_model_answered(routed: Routed) -> None:
    reply = httpx.post(
        f"{routed.proxy.url}/v1/chat/completions",
        json={"model": "claude-haiku-4-5", "messages": HI},
        headers={"authorization": f"Bearer {FAKE_TOKEN}", "origin": "http://app.example.test"},
    )
    assert reply.headers["x-proxy-model"] == "claude-haiku-4-5"
    exposed = reply.headers["access-control-expose-headers"].split(", ")
    assert "x-proxy-model" in exposed


@pytest.mark.parametrize(
    "model", ["gpt-4o-mini\r\nset-cookie: a=b", "claude-haiku-4-5\x00", "gpt-4o\x7f"]
)
def test_a_model_name_with_control_characters_still_gets_its_reply(
    routed: Routed, model: str
) -> None:
    """The caller's model went into `x-proxy-model` as sent: a CR, LF, NUL or DEL made the
    server refuse the header after the upstream had answered (and billed), so the caller got
    a dropped connection and the log a traceback. The header carries a safe spelling."""
    reply = httpx.post(
        f"{routed.proxy.url}/v1/chat/completions",
        json={"model": model, "messages": HI},
        headers={"authorization": f"Bearer {FAKE_TOKEN}"},
        timeout=20,
    )
    assert reply.status_code == 200, reply.text
    assert "set-cookie" not in reply.headers
    named = reply.headers["x-proxy-model"]
    assert named.isprintable() and named.startswith(model[:3]), named


def test_a_surface_without_stream_usage_is_refused_streams_under_a_cap() -> None:
    """A vendor whose OpenAI-compatible surface cannot report a stream's usage: under a
    budget its streams are refused (nothing sent), its whole replies still metered."""
    from core.app import create_app
    from core.config import load_settings
    from core.devtools.mock_upstream import MockOptions, MockUpstream
    from core.providers import OpenAISurface
    from core.proxy.model_routes import surface_record
    from core.records import replace
    from tests.support.servers import proxy_env, serve_in_thread

    with serve_in_thread(MockUpstream(MockOptions())) as vendor:
        env = proxy_env(
            vendor.url,
            GROQ_API_KEY="fake-groq-key-routing",
            GROQ_UPSTREAM=f"{vendor.url}/openai",
            MODEL_ROUTES="llama-*=groq",
            BUDGET_PER_CALLER_USD="10",
            MODEL_PRICES='{"*": {"input": 1, "output": 1}}',
        )
        app = create_app(load_settings(env))
        router = app.proxy.endpoint.model_router  # type: ignore[attr-defined]
        groq = next(p for p in app.proxy.providers if p.name == "groq")  # type: ignore[attr-defined]
        # As a vendor would be declared: `_compatible(..., openai_surface=OpenAISurface(
        # stream_usage=False))`.
        without = replace(groq, openai_surface=OpenAISurface(stream_usage=False))
        router.routes[0] = ("llama-*", surface_record(without))
        with serve_in_thread(app) as proxy:
            reset = httpx.post(f"{vendor.url}/_mock/reset")
            assert reset.status_code == 200
            llama = client_for(proxy.url)
            with pytest.raises(openai.PermissionDeniedError, match="does not report a stream"):
                llama.chat.completions.create(model="llama-3", messages=HI, stream=True)
            assert not upstream_requests(vendor)
            reply = llama.chat.completions.create(model="llama-3", messages=HI)
            assert reply.usage is not None and reply.usage.completion_tokens == 8
            [seen_request] = upstream_requests(vendor)
            assert seen_request["path"] == "/openai/v1/chat/completions"


def client_for(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=FAKE_TOKEN, max_retries=0, timeout=20)


def claude_routes_only(anthropic_url: str) -> dict[str, str]:
    """A proxy with no default route: `/v1` serves claude-* models only, at `anthropic_url`."""
    return {
        "PROXY_ACCESS_TOKEN": FAKE_TOKEN,
        "ACCESS_LOG": "false",
        "ANTHROPIC_API_KEY": KEYS["anthropic"],
        "ANTHROPIC_UPSTREAM": anthropic_url,
        "MODEL_ROUTES": "claude-*=anthropic",
    }


def test_without_a_default_route_v1_serves_routed_models_only() -> None:
    from core.app import create_app
    from core.config import load_settings
    from core.devtools.mock_upstream import MockOptions, MockUpstream
    from tests.support.servers import serve_in_thread

    with serve_in_thread(MockUpstream(MockOptions())) as claude:
        env = claude_routes_only(claude.url)
        with serve_in_thread(create_app(load_settings(env))) as proxy:
            sdk = client_for(proxy.url)
            assert sdk.chat.completions.create(model="claude-haiku-4-5", messages=HI).choices
            with pytest.raises(openai.NotFoundError, match="No route on this proxy serves"):
                sdk.chat.completions.create(model="gpt-4o", messages=HI)
            with pytest.raises(openai.NotFoundError, match="routes by model only"):
                sdk.responses.create(model="claude-haiku-4-5", input="hi")
            assert {m.owned_by for m in sdk.models.list()} == {"anthropic"}
            assert sdk.models.retrieve("claude-haiku-4-5").owned_by == "anthropic"
            with pytest.raises(openai.NotFoundError, match="routes by model only"):
                sdk.models.retrieve("gpt-4o")
        # The refusals sent nothing; the chat and the model lists reached Anthropic's surface.
        assert [(r["method"], r["path"]) for r in upstream_requests(claude)] == [
            ("POST", "/v1/chat/completions"),
            ("GET", "/v1/models"),
            ("GET", "/v1/models"),
        ]


class _Attempts:
    """Counts the HTTP requests that reach the proxy (an SDK's attempts)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.count = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.count += 1
        await self.app(scope, receive, send)


def test_without_a_default_route_a_request_naming_no_model_is_refused_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without UPSTREAM_BASE_URL, a chat or embeddings request whose `model` is missing or
    not text went to the stand-in default route, which has no upstream: the caller got 502
    `upstream_unreachable`, a passing fault, so the openai SDK tried it three times (and the
    log said the upstream failed). It is a bad request, refused at once in OpenAI's words."""
    import openai._base_client

    from core.app import create_app
    from core.config import load_settings
    from core.devtools.mock_upstream import MockOptions, MockUpstream
    from tests.support.servers import serve_in_thread

    slept: list[float] = []

    class _Time:
        def sleep(self, seconds: float) -> None:
            slept.append(seconds)

        def __getattr__(self, name: str) -> Any:
            return getattr(time, name)

    monkeypatch.setattr(openai._base_client, "time", _Time())
    with serve_in_thread(MockUpstream(MockOptions())) as claude:
        env = claude_routes_only(claude.url)
        counted = _Attempts(create_app(load_settings(env)))
        with serve_in_thread(counted) as proxy:
            # The SDK's default retries: a retryable status would be sent three times.
            sdk = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=FAKE_TOKEN, timeout=20)
            calls = [
                lambda: sdk.chat.completions.create(model=None, messages=HI),  # type: ignore[call-overload]
                lambda: sdk.chat.completions.create(model=5, messages=HI),  # type: ignore[call-overload]
                lambda: sdk.embeddings.create(model=None, input="a"),  # type: ignore[arg-type]
            ]
            for call in calls:
                counted.count = 0
                with pytest.raises(openai.BadRequestError, match="names no model") as caught:
                    call()
                assert counted.count == 1 and not slept
                assert caught.value.response.headers["x-should-retry"] == "false"
        assert upstream_requests(claude) == []


def test_retrieving_a_model_whose_provider_does_not_answer_is_a_502_not_a_404() -> None:
    """The provider's list is what a routed model is retrieved from: when it cannot be read,
    the caller hears that (a 502, which SDKs retry), not that the model does not exist."""
    from core.app import create_app
    from core.config import load_settings
    from tests.support.servers import free_port, serve_in_thread

    env = claude_routes_only(f"http://127.0.0.1:{free_port()}")  # nothing listens
    with serve_in_thread(create_app(load_settings(env))) as proxy:
        sdk = client_for(proxy.url)
        with pytest.raises(openai.InternalServerError) as caught:
            sdk.models.retrieve("claude-haiku-4-5")
        assert caught.value.status_code == 502
        assert "could not be read" in caught.value.message
