"""Dollar budgets: reservation, refusal in the caller's shape, the race on every store,
the caller's own figures at /proxy/usage, and a model with no price."""

from __future__ import annotations

import datetime
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.app import create_app
from core.config import load_settings
from core.stores import open_store
from tests.support.metered import AUTH, JSON, chat, chats_at_once, metered, models_or
from tests.support.scripted_upstream import ScriptedUpstream
from tests.support.servers import FAKE_TOKEN, proxy_env, serve_in_thread

# 1M input tokens $10, 1M output $100: 30 in + 70 out = $0.0073 a request.
PRICES = json.dumps({"fake-*": {"input": 10, "output": 100}})
USAGE = {"prompt_tokens": 30, "completion_tokens": 70, "total_tokens": 100}
COST = 30 * 10 / 1e6 + 70 * 100 / 1e6


def fixed_reply(delay: float = 0.0) -> ScriptedUpstream:
    body = json.dumps({"choices": [], "usage": USAGE}).encode()
    return ScriptedUpstream(models_or(lambda r: (200, JSON, [(delay, body)])))


def usage_of(proxy: Any, **headers: str) -> dict[str, Any]:
    reply = httpx.get(f"{proxy.url}/proxy/usage", headers={**AUTH, **headers}, timeout=10)
    assert reply.status_code == 200, reply.text
    return reply.json()


def test_spend_is_metered_and_shown_to_the_caller() -> None:
    with metered(fixed_reply(), BUDGET_PER_CALLER_USD="1", MODEL_PRICES=PRICES) as proxy:
        for _ in range(3):
            assert (
                httpx.post(
                    f"{proxy.url}/v1/chat/completions", json=chat(), headers=AUTH
                ).status_code
                == 200
            )
        figures = usage_of(proxy)
        assert figures["spent_usd"] == pytest.approx(3 * COST, abs=1e-5)
        assert figures["limit_usd"] == 1
        assert figures["remaining_usd"] == pytest.approx(1 - 3 * COST, abs=1e-5)
        assert (figures["input_tokens"], figures["output_tokens"]) == (90, 210)
        assert len(figures["window"]) == 10  # YYYY-MM-DD, UTC


def test_a_browser_can_read_its_usage_through_cors() -> None:
    with metered(fixed_reply(), BUDGET_PER_CALLER_USD="1", MODEL_PRICES=PRICES) as proxy:
        reply = httpx.get(
            f"{proxy.url}/proxy/usage",
            headers={**AUTH, "Origin": "http://app.example.test"},
        )
        assert reply.headers["access-control-allow-origin"] == "http://app.example.test"
        assert httpx.get(f"{proxy.url}/proxy/usage").status_code == 401


def test_over_budget_is_a_429_insufficient_quota_with_retry_after() -> None:
    # Room for about two requests' worst case (max_tokens 100: ~$0.0104 each).
    with metered(fixed_reply(), BUDGET_PER_CALLER_USD="0.02", MODEL_PRICES=PRICES) as proxy:
        statuses = []
        for _ in range(5):
            reply = httpx.post(f"{proxy.url}/v1/chat/completions", json=chat(), headers=AUTH)
            statuses.append(reply.status_code)
        assert statuses[:2] == [200, 200]
        assert statuses[-1] == 429
        assert reply.json()["error"]["code"] == "insufficient_quota"
        assert 0 < int(reply.headers["retry-after"]) <= 86400
        assert usage_of(proxy)["spent_usd"] <= 0.02 + COST


def test_anthropic_callers_get_anthropics_shape() -> None:
    body = json.dumps({"type": "message", "usage": {"input_tokens": 30, "output_tokens": 70}})
    upstream = ScriptedUpstream(models_or(lambda r: (200, JSON, [(0, body.encode())])))
    with metered(
        upstream,
        BUDGET_PER_CALLER_USD="0.001",
        MODEL_PRICES=PRICES,
    ) as proxy:
        message = {
            "model": "fake-model",
            "max_tokens": 100,
            "messages": [{"role": "user", "content": "hi"}],
        }
        refused = None
        for _ in range(3):
            refused = httpx.post(
                f"{proxy.url}/anthropic/v1/messages",
                json=message,
                headers={"x-api-key": FAKE_TOKEN},
            )
        assert refused is not None and refused.status_code == 429
        assert refused.json()["type"] == "error"


