"""Who is calling, as units: the credential found in each SDK's slot, Gemini's `key=` taken
out of the query, the token check (shared tokens, stored tokens, its cache at its edge, the
last-use writes) and the identity limits count under. The proxy-level tests
(test_credential_slots.py, test_tokens_over_proxy.py) show the slots are read; these pin
each rule at its edges, found by mutation testing (docs/mutation.md)."""

from __future__ import annotations

import time as real_time
from types import SimpleNamespace
from typing import Any

import pytest

from core.access import credentials
from core.access.credentials import TOUCH_INTERVAL, TokenCheck, TokenStoreUnavailable
from core.access.identify import ANONYMOUS_CALLER, Identify
from core.access.tokens import create_token, set_disabled
from core.caller import SHARED_TOKEN_CALLER
from core.digest import sha256
from core.errors import Forbidden, Unauthorized
from core.headers import find_credential, split_key_param
from core.stores.memory import MemoryStore

SHARED = b"shared-proxy-token-not-real"
OTHER_SHARED = b"second-proxy-token-not-real"

# ---- Gemini's key= in the query ----------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "key", "rest"),
    [
        (b"", None, b""),
        (b"alt=sse", None, b"alt=sse"),
        (b"key=abc&alt=sse", b"abc", b"alt=sse"),
        (b"alt=sse&KEY=abc", b"abc", b"alt=sse"),
        (b"%6Bey=abc", b"abc", b""),
        (b"%6B%65%79=abc&x=1", b"abc", b"x=1"),
        (b"key=a%2Bb", b"a+b", b""),
        # The rest stays byte for byte, encodings and order included.
        (b"a=%20x&key=k&b=2", b"k", b"a=%20x&b=2"),
        # Every key= goes, whichever one the check reads.
        (b"key=a&x=1&key=b", b"b", b"x=1"),
        # Lookalike names are not the key.
        (b"monkey=1&keys=2&key", None, b"monkey=1&keys=2&key"),
        (b"apikey=1&x%3D=2", None, b"apikey=1&x%3D=2"),
    ],
)
def test_the_key_param_is_taken_out_and_the_rest_kept(
    query: bytes, key: bytes | None, rest: bytes
) -> None:
    assert split_key_param(query) == (key, rest)


# ---- the header slots --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "found"),
    [
        ([(b"authorization", b"Bearer tok")], b"tok"),
        ([(b"authorization", b"bearer tok")], b"tok"),
        ([(b"authorization", b"BEARER  tok ")], b"tok"),
        ([(b"x-api-key", b" tok ")], b"tok"),
        ([(b"x-goog-api-key", b"tok")], b"tok"),
        ([(b"api-key", b"tok")], b"tok"),
        # The first slot that has one, in the order the headers came.
        ([(b"x-api-key", b"first"), (b"authorization", b"Bearer second")], b"first"),
        ([(b"x-api-keys", b"not-a-slot"), (b"accept", b"*/*")], None),
    ],
)
def test_the_credential_comes_from_the_first_slot_that_has_one(
    headers: list[tuple[bytes, bytes]], found: bytes | None
) -> None:
    assert find_credential(headers, None) == found


def test_the_key_param_is_used_only_when_no_header_slot_has_one() -> None:
    assert find_credential([], b" from-query ") == b"from-query"
    assert find_credential([(b"x-api-key", b"from-header")], b"from-query") == b"from-header"


@pytest.mark.parametrize("value", [b"Basic dXNlcjpwYXNz", b"Token tok", b"tok"])
def test_authorization_must_use_bearer(value: bytes) -> None:
    with pytest.raises(Unauthorized) as refused:
        find_credential([(b"authorization", value)], None)
    assert "Bearer" in refused.value.message


# ---- the token check ---------------------------------------------------------------------


class Clock:
    """Stands in for the module's `time`: monotonic for the cache, time for expiry and
    the last-use writes."""

    def __init__(self) -> None:
        # Now, since the store keeps expiring items by the real clock.
        self.now = real_time.time()

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now


class CountingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.gets = 0
        self.touches: list[float] = []
        self.fail = False

    def get(self, key: str) -> Any:
        self.gets += 1
        if self.fail:
            raise ConnectionError("store at redis://:secret@10.0.0.1 is down")
        return super().get(key)

    def touch(self, key: str, when: float) -> None:
        self.touches.append(when)
        super().touch(key, when)


@pytest.fixture()
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(credentials, "time", fake)
    return fake


async def test_every_shared_token_is_accepted_not_only_the_last() -> None:
    check = TokenCheck((sha256(SHARED), sha256(OTHER_SHARED)))
    assert await check.identify(SHARED) is SHARED_TOKEN_CALLER
    assert await check.identify(OTHER_SHARED) is SHARED_TOKEN_CALLER
    with pytest.raises(Unauthorized):
        await check.identify(b"not-a-token")


@pytest.mark.parametrize(("credential", "says"), [(None, "No proxy token"), (b"", "blank")])
async def test_a_missing_or_blank_credential_is_refused_saying_which(
    credential: bytes | None, says: str
) -> None:
    check = TokenCheck((sha256(SHARED),), CountingStore())
    with pytest.raises(Unauthorized) as refused:
        await check.identify(credential)
    assert says in refused.value.message


async def test_a_stored_token_is_its_own_caller_scoped_only_when_it_limits_something(
    clock: Clock,
) -> None:
    store = CountingStore()
    plain, plain_record = create_token(store, "plain")
    scoped, _ = create_token(store, "scoped", models=("cheap-*",))
    by_provider, _ = create_token(store, "by-provider", providers=("openai",))
    check = TokenCheck((sha256(SHARED),), store)
    caller = await check.identify(plain.encode())
    assert (caller.label, caller.record, caller.scoped) == ("plain", plain_record, False)
    assert (await check.identify(scoped.encode())).scoped is True
    assert (await check.identify(by_provider.encode())).scoped is True


async def test_disabled_and_expired_tokens_are_refused_at_their_edge(clock: Clock) -> None:
    store = CountingStore()
    disabled, _ = create_token(store, "disabled")
    set_disabled(store, "disabled", True)
    expiring, _ = create_token(store, "expiring", expires_at=clock.now + 10)
    check = TokenCheck((), store, cache_seconds=0)
    with pytest.raises(Unauthorized, match="disabled"):
        await check.identify(disabled.encode())
    clock.now += 9.999
    assert (await check.identify(expiring.encode())).label == "expiring"
    clock.now += 0.001
    with pytest.raises(Unauthorized, match="expired"):
        await check.identify(expiring.encode())


async def test_a_lookup_is_cached_for_exactly_its_cache_time(clock: Clock) -> None:
    store = CountingStore()
    token, _ = create_token(store, "cached")
    store.gets = 0  # the lookups counted are the check's (creating reads the store too)
    check = TokenCheck((), store, cache_seconds=2.0)
    await check.identify(token.encode())
    clock.now += 1.999
    await check.identify(token.encode())
    assert store.gets == 1
    clock.now += 0.001
    await check.identify(token.encode())
    assert store.gets == 2


async def test_an_unknown_token_is_cached_too_and_no_cache_time_means_none(
    clock: Clock,
) -> None:
    store = CountingStore()
    check = TokenCheck((), store, cache_seconds=2.0)
    for _ in range(2):
        with pytest.raises(Unauthorized):
            await check.identify(b"made-up")
    assert store.gets == 1
    uncached = TokenCheck((), store, cache_seconds=0)
    for _ in range(2):
        with pytest.raises(Unauthorized):
            await uncached.identify(b"made-up")
    assert store.gets == 3


async def test_last_use_is_written_at_most_once_per_interval(clock: Clock) -> None:
    store = CountingStore()
    token, _ = create_token(store, "used")
    check = TokenCheck((), store, cache_seconds=0)
    await check.identify(token.encode())
    assert store.touches == [clock.now]
    first = clock.now
    clock.now += TOUCH_INTERVAL - 0.001
    await check.identify(token.encode())
    assert store.touches == [first]
    clock.now += 0.001
    await check.identify(token.encode())
    assert store.touches == [first, clock.now]


