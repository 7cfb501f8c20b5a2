"""Who is calling: find the caller's credential in any SDK's slot and check it.

Each SDK already puts its key somewhere (OpenAI: `Authorization: Bearer`, Anthropic:
`x-api-key`, Gemini: `x-goog-api-key` or `?key=`, Azure: `api-key`); the caller keeps that
habit and puts its proxy credential there instead. All slots go through one check:
first the PROXY_ACCESS_TOKEN list (constant-time, over SHA-256 digests), then, if a token
store is configured, the per-caller tokens kept there by hash (see core/access/tokens.py).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from typing import TYPE_CHECKING

from core.caller import SHARED_TOKEN_CALLER, Caller
from core.digest import sha256
from core.errors import ProxyError, Unauthorized
from core.stores.calls import DEFAULT_STORE_TIMEOUT, call_store, call_store_later

if TYPE_CHECKING:
    from core.config import Settings
    from core.stores import Store
    from core.token_record import TokenRecord

logger = logging.getLogger("llm_proxy")

# `last_used` is written at most this often per token: a write per request would cost
# more than the request's own work on the proxy.
TOUCH_INTERVAL = 60.0
# Past this many last-use writes waiting for a slow store, more are skipped.
_MAX_PENDING_TOUCHES = 64
# Past this many cached verdicts the cache starts over: bounds memory under a flood of
# made-up tokens.
_CACHE_LIMIT = 10_000


class TokenStoreUnavailable(ProxyError):
    """The token store did not answer, so the caller cannot be identified."""

    status = 503
    code = "token_store_unavailable"
    openai_type = "server_error"


class TokenCheck:
    """Constant-time membership test against SHA-256 digests of the allowed tokens, then a
    lookup of per-caller tokens in the store (if any), cached for `cache_seconds`."""

    def __init__(
        self,
        token_hashes: tuple[bytes, ...],
        store: Store | None = None,
        cache_seconds: float = 2.0,
        store_timeout: float = DEFAULT_STORE_TIMEOUT,
    ) -> None:
        self._hashes = token_hashes
        self._store = store
        self._store_timeout = store_timeout
        self._cache_seconds = cache_seconds
        # digest -> (monotonic time fetched, record or None for "no such token")
        self._cache: dict[bytes, tuple[float, TokenRecord | None]] = {}
        self._touching: set[asyncio.Future[None]] = set()
        if store is not None:
            # The stored tokens' code, loaded only where there is a token store: a
            # deployment with PROXY_ACCESS_TOKEN alone starts without it (cold start).
            from core.access.tokens import record_from_item, store_key

            self._record_from_item = record_from_item
            self._store_key = store_key

    def _digest(self, credential: bytes | None) -> bytes:
        if credential is None:
            raise Unauthorized(
                "No proxy token: send it as 'Authorization: Bearer <token>' "
                "(or in x-api-key, x-goog-api-key or ?key=)."
            )
        if not credential:
            raise Unauthorized("The proxy token is blank.")
        return sha256(credential)

    def _is_shared_token(self, digest: bytes) -> bool:
        # Compare against every entry, so timing says nothing about which one matched.
        matched = False
        for allowed in self._hashes:
            matched |= hmac.compare_digest(digest, allowed)
        return matched

    async def identify(self, credential: bytes | None) -> Caller:
        """The caller behind `credential`; Unauthorized if it is no valid token."""
        return await self.identify_digest(self._digest(credential))

    async def identify_digest(self, digest: bytes) -> Caller:
        """As `identify`, from the credential's SHA-256: an upload leg checks again the
        token that started its upload, which the leg itself does not carry."""
        if self._is_shared_token(digest):
            return SHARED_TOKEN_CALLER
        if self._store is None:
            raise Unauthorized("The proxy token is not valid.")
        record = await self._lookup(digest)
        if record is None:
            raise Unauthorized("The proxy token is not valid.")
        if record.disabled:
            raise Unauthorized(f"The proxy token {record.id} is disabled.")
        if record.expired(time.time()):
            raise Unauthorized(f"The proxy token {record.id} has expired.")
        return Caller(
            record.label,
            record,
            scoped=bool(record.providers or record.models),
            expires_at=record.expires_at,
        )

    async def _lookup(self, digest: bytes) -> TokenRecord | None:
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and now - cached[0] < self._cache_seconds:
            return cached[1]
        store = self._store
        assert store is not None
        try:
            key = self._store_key(digest.hex())
            item = await call_store(store, self._store_timeout, store.get, key)
        except Exception as exc:
            # The type only: a driver's message may quote the store URL and its password.
            logger.error("token store lookup failed: %s", type(exc).__name__)
            raise TokenStoreUnavailable(
                "The proxy's token store is unavailable; try again."
            ) from None
        record = None
        if item is not None:
            found = self._record_from_item(item)
            # The store is keyed by the digest already; this re-check costs nothing.
            if hmac.compare_digest(found.token_hash, digest.hex()):
                record = found
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        if self._cache_seconds > 0:
            self._cache[digest] = (now, record)
        if record is not None and not record.disabled:
            self._touch_later(store, record)
        return record

    def _touch_later(self, store: Store, record: TokenRecord) -> None:
        wall = time.time()
        if record.last_used is not None and wall - record.last_used < TOUCH_INTERVAL:
            return
        key = self._store_key(record.token_hash)

        def touch() -> None:
            try:
                store.touch(key, wall)
            except Exception as exc:  # only bookkeeping: the request goes on
                logger.warning("token last-used update failed: %s", type(exc).__name__)

        if len(self._touching) >= _MAX_PENDING_TOUCHES:
            return  # the store is slow: bookkeeping waits for a later request
        task = call_store_later(store, touch)
        self._touching.add(task)
        task.add_done_callback(self._touching.discard)


def token_check_from_settings(settings: Settings, store: Store | None = None) -> TokenCheck:
    """The check a deployment's settings describe; opens the token store if one is set
    (or uses `store`, already opened from it, so the dashboard shares one client)."""
    if store is None and settings.token_store:
        from core.stores import open_store

        store = open_store(settings.token_store)
    return TokenCheck(
        settings.access_token_hashes, store, settings.token_cache_seconds, settings.store_timeout
    )