def test_a_model_with_no_price_is_refused_never_free() -> None:
    with metered(fixed_reply(), BUDGET_PER_CALLER_USD="1") as proxy:
        reply = httpx.post(f"{proxy.url}/v1/chat/completions", json=chat(), headers=AUTH)
        assert reply.status_code == 403
        assert reply.json()["error"]["code"] == "model_not_priced"
        assert "MODEL_PRICES" in reply.text


def test_a_route_the_meter_cannot_read_is_refused_under_a_budget() -> None:
    with metered(fixed_reply(), BUDGET_PER_CALLER_USD="1", MODEL_PRICES=PRICES) as proxy:
        reply = httpx.post(
            f"{proxy.url}/v1/images/generations", json={"model": "fake-model"}, headers=AUTH
        )
        assert reply.status_code == 403
        assert reply.json()["error"]["code"] == "route_not_metered"
        # Ephemeral keys are their own kind of route: off unless ALLOW_EPHEMERAL_KEYS
        # (tests/realtime/test_ephemeral_keys.py).
        for path in ("/v1/realtime/client_secrets", "/v1/realtime/sessions"):
            reply = httpx.post(f"{proxy.url}{path}", json={"model": "fake-model"}, headers=AUTH)
            assert reply.status_code == 403, path
            assert reply.json()["error"]["code"] == "ephemeral_keys_disabled"
        assert httpx.get(f"{proxy.url}/v1/models", headers=AUTH).status_code == 200


def test_compaction_is_metered_from_its_reply_never_free() -> None:
    """Finding 5: POST /v1/responses/compact runs the model, but any path under /responses/
    was free, so it went on past a spent budget. Its reply is a Responses object whose
    usage settles the reservation, like POST /v1/responses."""
    usage = {"input_tokens": 30, "output_tokens": 70, "total_tokens": 100}
    body = json.dumps({"object": "response.compaction", "output": [], "usage": usage}).encode()
    upstream = ScriptedUpstream(models_or(lambda r: (200, JSON, [(0, body)])))
    with metered(upstream, BUDGET_PER_CALLER_USD="0.01", MODEL_PRICES=PRICES) as proxy:
        compact = {"model": "fake-model", "input": "hi"}
        statuses = [
            httpx.post(f"{proxy.url}/v1/responses/compact", json=compact, headers=AUTH).status_code
            for _ in range(3)
        ]
        # $0.01 holds one ($0.0073); the second is admitted on the room left.
        assert statuses == [200, 200, 429]
        figures = usage_of(proxy)
        assert (figures["input_tokens"], figures["output_tokens"]) == (60, 140)
        assert figures["spent_usd"] == pytest.approx(2 * COST, abs=1e-6)
    assert [seen.path for seen in upstream.seen].count("/v1/responses/compact") == 2


def test_other_posts_under_responses_are_refused_under_a_budget() -> None:
    with metered(fixed_reply(), BUDGET_PER_CALLER_USD="1", MODEL_PRICES=PRICES) as proxy:
        reply = httpx.post(
            f"{proxy.url}/v1/responses/summarize", json={"model": "fake-model"}, headers=AUTH
        )
        assert reply.status_code == 403
        assert reply.json()["error"]["code"] == "route_not_metered"
        # Counting tokens and cancelling a background response still cost nothing.
        for path in ("/v1/responses/input_tokens", "/v1/responses/resp_1/cancel"):
            reply = httpx.post(f"{proxy.url}{path}", json={"model": "none-priced"}, headers=AUTH)
            assert reply.status_code == 200, path


def test_moderation_is_free_only_where_the_provider_gives_it_free() -> None:
    """OpenAI's /moderations costs nothing; Mistral bills its own, and another vendor may:
    there it is a route the proxy cannot meter, refused while a budget is on."""
    reply = json.dumps({"id": "modr", "results": []}).encode()
    upstream = ScriptedUpstream(models_or(lambda r: (200, JSON, [(0, reply)])))
    with serve_in_thread(upstream) as up:
        env = proxy_env(
            up.url,
            BUDGET_PER_CALLER_USD="1",
            MODEL_PRICES=PRICES,
            OPENAI_API_KEY="sk-fake-openai-key-for-tests",
            OPENAI_UPSTREAM=up.url,
            MISTRAL_API_KEY="fake-mistral-key-for-tests",
            MISTRAL_UPSTREAM=up.url,
        )
        with serve_in_thread(create_app(load_settings(env))) as proxy:
            body = {"model": "omni-moderation-latest", "input": "hi"}
            free = httpx.post(f"{proxy.url}/openai/v1/moderations", json=body, headers=AUTH)
            assert free.status_code == 200
            for path in ("/mistral/v1/moderations", "/mistral/v1/chat/moderations"):
                billed = httpx.post(f"{proxy.url}{path}", json=body, headers=AUTH)
                assert billed.status_code == 403, path
                assert billed.json()["error"]["code"] == "route_not_metered"
    assert [seen.path for seen in upstream.seen if "moderations" in seen.path] == [
        "/v1/moderations"
    ]


