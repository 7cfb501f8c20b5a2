"""Rules in combination and failures half way.

- Every pair of rules where an earlier one reserves and a later one refuses: the earlier
  reservation is given back (token limit then budget; caller's budget then the total).
- A reply cut after its first usage figures is charged at least what was reserved, not the
  input tokens read so far.
- A store that answers some calls and fails the reserving one: the token limit fails closed
  with LIMITS_ON_STORE_ERROR=closed, the budget always.
- The rate-limit refusal's Retry-After is the exact number of seconds to the window's end.
"""

from __future__ import annotations

import json
import math
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.metered import AUTH, JSON, chat, metered, models_or, remaining
from tests.support.polling import wait_until
from tests.support.scripted_upstream import ScriptedUpstream, sse
from tests.support.servers import FAKE_TOKEN

PRICES = json.dumps({"fake-*": {"input": 10, "output": 100}})
USAGE = {"prompt_tokens": 30, "completion_tokens": 70, "total_tokens": 100}
COST = 30 * 10 / 1e6 + 70 * 100 / 1e6
EVENTS = [("content-type", "text/event-stream")]


def fixed_reply() -> ScriptedUpstream:
    body = json.dumps({"choices": [], "usage": USAGE}).encode()
    return ScriptedUpstream(models_or(lambda r: (200, JSON, [(0, body)])))


def post_chat(proxy: Any, **extra: Any) -> httpx.Response:
    return httpx.post(
        f"{proxy.url}/v1/chat/completions", json=chat(**extra), headers=AUTH, timeout=10
    )


def spent(proxy: Any) -> float:
    reply = httpx.get(f"{proxy.url}/proxy/usage", headers=AUTH, timeout=10)
    return float(reply.json()["spent_usd"])


# ---- an earlier reservation given back when a later rule refuses --------------------------


def test_the_token_reservation_is_given_back_when_the_budget_has_no_price() -> None:
    with metered(
        fixed_reply(), RATE_LIMIT_TOKENS="5000", BUDGET_PER_CALLER_USD="1", MODEL_PRICES=PRICES
    ) as proxy:
        refused = post_chat(proxy, model="unpriced-model")
        assert refused.status_code == 403
        assert remaining(proxy) == 5000


def test_the_token_reservation_is_given_back_when_the_callers_budget_refuses() -> None:
    with metered(
        fixed_reply(),
        RATE_LIMIT_TOKENS="5000",
        BUDGET_PER_CALLER_USD="0.000001",
        MODEL_PRICES=PRICES,
    ) as proxy:
        assert post_chat(proxy).status_code == 200  # takes the last micro-dollar
        assert remaining(proxy) == 4900
        refused = post_chat(proxy)
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "insufficient_quota"
        assert remaining(proxy) == 4900  # the refused request holds nothing


def test_the_token_reservation_is_given_back_when_the_total_budget_refuses() -> None:
    with metered(
        fixed_reply(), RATE_LIMIT_TOKENS="5000", BUDGET_TOTAL_USD="0.000001", MODEL_PRICES=PRICES
    ) as proxy:
        assert post_chat(proxy).status_code == 200
        assert post_chat(proxy).status_code == 429
        assert remaining(proxy) == 4900


def test_the_callers_budget_is_given_back_when_the_total_refuses() -> None:
    with metered(
        fixed_reply(),
        BUDGET_PER_CALLER_USD="1",
        BUDGET_TOTAL_USD="0.000001",
        MODEL_PRICES=PRICES,
    ) as proxy:
        assert post_chat(proxy).status_code == 200
        assert spent(proxy) == pytest.approx(COST, abs=1e-6)
        for _ in range(3):
            assert post_chat(proxy).status_code == 429
        # Only the one request that ran: each refused one gave its caller reservation back.
        assert spent(proxy) == pytest.approx(COST, abs=1e-6)


def test_an_upstream_refusal_gives_every_reservation_back() -> None:
    refusal = json.dumps({"error": {"message": "bad", "type": "invalid_request_error"}}).encode()
    upstream = ScriptedUpstream(models_or(lambda r: (400, JSON, [(0, refusal)])))
    with metered(
        upstream, RATE_LIMIT_TOKENS="5000", BUDGET_PER_CALLER_USD="1", MODEL_PRICES=PRICES
    ) as proxy:
        assert post_chat(proxy).status_code == 400
        assert remaining(proxy) == 5000
        assert spent(proxy) == 0


# ---- partial failures: a reply cut after its first usage figures ---------------------------


def _anthropic_cut_late(request: dict[str, Any]) -> Any:
    start = {
        "type": "message_start",
        "message": {
            "id": "m",
            "type": "message",
            "role": "assistant",
            "model": "fake-model",
            "content": [],
            "usage": {"input_tokens": 30, "output_tokens": 1},
        },
    }
    delta = {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "text_delta", "text": "w"},
    }
    end = {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn"},
        "usage": {"output_tokens": 70},
    }
    first = b"".join(sse(start, delta))
    return 200, EVENTS, [(0, first), (0.5, b"".join(sse(end, {"type": "message_stop"})))]


