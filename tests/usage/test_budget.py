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