BIG = "1" + "0" * 4000  # 4001 digits: Python's JSON still reads it as an int


@pytest.mark.parametrize(
    ("path", "body", "headers", "message"),
    [
        (
            "/v1/chat/completions",
            '{"model":"fake-model","messages":[{"role":"user","content":"hi"}],"n":%s}',
            AUTH,
            lambda reply: reply.json()["error"]["message"],
        ),
        (
            "/v1/completions",
            '{"model":"fake-model","prompt":["a","b"],"n":%s}',
            AUTH,
            lambda reply: reply.json()["error"]["message"],
        ),
        (
            "/gemini/v1beta/models/fake-model:generateContent",
            '{"contents":[{"parts":[{"text":"hi"}]}],"generationConfig":{"candidateCount":%s}}',
            {"x-goog-api-key": FAKE_TOKEN},
            lambda reply: reply.json()["error"]["message"],
        ),
    ],
)
def test_an_absurd_answer_count_is_a_400_in_the_callers_shape(
    path: str, body: str, headers: dict[str, str], message: Any
) -> None:
    """Finding 7: n or candidateCount of 4001 digits overflowed the dollar arithmetic into a
    500 in OpenAI's shape on every route."""
    upstream = fixed_reply()
    with metered(upstream, BUDGET_PER_CALLER_USD="5", MODEL_PRICES=PRICES) as proxy:
        reply = httpx.post(
            f"{proxy.url}{path}",
            content=(body % BIG).encode(),
            headers={**headers, "content-type": "application/json"},
        )
        assert reply.status_code == 400, reply.text
        assert "answers" in message(reply)
        if path.startswith("/gemini/"):
            assert reply.json()["error"]["status"] == "INVALID_ARGUMENT"
        else:
            assert reply.json()["error"]["code"] == "too_many_answers"
    assert upstream.seen == []


def test_a_huge_output_cap_reserves_no_more_than_any_model_writes() -> None:
    """max_tokens (and its spellings) of 4001 digits on a model whose price states no
    limit (max_output 0): reserved as the longest answer a price may state, no overflow."""
    prices = json.dumps({"fake-*": {"input": 10, "output": 100, "max_output": 0}})
    anthropic = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}
    cases = [
        ("/v1/chat/completions", chat(), "max_tokens", AUTH),
        ("/v1/responses", {"model": "fake-model", "input": "hi"}, "max_output_tokens", AUTH),
        ("/anthropic/v1/messages", anthropic, "max_tokens", {"x-api-key": FAKE_TOKEN}),
    ]
    # Read alike by OpenAI's (Responses) and Anthropic's usage readers.
    usage = json.dumps({"usage": {"input_tokens": 30, "output_tokens": 70}}).encode()
    upstream = ScriptedUpstream(models_or(lambda r: (200, JSON, [(0, usage)])))
    with metered(upstream, BUDGET_PER_CALLER_USD="5000", MODEL_PRICES=prices) as proxy:
        for path, document, field, headers in cases:
            body = json.dumps({**document, field: "BIG"}).replace('"BIG"', BIG)
            reply = httpx.post(
                f"{proxy.url}{path}",
                content=body.encode(),
                headers={**headers, "content-type": "application/json"},
            )
            assert reply.status_code == 200, (path, reply.text)
        # 10M tokens at $100 per 1M is $1000 a request: three fit, and the worst case held
        # while each ran was a number, not an overflow.
        assert usage_of(proxy)["spent_usd"] == pytest.approx(3 * COST, abs=1e-5)