def _leave_after_message_start(proxy: Any) -> None:
    body = json.dumps(
        {
            "model": "fake-model",
            "max_tokens": 100,
            "stream": True,
            "messages": [{"role": "user", "content": "hi"}],
        }
    ).encode()
    with socket.create_connection(("127.0.0.1", proxy.port)) as sock:
        sock.sendall(
            b"POST /anthropic/v1/messages HTTP/1.1\r\nHost: x\r\n"
            + f"x-api-key: {FAKE_TOKEN}\r\nContent-Type: application/json\r\n".encode()
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        received = b""
        while b"content_block_delta" not in received:
            received += sock.recv(65536)
    # Gone after message_start: the upstream had reported 30 input tokens and 1 output.


def test_an_anthropic_caller_leaving_after_message_start_pays_the_reservation() -> None:
    with metered(
        ScriptedUpstream(models_or(_anthropic_cut_late)), RATE_LIMIT_TOKENS="5000"
    ) as proxy:
        _leave_after_message_start(proxy)
        left = wait_until(lambda: remaining(proxy), lambda n: n < 5000)
        # At least max_tokens (100) stays charged, not the 31 tokens read so far.
        assert left <= 5000 - 100


def test_a_budget_caller_leaving_after_message_start_pays_the_reservation() -> None:
    with metered(
        ScriptedUpstream(models_or(_anthropic_cut_late)),
        BUDGET_PER_CALLER_USD="1",
        MODEL_PRICES=PRICES,
    ) as proxy:
        _leave_after_message_start(proxy)
        charged = wait_until(lambda: spent(proxy), lambda usd: usd > 0)
        read_so_far = 30 * 10 / 1e6 + 1 * 100 / 1e6
        assert charged >= 100 * 100 / 1e6 > read_so_far  # max_tokens' worth at least


# ---- a store that fails the reserving call only --------------------------------------------


@pytest.fixture
def no_scripts_store(limits_redis_url: str) -> Iterator[str]:
    """The test Redis with a user that may do everything but run scripts: counting works,
    reserving (one Lua script) fails, as a store failing half way would."""
    import redis

    admin = redis.Redis.from_url(limits_redis_url)
    admin.acl_setuser(
        "no-scripts",
        enabled=True,
        passwords=["+fake-password"],
        keys=["*"],
        categories=["+@all"],
        commands=["-eval", "-evalsha"],
    )
    host_port = limits_redis_url.split("//", 1)[1].split("/", 1)[0].split("@")[-1]
    try:
        yield f"redis://no-scripts:fake-password@{host_port}/0"
    finally:
        admin.acl_deluser("no-scripts")


def test_the_token_limit_fails_closed_when_only_its_reservation_fails(
    no_scripts_store: str,
) -> None:
    with metered(
        fixed_reply(),
        RATE_LIMIT_TOKENS="5000",
        LIMIT_STORE=no_scripts_store,
        LIMITS_ON_STORE_ERROR="closed",
    ) as proxy:
        # The request count (no script) works: the head check passes, the reservation fails.
        assert httpx.get(f"{proxy.url}/v1/models", headers=AUTH).status_code == 200
        refused = post_chat(proxy)
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "rate_limit_store_unavailable"
        assert "fake-password" not in refused.text


def test_the_token_limit_lets_through_when_told_to_fail_open(no_scripts_store: str) -> None:
    with metered(
        fixed_reply(),
        RATE_LIMIT_TOKENS="5000",
        LIMIT_STORE=no_scripts_store,
        LIMITS_ON_STORE_ERROR="open",
    ) as proxy:
        assert post_chat(proxy).status_code == 200


def test_the_budget_fails_closed_whatever_the_limits_setting(no_scripts_store: str) -> None:
    with metered(
        fixed_reply(),
        BUDGET_PER_CALLER_USD="1",
        MODEL_PRICES=PRICES,
        LIMIT_STORE=no_scripts_store,
        LIMITS_ON_STORE_ERROR="open",
    ) as proxy:
        assert post_chat(proxy).status_code == 503


# ---- the rate-limit reset ------------------------------------------------------------------


def test_retry_after_is_the_exact_time_to_the_windows_end() -> None:
    window = 60
    with metered(fixed_reply(), RATE_LIMIT_REQUESTS="1", RATE_LIMIT_WINDOW=str(window)) as proxy:
        for _ in range(3):  # a window boundary crossed mid-test is retried
            before = time.time()
            post_chat(proxy)
            refused = post_chat(proxy)
            after = time.time()
            if int(before // window) == int(after // window):
                break
            time.sleep(0.1)
        assert refused.status_code == 429
        end = (int(before // window) + 1) * window
        assert (
            math.ceil(end - after) <= int(refused.headers["retry-after"]) <= math.ceil(end - before)
        )
