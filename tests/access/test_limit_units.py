"""The rate limits as units, on a clock the test moves: each limit at its value and one
past it, the window's edges and its Retry-After, the headers a caller reads, what a
reservation settles to, and a store that fails. The proxy-level tests
(test_limits_over_proxy.py) show the limits apply; these pin the figures, found by mutation
testing (docs/mutation.md)."""

from __future__ import annotations

import logging
import time as real_time
from types import SimpleNamespace
from typing import Any

import pytest

from core.access.limits import (
    LimitStoreUnavailable,
    RateLimiter,
    RequestLimit,
    TokenLimit,
    caller_key,
    duration,
)
from core.errors import RateLimited
from core.protocols import Usage
from core.stages import HeaderTicket, Outcome
from core.stores.memory import MemoryStore

WINDOW = 60.0
# The start of a window (a multiple of 60) a little ahead: the memory store expires its
# counters by the real clock.
START = (real_time.time() // WINDOW + 10) * WINDOW


class Clock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class BrokenStore(MemoryStore):
    def increment(self, *args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("redis://:hunter2@10.0.0.1 refused")

    def reserve(self, *args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("redis://:hunter2@10.0.0.1 refused")


def limiter(
    requests: int = 0,
    tokens: int = 0,
    *,
    store: MemoryStore | None = None,
    clock: Clock | None = None,
    fail_open: bool = False,
) -> RateLimiter:
    return RateLimiter(
        store or MemoryStore(),
        requests=requests,
        tokens=tokens,
        window=WINDOW,
        fail_open=fail_open,
        clock=clock or Clock(),
    )


def caller(name: str = "alice") -> Any:
    return SimpleNamespace(counted_as=name)


def worst(total: int) -> Any:
    async def estimate(request: Any) -> Usage:
        return Usage(total, 0)

    return estimate


def test_reset_times_are_written_as_openai_does() -> None:
    assert [duration(s) for s in (0, 0.2, 1, 59, 59.5, 60, 90, 3600, -5)] == [
        "0s",
        "1s",
        "1s",
        "59s",
        "1m0s",
        "1m0s",
        "1m30s",
        "60m0s",
        "0s",
    ]


def test_a_window_runs_from_its_first_second_to_before_its_last() -> None:
    clock = Clock(START)
    rate = limiter(clock=clock)
    key, reset_at, expires_at = rate.window_of("alice")
    assert reset_at == START + WINDOW
    assert expires_at == START + 2 * WINDOW  # kept one window past its end
    assert key == f"rl:{int(START // WINDOW)}:{caller_key('alice')}"
    clock.now = START + WINDOW - 0.001
    assert rate.window_of("alice")[0] == key
    clock.now = START + WINDOW
    assert rate.window_of("alice")[0] != key
    assert rate.window_of("bob")[0] != rate.window_of("alice")[0]


async def test_the_request_limit_lets_its_own_count_through_and_refuses_one_more() -> None:
    rate = limiter(requests=3)
    check = RequestLimit(rate)
    for _ in range(3):
        assert isinstance(await check.admit(caller()), HeaderTicket)
    with pytest.raises(RateLimited):
        await check.admit(caller())
    # Another caller has its own count.
    assert await check.admit(caller("bob")) is not None


async def test_a_refusal_says_when_to_retry_to_the_second_and_its_headers_the_figures() -> None:
    clock = Clock(START + 15.2)  # 44.8 s before the window ends
    check = RequestLimit(limiter(requests=1, tokens=500, clock=clock))
    ticket = await check.admit(caller())
    assert ticket is not None
    assert dict(ticket.headers) == {
        b"x-ratelimit-limit-requests": b"1",
        b"x-ratelimit-remaining-requests": b"0",
        b"x-ratelimit-reset-requests": b"45s",
        b"x-ratelimit-limit-tokens": b"500",
        b"x-ratelimit-remaining-tokens": b"500",
        b"x-ratelimit-reset-tokens": b"45s",
    }
    with pytest.raises(RateLimited) as refused:
        await check.admit(caller())
    headers = refused.value.headers
    assert headers["retry-after"] == "45"
    assert headers["x-ratelimit-remaining-requests"] == "0"  # 2 counted: never negative
    assert "1 requests per 1m0s" in refused.value.message
    assert "Try again in 45s" in refused.value.message
    # A wait of a minute is not worth an SDK's automatic retry.
    assert refused.value.retryable is False


async def test_a_refusal_near_the_window_end_is_worth_a_retry_and_never_says_zero() -> None:
    clock = Clock(START + WINDOW - 0.3)
    check = RequestLimit(limiter(requests=1, clock=clock))
    await check.admit(caller())
    with pytest.raises(RateLimited) as refused:
        await check.admit(caller())
    assert refused.value.headers["retry-after"] == "1"
    assert refused.value.retryable is True
    # Only the configured limit's headers: no token figures without a token limit.
    assert not any("tokens" in name for name in refused.value.headers)


async def test_the_retry_bound_is_inclusive() -> None:
    clock = Clock(START + WINDOW - 10.0)
    check = RequestLimit(limiter(requests=1, clock=clock))
    await check.admit(caller())
    with pytest.raises(RateLimited) as refused:
        await check.admit(caller())
    assert refused.value.headers["retry-after"] == "10"
    assert refused.value.retryable is True


async def test_the_token_limit_reserves_up_to_its_value_and_refuses_past_it() -> None:
    store = MemoryStore()
    rate = limiter(tokens=1000, store=store)
    check = TokenLimit(rate, worst(400))
    held = [await check.admit(caller()) for _ in range(3)]
    # The third holds the room that was left; its settlement charges it the rest.
    assert [getattr(ticket, "reserved", None) for ticket in held] == [400, 400, 200]
    with pytest.raises(RateLimited) as refused:
        await check.admit(caller())
    assert "1000 tokens per 1m0s" in refused.value.message
    assert refused.value.headers["retry-after"] == "60"
    # The request limit's check sees the count used up too.
    with pytest.raises(RateLimited, match=r"Rate limit reached: \d+ tokens per"):
        await RequestLimit(rate).admit(caller())
    # Another caller has its own count.
    assert await check.admit(caller("bob")) is not None


async def test_the_request_limit_lets_a_caller_in_while_tokens_remain() -> None:
    rate = limiter(tokens=1000)
    await TokenLimit(rate, worst(999)).admit(caller())
    assert await RequestLimit(rate).admit(caller()) is not None


async def test_a_request_that_can_spend_nothing_reserves_nothing() -> None:
    store = MemoryStore()
    assert await TokenLimit(limiter(tokens=10, store=store), worst(0)).admit(caller()) is None
    assert store.scan_counters("rl:") == []


@pytest.mark.parametrize(
    ("outcome", "held_after"),
    [
        (Outcome(200, Usage(100, 50), complete=True), 150),  # metered, less than reserved
        (Outcome(200, Usage(300, 100), complete=True), 400),  # exactly what was reserved
        (Outcome(200, Usage(301, 100), complete=True), 401),  # one token more
        (Outcome(200, Usage(900, 300), complete=True), 1200),  # more than reserved
        (Outcome(500), 0),  # refused upstream: given back
        (Outcome(200), 400),  # nothing readable: the reservation stands
    ],
)
async def test_a_reservation_settles_to_what_the_reply_cost(
    outcome: Outcome, held_after: int
) -> None:
    store = MemoryStore()
    rate = limiter(tokens=10_000, store=store)
    ticket = await TokenLimit(rate, worst(400)).admit(caller())
    assert ticket is not None
    await ticket.settle(outcome)
    key = rate.window_of("alice")[0]
    assert store.increment(key, {}, expires_at=START + 120).get("tokens", 0) == held_after


async def test_a_failing_store_answers_503_by_default_and_quotes_nothing_of_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rate = limiter(requests=5, tokens=100, store=BrokenStore())
    with caplog.at_level(logging.ERROR, logger="llm_proxy"):
        for check in (RequestLimit(rate), TokenLimit(rate, worst(10))):
            with pytest.raises(LimitStoreUnavailable) as refused:
                await check.admit(caller())
            assert refused.value.status == 503
    assert "hunter2" not in caplog.text
    # An outage is logged once, not once per request.
    assert len([r for r in caplog.records if "rate-limit store" in r.message]) == 1
    assert "answering 503" in caplog.text


async def test_fail_open_lets_requests_through_unmetered() -> None:
    rate = limiter(requests=5, tokens=100, store=BrokenStore(), fail_open=True)
    assert await RequestLimit(rate).admit(caller()) is None
    assert await TokenLimit(rate, worst(10)).admit(caller()) is None


async def test_a_settlement_the_store_cannot_take_does_not_fail_the_reply() -> None:
    store = MemoryStore()
    rate = limiter(tokens=1000, store=store)
    ticket = await TokenLimit(rate, worst(400)).admit(caller())
    assert ticket is not None
    rate.store = BrokenStore()
    await ticket.settle(Outcome(200, Usage(10, 10), complete=True))  # no raise