@pytest.mark.parametrize("backend", ["memory", "sqlite", "redis"])
def test_fifty_concurrent_requests_overshoot_a_total_cap_by_at_most_one(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    extra = {"BUDGET_TOTAL_USD": "0.05", "MODEL_PRICES": PRICES}
    if backend == "sqlite":
        extra["LIMIT_STORE"] = f"sqlite:///{tmp_path}/budget.db"
    elif backend == "redis":
        extra["LIMIT_STORE"] = request.getfixturevalue("limits_redis_url")
    with metered(fixed_reply(delay=0.3), **extra) as proxy:
        statuses = chats_at_once(proxy, 50)
        admitted = statuses.count(200)
        assert statuses.count(429) == 50 - admitted
        # Worst case ~$0.0104 a request, real cost $0.0073: the cap is overshot by at most
        # one request (more fit once early replies settle below their reservation).
        assert admitted >= 4
        assert admitted * COST <= 0.05 + 0.0105


def test_dynamodb_reserves_with_one_conditional_update(tmp_path: Path) -> None:
    """moto is not thread-safe, so the race itself runs on the other stores; here: the room
    is checked by DynamoDB in the same UpdateItem that adds (no read-then-write)."""
    from tests.support.store_backends import fresh_store_url

    with fresh_store_url("dynamodb", tmp_path, lambda: "") as url:
        store = open_store(url)
        calls: list[dict[str, Any]] = []
        store._client.meta.events.register(  # type: ignore[attr-defined]
            "provide-client-params.dynamodb.UpdateItem", lambda params, **_: calls.append(params)
        )
        assert store.reserve("budget:k", "micros", 40, 100, expires_at=4e9) == 40
        assert store.reserve("budget:k", "micros", 40, 100, expires_at=4e9) == 40
        # Near the cap: the room left (20), taken on a condition on what was read.
        assert store.reserve("budget:k", "micros", 40, 100, expires_at=4e9) == 20
        assert store.reserve("budget:k", "micros", 40, 100, expires_at=4e9) is None
        assert all("ConditionExpression" in call for call in calls)
        assert calls[0]["UpdateExpression"].endswith("ADD #c :a")


class TestTheCallersOwnFigures:
    """`GET /proxy/usage` as a caller reads it: before any spending, past its budget, with
    only a deployment-wide cap, and reading it must never lose what was spent."""

    def test_a_caller_that_spent_nothing_sees_zeros_and_the_whole_budget(self) -> None:
        with metered(fixed_reply(), BUDGET_PER_CALLER_USD="1", MODEL_PRICES=PRICES) as proxy:
            figures = usage_of(proxy)
            assert figures["spent_usd"] == 0
            assert figures["remaining_usd"] == 1
            assert (figures["input_tokens"], figures["output_tokens"]) == (0, 0)
            # Reading first must not break the counter the next request reserves on.
            reply = httpx.post(f"{proxy.url}/v1/chat/completions", json=chat(), headers=AUTH)
            assert reply.status_code == 200
            assert usage_of(proxy)["spent_usd"] == pytest.approx(COST, abs=1e-6)

    def test_the_window_resets_at_the_next_midnight_utc(self) -> None:
        with metered(fixed_reply(), BUDGET_PER_CALLER_USD="1", MODEL_PRICES=PRICES) as proxy:
            figures = usage_of(proxy)
        resets = datetime.datetime.fromisoformat(figures["resets_at"])
        assert resets.utcoffset() == datetime.timedelta(0)
        day = datetime.date.fromisoformat(figures["window"])
        assert resets == datetime.datetime(
            day.year, day.month, day.day, tzinfo=datetime.UTC
        ) + datetime.timedelta(days=1)

    def test_past_its_budget_nothing_remains(self) -> None:
        # $0.01 holds one request's cost ($0.0073); the second is admitted on the room
        # left and settles at its real cost, past the budget.
        with metered(fixed_reply(), BUDGET_PER_CALLER_USD="0.01", MODEL_PRICES=PRICES) as proxy:
            for _ in range(2):
                reply = httpx.post(f"{proxy.url}/v1/chat/completions", json=chat(), headers=AUTH)
                assert reply.status_code == 200
            figures = usage_of(proxy)
            assert figures["spent_usd"] > 0.01
            assert figures["remaining_usd"] == 0

    def test_under_only_a_total_cap_the_caller_has_no_limit_of_its_own(self) -> None:
        with metered(fixed_reply(), BUDGET_TOTAL_USD="5", MODEL_PRICES=PRICES) as proxy:
            assert (
                httpx.post(
                    f"{proxy.url}/v1/chat/completions", json=chat(), headers=AUTH
                ).status_code
                == 200
            )
            figures = usage_of(proxy)
            assert figures["limit_usd"] is None and figures["remaining_usd"] is None
            assert figures["spent_usd"] == pytest.approx(COST, abs=1e-6)

    def test_on_redis_reading_the_figures_keeps_the_spend(self, limits_redis_url: str) -> None:
        """A read sets the counter's expiry (EXPIREAT on Redis): set in the past, Redis
        would delete the caller's spend and its budget would start again."""
        with metered(
            fixed_reply(),
            BUDGET_PER_CALLER_USD="1",
            MODEL_PRICES=PRICES,
            LIMIT_STORE=limits_redis_url,
        ) as proxy:
            token = {"Authorization": f"Bearer {FAKE_TOKEN}"}
            before = usage_of(proxy)["spent_usd"]  # the Redis server is shared by the session
            reply = httpx.post(f"{proxy.url}/v1/chat/completions", json=chat(), headers=token)
            assert reply.status_code == 200
            assert usage_of(proxy)["spent_usd"] == pytest.approx(before + COST, abs=1e-6)
            assert usage_of(proxy)["spent_usd"] == pytest.approx(before + COST, abs=1e-6)


def slow_headers(seconds: float) -> ScriptedUpstream:
    """A non-streamed generation whose reply (headers included) comes when it is done."""

    def reply(request: Any) -> Any:
        time.sleep(seconds)
        body = json.dumps({"choices": [], "usage": USAGE}).encode()
        return 200, JSON, [(0, body)]

    return ScriptedUpstream(models_or(reply))


@pytest.mark.parametrize("how", ["caller hangs up", "first byte times out"])
def test_a_request_sent_but_never_answered_is_charged_its_reservation(how: str) -> None:
    """The provider has the request and may run (and bill) it: a caller who leaves before
    the headers, or a first-byte timeout, is settled as a reply cut short. Before, both
    gave the whole reservation back, and a caller could spend without end."""
    upstream = slow_headers(0.8)
    extra = {"UPSTREAM_READ_TIMEOUT": "0.3"} if how == "first byte times out" else {}
    # A worst case of 30 + 1,000 tokens: $0.1003 at these prices; $0.25 holds two.
    prices = json.dumps({"fake-*": {"input": 10, "output": 100, "max_output": 1000}})
    with metered(upstream, BUDGET_PER_CALLER_USD="0.25", MODEL_PRICES=prices, **extra) as proxy:
        statuses = []
        for _ in range(4):
            try:
                reply = httpx.post(
                    f"{proxy.url}/v1/chat/completions",
                    json=chat(max_tokens=1000),
                    headers=AUTH,
                    timeout=0.3 if how == "caller hangs up" else 10,
                )
                statuses.append(reply.status_code)
            except httpx.ReadTimeout:
                statuses.append(0)
            time.sleep(0.9)  # the upstream finishes; the proxy settles
        spent = usage_of(proxy)["spent_usd"]
    expected = 0 if how == "caller hangs up" else 504
    # Two worst cases fit, the third is admitted on the room left, the fourth is refused.
    assert statuses == [expected, expected, expected, 429]
    assert spent >= 0.25
    assert len(upstream.seen) == 3


def test_a_token_held_at_a_budget_of_zero_spends_nothing(tmp_path: Path) -> None:
    """0 is a budget, not "none": a token an operator holds at $0 is refused, where it used
    to fall back to no cap at all (BUDGET_PER_CALLER_USD unset)."""
    from core.access.tokens import create_token

    store_url = f"sqlite:///{tmp_path}/tokens.db"
    frozen, _ = create_token(open_store(store_url), "frozen", budget_usd=0)
    headers = {"Authorization": f"Bearer {frozen}"}
    with metered(fixed_reply(), TOKEN_STORE=store_url, MODEL_PRICES=PRICES) as proxy:
        reply = httpx.post(f"{proxy.url}/v1/chat/completions", json=chat(), headers=headers)
        assert reply.status_code == 429
        assert reply.json()["error"]["code"] == "insufficient_quota"
        figures = usage_of(proxy, **headers)
        assert (figures["limit_usd"], figures["remaining_usd"]) == (0, 0)
        # A token with no budget of its own, on a deployment with none, is not capped.
        assert httpx.post(f"{proxy.url}/v1/chat/completions", json=chat(), headers=AUTH).is_success


# Input the body names but does not hold: a stored conversation, a file, a video by URL.
_BIG_INPUT = {"input_tokens": 100_000, "output_tokens": 10}
_ELSEWHERE = [
    (
        "/v1/responses",
        {
            "model": "fake-model",
            "previous_response_id": "resp_1",
            "input": "go on",
            "max_output_tokens": 10,
        },
        AUTH,
        {"usage": _BIG_INPUT},
    ),
    (
        "/v1/chat/completions",
        chat(
            max_tokens=10,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "file", "file": {"file_id": "file-1"}},
                        {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}},
                    ],
                }
            ],
        ),
        AUTH,
        {"usage": {"prompt_tokens": 100_000, "completion_tokens": 10}},
    ),
    (
        "/anthropic/v1/messages",
        {
            "model": "fake-model",
            "max_tokens": 10,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "document", "source": {"type": "url", "url": "https://x"}}
                    ],
                }
            ],
        },
        {"x-api-key": FAKE_TOKEN},
        {"usage": _BIG_INPUT},
    ),
    (
        "/gemini/v1beta/models/fake-model:generateContent",
        {
            "contents": [{"parts": [{"fileData": {"fileUri": "https://youtu.be/x"}}]}],
            "generationConfig": {"maxOutputTokens": 10},
        },
        {"x-goog-api-key": FAKE_TOKEN},
        {"usageMetadata": {"promptTokenCount": 100_000, "candidatesTokenCount": 10}},
    ),
]


