"""Rate limits per caller, counted in a shared store so every instance sees one limit.

Fixed windows of RATE_LIMIT_WINDOW seconds: one counter item per caller and window
(`rl:<window>:<caller hash>`) holding `requests` and `tokens`. A request adds 1 to
`requests` and reads `tokens` in the same atomic store call (one round trip); when the
response reports usage, its tokens are added afterwards. So a token limit stops the
requests *after* the window's total passes it: usage is only known once a reply ends.

When the store cannot be reached, LIMITS_ON_STORE_ERROR decides: `closed` (the default)
answers 503, because an unmetered public endpoint spends the key owner's money; `open`
lets the request through unmetered and logs it.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from core.errors import ProxyError, RateLimited
from core.stores import Store
from core.stores.calls import DEFAULT_STORE_TIMEOUT, call_store

logger = logging.getLogger("llm_proxy")

RawHeaders = list[tuple[bytes, bytes]]


class LimitStoreUnavailable(ProxyError):
    """The rate-limit store did not answer and LIMITS_ON_STORE_ERROR=closed."""

    status = 503
    code = "rate_limit_store_unavailable"
    openai_type = "server_error"


@dataclass
class Admission:
    """A request let through: where to add its tokens later and the headers to show."""

    key: str | None
    expires_at: float
    headers: RawHeaders = field(default_factory=list)


def duration(seconds: float) -> str:
    """OpenAI's way of writing a reset time: `12s`, `1m30s`."""
    whole = max(0, math.ceil(seconds))
    minutes, secs = divmod(whole, 60)
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


def caller_key(identity: str) -> str:
    # Hashed: a JWT `sub` or label may be long or hold any character a store dislikes.
    return hashlib.sha256(identity.encode()).hexdigest()[:32]


class RateLimiter:
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
        self._amounts = {"requests": 1, "tokens": 0}
        self._last_error_log = 0.0

    async def _increment(
        self, key: str, amounts: dict[str, int], expires_at: float
    ) -> dict[str, int]:
        store = self.store
        return await call_store(
            store, self.timeout, store.increment, key, amounts, expires_at=expires_at
        )

    def _log_store_error(self, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._last_error_log > 10:  # an outage must not flood the logs
            self._last_error_log = now
            verdict = "letting requests through unmetered" if self.fail_open else "answering 503"
            # The type only: a driver's message may quote the store URL and its password.
            logger.error("rate-limit store failed (%s): %s", type(exc).__name__, verdict)

    async def admit(self, identity: str) -> Admission:
        """Count one request for `identity`; RateLimited if it is over a limit."""
        now = self.clock()
        index = int(now // self.window)
        reset_at = (index + 1) * self.window
        key = f"rl:{index}:{caller_key(identity)}"
        # Kept one window past its end, so a clock a little behind still finds it.
        expires_at = reset_at + self.window
        try:
            counts = await self._increment(key, self._amounts, expires_at)
        except Exception as exc:
            self._log_store_error(exc)
            if self.fail_open:
                return Admission(None, expires_at)
            raise LimitStoreUnavailable(
                "The proxy's rate-limit store is unavailable; try again shortly."
            ) from None
        wait = reset_at - now
        used_requests = counts.get("requests", 0)
        used_tokens = counts.get("tokens", 0)
        headers: RawHeaders = []
        if self.requests:
            headers += [
                (b"x-ratelimit-limit-requests", str(self.requests).encode()),
                (
                    b"x-ratelimit-remaining-requests",
                    str(max(0, self.requests - used_requests)).encode(),
                ),
                (b"x-ratelimit-reset-requests", duration(wait).encode()),
            ]
        if self.tokens:
            headers += [
                (b"x-ratelimit-limit-tokens", str(self.tokens).encode()),
                (b"x-ratelimit-remaining-tokens", str(max(0, self.tokens - used_tokens)).encode()),
                (b"x-ratelimit-reset-tokens", duration(wait).encode()),
            ]
        window = duration(self.window)
        if self.requests and used_requests > self.requests:
            raise self._refusal(
                f"Rate limit reached: {self.requests} requests per {window} for this caller. "
                f"Try again in {duration(wait)}.",
                wait,
                headers,
            )
        if self.tokens and used_tokens >= self.tokens:
            raise self._refusal(
                f"Token limit reached: {self.tokens} tokens per {window} for this caller "
                f"({used_tokens} used). Try again in {duration(wait)}.",
                wait,
                headers,
            )
        return Admission(key, expires_at, headers)

    @staticmethod
    def _refusal(message: str, wait: float, headers: RawHeaders) -> RateLimited:
        extra = {name.decode(): value.decode() for name, value in headers}
        extra["retry-after"] = str(max(1, math.ceil(wait)))
        return RateLimited(message, headers=extra)

    async def record_tokens(self, admission: Admission, used: int) -> None:
        """Add a finished reply's reported tokens to the caller's window."""
        if admission.key is None or used <= 0 or not self.tokens:
            return
        try:
            await self._increment(admission.key, {"tokens": used}, admission.expires_at)
        except Exception as exc:
            self._log_store_error(exc)