async def test_a_disabled_token_is_not_marked_used(clock: Clock) -> None:
    store = CountingStore()
    token, _ = create_token(store, "off")
    set_disabled(store, "off", True)
    with pytest.raises(Unauthorized):
        await TokenCheck((), store, cache_seconds=0).identify(token.encode())
    assert store.touches == []


async def test_a_store_that_fails_is_a_503_that_quotes_nothing_of_it() -> None:
    store = CountingStore()
    store.fail = True
    with pytest.raises(TokenStoreUnavailable) as refused:
        await TokenCheck((), store).identify(b"some-token")
    assert refused.value.status == 503
    assert "secret" not in refused.value.message


async def test_without_a_store_only_the_shared_tokens_pass() -> None:
    with pytest.raises(Unauthorized, match="not valid"):
        await TokenCheck((sha256(SHARED),)).identify(b"stored-looking-token")


# ---- identify: anonymous callers and the identity limits count under ---------------------


def request(credential: bytes | None = None, origin: bytes | None = None) -> Any:
    scope = {"client": ("203.0.113.9", 1234), "headers": []}
    return SimpleNamespace(credential=credential, origin=origin, scope=scope)


async def test_anonymous_calls_come_only_from_a_listed_page() -> None:
    identify = Identify(
        TokenCheck((sha256(SHARED),)), anonymous_origins=frozenset({b"https://a.test"})
    )
    assert await identify.caller(request(origin=b"https://a.test")) is ANONYMOUS_CALLER
    for origin in (None, b"https://a.test.evil.net", b"https://A.test"):
        with pytest.raises(Forbidden):
            await identify.caller(request(origin=origin))
    # A credential is checked as usual, anonymous mode or not.
    assert await identify.caller(request(SHARED)) is SHARED_TOKEN_CALLER
    with pytest.raises(Unauthorized):
        await identify.caller(request(b"wrong", origin=b"https://a.test"))


async def test_without_anonymous_mode_no_credential_is_refused() -> None:
    identify = Identify(TokenCheck((sha256(SHARED),)))
    with pytest.raises(Unauthorized):
        await identify.caller(request(origin=b"https://a.test"))


def test_limits_count_a_stored_token_by_id_and_shared_callers_together_or_by_ip() -> None:
    store = MemoryStore()
    _, record = create_token(store, "alice")
    from core.caller import Caller

    identify = Identify(TokenCheck(()))
    assert identify.counted_as(request(), Caller("alice", record)) == "token:" + record.id
    assert identify.counted_as(request(), SHARED_TOKEN_CALLER) == "shared"
    assert identify.counted_as(request(), ANONYMOUS_CALLER) == "anonymous"
    assert identify.counted_as(request(), Caller("user:42")) == "user:42"
    by_ip = Identify(TokenCheck(()), client_ip=lambda scope: scope["client"][0])  # type: ignore[arg-type]
    assert by_ip.counted_as(request(), SHARED_TOKEN_CALLER) == "ip:203.0.113.9"
    assert by_ip.counted_as(request(), ANONYMOUS_CALLER) == "ip:203.0.113.9"
    assert by_ip.counted_as(request(), Caller("alice", record)) == "token:" + record.id


async def test_the_lookup_cache_starts_over_past_its_bound(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flood of made-up tokens cannot grow the cache without end: past the bound it is
    emptied, so what it held is looked up again."""
    monkeypatch.setattr(credentials, "_CACHE_LIMIT", 2)
    store = CountingStore()
    check = TokenCheck((), store, cache_seconds=60)
    for made_up in (b"made-up-a", b"made-up-b", b"made-up-c", b"made-up-a"):
        with pytest.raises(Unauthorized):
            await check.identify(made_up)
    assert store.gets == 4


async def test_a_last_use_write_that_fails_does_not_fail_the_request(clock: Clock) -> None:
    class NoTouch(CountingStore):
        def touch(self, key: str, when: float) -> None:
            raise ConnectionError("read-only replica")

    store = NoTouch()
    token, _ = create_token(store, "read-only")
    caller = await TokenCheck((), store, cache_seconds=0).identify(token.encode())
    assert caller.label == "read-only"