@pytest.mark.parametrize(("path", "body", "headers", "reply"), _ELSEWHERE)
def test_input_held_elsewhere_cannot_pass_a_budget_concurrently(
    path: str, body: dict[str, Any], headers: dict[str, str], reply: dict[str, Any]
) -> None:
    """A request that names its input (a previous response, a file, an image or a video by
    URL) reserved the few tokens of its body; the upstream read 100,000 more. Eight sent at
    once all fitted a $1.50 budget and spent $8: the cap was passed by seven requests, not
    at most one."""
    content = json.dumps(reply).encode()
    upstream = ScriptedUpstream(models_or(lambda r: (200, JSON, [(0.5, content)])))
    with metered(upstream, BUDGET_PER_CALLER_USD="1.5", MODEL_PRICES=PRICES) as proxy:
        headers = {**headers, "content-type": "application/json"}
        statuses = chats_at_once(proxy, 8, path=path, body=body, headers=headers)
        spent = usage_of(proxy)["spent_usd"]
    # $1.0001 a request: the budget may be passed by one request at most.
    assert spent <= 1.5 + 1.0002, (statuses, spent)
    assert statuses.count(200) <= 2, statuses


@pytest.mark.parametrize(
    "model",
    [
        "o1-pro",  # $150 / $600 per 1M, priced as o1 ($15 / $60)
        "o3-pro",  # $20 / $80, priced as o3 ($2 / $8)
        "gpt-5-pro",  # $15 / $120, priced as gpt-5 ($1.25 / $10)
        "gpt-4o-audio-preview",  # audio at $40 / $80, priced as gpt-4o text
        "gpt-4o-search-preview",  # a fee per search on top
        "gemini-2.5-flash-image-preview",  # image output at $30, priced at $2.50
        "gemini-2.5-pro-preview-tts",
    ],
)
def test_a_variant_is_not_priced_as_its_cheaper_base_model(model: str) -> None:
    """The built-in table's `o1*`, `gpt-5*`, `gemini-2.5-flash*` patterns priced every
    variant as the base model: o1-pro, ten times dearer, spent $10 of the key owner's money
    for each $1 of a caller's budget. A built-in entry prices its model and that model's
    dated or preview snapshots only; any other variant has no price (refused, not cheap)."""
    usage = json.dumps({"choices": [], "usage": USAGE}).encode()
    upstream = ScriptedUpstream(models_or(lambda r: (200, JSON, [(0, usage)])))
    with metered(upstream, BUDGET_PER_CALLER_USD="1") as proxy:
        reply = httpx.post(f"{proxy.url}/v1/chat/completions", json=chat(model=model), headers=AUTH)
    assert reply.status_code == 403, reply.text
    # A search model searches on every call, billed apart from tokens: refused whatever
    # price an entry would give it (tests/security/test_routing_model_names.py).
    expected = "tool_not_metered" if "search" in model else "model_not_priced"
    assert reply.json()["error"]["code"] == expected
    assert upstream.seen == [] or all(s.path.endswith("/models") for s in upstream.seen)


