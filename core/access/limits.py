"""Rate limits per caller, counted in a shared store so every instance sees one limit.

Fixed windows of RATE_LIMIT_WINDOW seconds: one counter item per caller and window
(`rl:<window>:<caller hash>`) holding `requests` and `tokens`.

- `RequestLimit` runs before the body is read: it adds 1 to `requests` and reads `tokens`
  in one atomic store call, so a caller over either limit costs no body read or parse.
- `TokenLimit` runs once the body is known: it reserves the request's worst case (an
  upper estimate of the prompt plus its maximum output) in the same counter with one
  conditional write, so concurrent requests cannot together pass the limit. When the
  reply ends, the metered tokens replace the reservation.

When the store cannot be reached, LIMITS_ON_STORE_ERROR decides: `closed` (the default)
answers 503, because an unmetered public endpoint spends the key owner's money; `open`
lets the request through unmetered and logs it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from core.digest import sha256_hex
from core.errors import RETRY_SOON_SECONDS, ProxyError, RateLimited
from core.stages import HeaderTicket, Outcome, Ticket
from core.stores import Store
from core.stores.calls import DEFAULT_STORE_TIMEOUT, call_store

if TYPE_CHECKING:
    from core.protocols import Usage
    from core.request import ProxyRequest

    # The most a request can use, reserved up front (core/usage/estimate.py `WorstCase`).
    Estimate = Callable[[ProxyRequest], Awaitable[Usage]]

logger = logging.getLogger("llm_proxy")

RawHeaders = list[tuple[bytes, bytes]]


class LimitStoreUnavailable(ProxyError):
    """The rate-limit store did not answer and LIMITS_ON_STORE_ERROR=closed."""

    status = 503
    code = "rate_limit_store_unavailable"
    openai_type = "server_error"


def duration(seconds: float) -> str:
    """OpenAI's way of writing a reset time: `12s`, `1m30s`."""
    whole = max(0, math.ceil(seconds))
    minutes, secs = divmod(whole, 60)
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


def caller_key(identity: str) -> str:
    # Hashed: a JWT `sub` or label may be long or hold any character a store dislikes.
    if len(identity) > 200:
        return sha256_hex(identity, 32)
    return _recent_caller_key(identity)


@functools.lru_cache(maxsize=4096)
def _recent_caller_key(identity: str) -> str:
    # Kept for the callers seen lately (short identities only, so the cache stays small):
    # a request asks once per rule that counts it.
    return sha256_hex(identity, 32)