def test_snapshots_of_a_built_in_model_keep_its_price() -> None:
    usage = json.dumps({"choices": [], "usage": USAGE}).encode()
    upstream = ScriptedUpstream(models_or(lambda r: (200, JSON, [(0, usage)])))
    models = [
        "gpt-4o",
        "gpt-4o-mini-2024-07-18",
        "o3-mini-2025-01-31",
        "claude-sonnet-4-5-20250929",
        "claude-3-5-haiku-latest",
        "gemini-2.0-flash-001",
        "gemini-2.5-flash-preview-05-20",
        "gemini-2.5-flash-lite-preview-09-2025",
    ]
    with metered(upstream, BUDGET_PER_CALLER_USD="1") as proxy:
        for model in models:
            reply = httpx.post(
                f"{proxy.url}/v1/chat/completions", json=chat(model=model), headers=AUTH
            )
            assert reply.status_code == 200, (model, reply.text)


@pytest.mark.parametrize(
    ("path", "headers", "reply", "bill"),
    [
        # Anthropic bills a one-hour cache write at twice the input rate ($6 per 1M on
        # claude-sonnet-4-5), a five-minute one at 1.25 times.
        (
            "/anthropic/v1/messages",
            {"x-api-key": FAKE_TOKEN},
            {
                "usage": {
                    "input_tokens": 10,
                    "cache_creation_input_tokens": 150_000,
                    "cache_creation": {
                        "ephemeral_5m_input_tokens": 50_000,
                        "ephemeral_1h_input_tokens": 100_000,
                    },
                    "output_tokens": 10,
                }
            },
            (10 * 3 + 50_000 * 3.75 + 100_000 * 6 + 10 * 15) / 1e6,
        ),
        # Past 200k prompt tokens, gemini-2.5-pro bills $2.50 / $15 per 1M, not $1.25 / $10.
        (
            "/gemini/v1beta/models/gemini-2.5-pro:generateContent",
            {"x-goog-api-key": FAKE_TOKEN},
            {"usageMetadata": {"promptTokenCount": 300_000, "candidatesTokenCount": 1_000}},
            (300_000 * 2.5 + 1_000 * 15) / 1e6,
        ),
        # And claude-sonnet-4-5 (its 1M context) $6 / $22.50.
        (
            "/anthropic/v1/messages",
            {"x-api-key": FAKE_TOKEN},
            {"usage": {"input_tokens": 300_000, "output_tokens": 1_000}},
            (300_000 * 6 + 1_000 * 22.5) / 1e6,
        ),
    ],
)
def test_tokens_billed_above_the_base_rate_are_charged_at_their_rate(
    path: str, headers: dict[str, str], reply: dict[str, Any], bill: float
) -> None:
    """Cache writes and long prompts were charged at the plain input and output rates: a
    caller writing one-hour caches, or sending prompts past 200k tokens, spent about two
    dollars of the key owner's for each one its budget counted."""
    content = json.dumps(reply).encode()
    upstream = ScriptedUpstream(models_or(lambda r: (200, JSON, [(0, content)])))
    model = "gemini-2.5-pro" if "gemini" in path else "claude-sonnet-4-5"
    body = {"model": model, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    if "gemini" in path:
        body = {"contents": [{"parts": [{"text": "hi"}]}]}
    with metered(upstream, BUDGET_PER_CALLER_USD="50") as proxy:
        sent = httpx.post(
            f"{proxy.url}{path}", json=body, headers={**headers, "content-type": "application/json"}
        )
        assert sent.status_code == 200, sent.text
        assert usage_of(proxy)["spent_usd"] == pytest.approx(bill, abs=2e-6)


@pytest.mark.parametrize(
    ("path", "model", "reply", "bill", "prices"),
    [
        # gemini-2.0-flash bills audio input at $0.70 per 1M, text at $0.10.
        (
            "/gemini/v1beta/models/gemini-2.0-flash:generateContent",
            "gemini-2.0-flash",
            {
                "usageMetadata": {
                    "promptTokenCount": 100_010,
                    "candidatesTokenCount": 10,
                    "promptTokensDetails": [
                        {"modality": "AUDIO", "tokenCount": 100_000},
                        {"modality": "TEXT", "tokenCount": 10},
                    ],
                }
            },
            (100_000 * 0.70 + 10 * 0.10 + 10 * 0.40) / 1e6,
            None,
        ),
        # A chat model priced with audio rates in MODEL_PRICES: audio in and out at them.
        (
            "/v1/chat/completions",
            "fake-audio",
            {
                "usage": {
                    "prompt_tokens": 1_010,
                    "completion_tokens": 2_010,
                    "prompt_tokens_details": {"audio_tokens": 1_000},
                    "completion_tokens_details": {"audio_tokens": 2_000},
                }
            },
            (1_000 * 40 + 10 * 2.5 + 2_000 * 80 + 10 * 10) / 1e6,
            {"fake-audio": {"input": 2.5, "output": 10, "audio_input": 40, "audio_output": 80}},
        ),
    ],
)
def test_audio_tokens_are_charged_at_the_audio_rate(
    path: str,
    model: str,
    reply: dict[str, Any],
    bill: float,
    prices: dict[str, Any] | None,
) -> None:
    """Audio tokens were charged at the text rate: on gemini-2.0-flash a caller sending
    audio spent seven dollars of the key owner's for each one its budget counted."""
    content = json.dumps(reply).encode()
    upstream = ScriptedUpstream(models_or(lambda r: (200, JSON, [(0, content)])))
    body: dict[str, Any] = chat(model=model, max_tokens=10)
    headers = AUTH
    if "gemini" in path:
        body = {"contents": [{"parts": [{"text": "hi"}]}]}
        headers = {"x-goog-api-key": FAKE_TOKEN}
    extra = {"MODEL_PRICES": json.dumps(prices)} if prices else {}
    with metered(upstream, BUDGET_PER_CALLER_USD="50", **extra) as proxy:
        sent = httpx.post(f"{proxy.url}{path}", json=body, headers=headers)
        assert sent.status_code == 200, sent.text
        assert usage_of(proxy)["spent_usd"] == pytest.approx(bill, abs=2e-6)


def test_audio_answers_at_once_cannot_pass_a_budget_together() -> None:
    """The reservation priced the worst case at the text rate: eight audio answers sent at
    once, each reserving a tenth of a cent at $10 per 1M while it spent eight at $80 per
    1M of audio, all fitted a 10-cent budget and spent 64 cents."""

    reply = {
        "usage": {
            "prompt_tokens": 10,
            "completion_tokens": 1_000,
            "completion_tokens_details": {"audio_tokens": 1_000},
        }
    }
    content = json.dumps(reply).encode()
    upstream = ScriptedUpstream(models_or(lambda r: (200, JSON, [(0.5, content)])))
    prices = {"fake-audio": {"input": 2.5, "output": 10, "audio_input": 40, "audio_output": 80}}
    body = chat(model="fake-audio", max_tokens=1_000)
    with metered(upstream, BUDGET_PER_CALLER_USD="0.1", MODEL_PRICES=json.dumps(prices)) as proxy:
        statuses = chats_at_once(proxy, 8, body=body)
        spent = usage_of(proxy)["spent_usd"]
    # $0.080025 a request: the budget may be passed by one request at most.
    assert spent <= 0.1 + 0.0801, (statuses, spent)


@pytest.mark.parametrize("max_tokens", ["1000000", '"1000000"', "1000000.0"])
def test_an_output_cap_given_as_text_is_reserved_as_the_number_it_is(max_tokens: str) -> None:
    """A lenient upstream (pydantic's lax mode, protobuf JSON) writes up to a million
    tokens for `"1000000"` or `1000000.0`: that worst case ($100) is held while the call
    runs, so a second call at once finds the $5 budget taken. Held as the default's
    $3.28 instead, both ran, each free to write $100."""
    body = json.dumps({**chat(), "max_tokens": "CAP"}).replace('"CAP"', max_tokens).encode()
    headers = {**AUTH, "content-type": "application/json"}
    # No limit stated for the model: the request's own cap is its worst case.
    prices = json.dumps({"fake-*": {"input": 10, "output": 100, "max_output": 0}})
    gate = threading.Event()

    def one(url: str) -> int:
        gate.wait()
        return httpx.post(url, content=body, headers=headers, timeout=30).status_code

    upstream = fixed_reply(delay=0.5)
    with (
        metered(upstream, BUDGET_PER_CALLER_USD="5", MODEL_PRICES=prices) as proxy,
        ThreadPoolExecutor(2) as pool,
    ):
        futures = [pool.submit(one, f"{proxy.url}/v1/chat/completions") for _ in range(2)]
        gate.set()
        statuses = sorted(f.result() for f in futures)
    assert statuses == [200, 429]