class RateLimiter:
    """The counters both limit checks share."""

    def __init__(
        self,
        store: Store,
        *,
        requests: int,
        tokens: int,
        window: float,
        fail_open: bool,
        clock: Callable[[], float] = time.time,
        timeout: float = DEFAULT_STORE_TIMEOUT,
    ) -> None:
        self.store = store
        # The longest a request waits for the store before LIMITS_ON_STORE_ERROR applies.
        self.timeout = timeout
        self.requests = requests
        self.tokens = tokens
        self.window = window
        self.fail_open = fail_open
        self.clock = clock
        self._amounts = {"requests": 1}
        self._last_error_log = 0.0
        # The limits as the headers write them, once.
        self._requests_value = str(requests).encode()
        self._tokens_value = str(tokens).encode()

    def window_of(self, identity: str) -> tuple[str, float, float]:
        """The caller's counter key, when its window resets, and when the item expires."""
        now = self.clock()
        index = int(now // self.window)
        reset_at = (index + 1) * self.window
        # Kept one window past its end, so a clock a little behind still finds it.
        return f"rl:{index}:{caller_key(identity)}", reset_at, reset_at + self.window

    async def call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """A store call, waited for at most `timeout` (core/stores/calls.py). The checks
        call a store in process (`blocking` False: the memory store) directly instead: no
        thread and no wait to bound, as call_store itself would, without its two awaits."""
        return await call_store(self.store, self.timeout, method, *args, **kwargs)

    def store_failed(self, exc: BaseException) -> None:
        """Log (rate-limited) and answer 503 unless LIMITS_ON_STORE_ERROR=open."""
        now = time.monotonic()
        if now - self._last_error_log > 10:  # an outage must not flood the logs
            self._last_error_log = now
            verdict = "letting requests through unmetered" if self.fail_open else "answering 503"
            # The type only: a driver's message may quote the store URL and its password.
            logger.error("rate-limit store failed (%s): %s", type(exc).__name__, verdict)
        if not self.fail_open:
            raise LimitStoreUnavailable(
                "The proxy's rate-limit store is unavailable; try again shortly."
            ) from None

    def headers(self, counts: dict[str, int], wait: float) -> RawHeaders:
        headers: RawHeaders = []
        reset = duration(wait).encode()
        if self.requests:
            headers += [
                (b"x-ratelimit-limit-requests", self._requests_value),
                (
                    b"x-ratelimit-remaining-requests",
                    str(max(0, self.requests - counts.get("requests", 0))).encode(),
                ),
                (b"x-ratelimit-reset-requests", reset),
            ]
        if self.tokens:
            headers += [
                (b"x-ratelimit-limit-tokens", self._tokens_value),
                (
                    b"x-ratelimit-remaining-tokens",
                    str(max(0, self.tokens - counts.get("tokens", 0))).encode(),
                ),
                (b"x-ratelimit-reset-tokens", reset),
            ]
        return headers

    @staticmethod
    def refusal(message: str, wait: float, headers: RawHeaders) -> RateLimited:
        extra = {name.decode(): value.decode() for name, value in headers}
        extra["retry-after"] = str(max(1, math.ceil(wait)))
        # A window that ends in seconds is worth an SDK's retry; a long one would hang it.
        retryable = wait <= RETRY_SOON_SECONDS
        return RateLimited(message, headers=extra, retryable=retryable)


class RequestLimit:
    """Counts the request before its body is read; refuses a caller over either limit."""

    reads_body = False

    def __init__(self, limiter: RateLimiter) -> None:
        self.limiter = limiter

    async def admit(self, request: ProxyRequest) -> Ticket | None:
        return await self.count(request, tokens_too=True)

    async def count_turn(self, request: ProxyRequest) -> None:
        """A further upstream call of a request that lasts (a response a realtime
        session's provider begins, a Gemini stream's continuation), counted as one more
        request (RateLimited past the limit): without a token limit or budget nothing else
        bounds how many it makes. The token limit is the reservation's to hold (counted
        when the request was admitted), so only requests are checked here."""
        if self.limiter.requests:
            await self.count(request, tokens_too=False)

    async def count(self, request: ProxyRequest, *, tokens_too: bool) -> Ticket | None:
        limiter = self.limiter
        key, reset_at, expires_at = limiter.window_of(request.counted_as)
        store = limiter.store
        try:
            if store.blocking:
                counts = await limiter.call(
                    store.increment, key, limiter._amounts, expires_at=expires_at
                )
            else:
                counts = store.increment(key, limiter._amounts, expires_at=expires_at)
        except Exception as exc:
            limiter.store_failed(exc)
            return None
        wait = reset_at - limiter.clock()
        headers = limiter.headers(counts, wait)
        if limiter.requests and counts.get("requests", 0) > limiter.requests:
            raise limiter.refusal(
                f"Rate limit reached: {limiter.requests} requests per "
                f"{duration(limiter.window)} for this caller. Try again in {duration(wait)}.",
                wait,
                headers,
            )
        used = counts.get("tokens", 0)
        if tokens_too and limiter.tokens and used >= limiter.tokens:
            # "Rate limit", never "token limit": LangChain reads a Gemini error whose text
            # holds "token limit" as a context overflow (and may compact and call again).
            raise limiter.refusal(
                f"Rate limit reached: {limiter.tokens} tokens per {duration(limiter.window)} "
                f"for this caller ({used} used). Try again in {duration(wait)}.",
                wait,
                headers,
            )
        return HeaderTicket(headers)


class TokenLimit:
    """Reserves the request's worst case in the caller's token count; settles to what the
    reply reports."""

    reads_body = True

    def __init__(self, limiter: RateLimiter, estimate: Estimate) -> None:
        self.limiter = limiter
        self.estimate = estimate

    async def admit(self, request: ProxyRequest) -> Ticket | None:
        limiter = self.limiter
        worst = await self.estimate(request)
        if worst.total == 0:
            return None
        key, reset_at, expires_at = limiter.window_of(request.counted_as)
        store = limiter.store
        try:
            if store.blocking:
                reserved = await limiter.call(
                    store.reserve, key, "tokens", worst.total, limiter.tokens, expires_at=expires_at
                )
            else:
                reserved = store.reserve(
                    key, "tokens", worst.total, limiter.tokens, expires_at=expires_at
                )
        except Exception as exc:
            limiter.store_failed(exc)
            return None
        if reserved is None:
            wait = reset_at - limiter.clock()
            raise limiter.refusal(  # worded as in `RequestLimit.count`, for the same reason
                f"Rate limit reached: {limiter.tokens} tokens per "
                f"{duration(limiter.window)} for this caller, all used or reserved by requests "
                f"in flight. Try again in {duration(wait)}.",
                wait,
                [],
            )
        return TokenReservation(limiter, key, expires_at, worst, reserved)


@dataclass
class TokenReservation:
    limiter: RateLimiter
    key: str
    expires_at: float
    worst: Usage
    # What the store let this request hold: its worst case, or the room that was left.
    reserved: int
    headers: RawHeaders = field(default_factory=list)
    needs_usage: bool = True

    async def settle(self, outcome: Outcome) -> None:
        change = outcome.tokens(self.worst).total - self.reserved
        if change == 0:
            return
        limiter = self.limiter
        store = limiter.store
        try:
            if store.blocking:
                await limiter.call(
                    store.increment, self.key, {"tokens": change}, expires_at=self.expires_at
                )
            else:
                store.increment(self.key, {"tokens": change}, expires_at=self.expires_at)
        except Exception as exc:
            with contextlib.suppress(LimitStoreUnavailable):  # the reply is over
                limiter.store_failed(exc)
