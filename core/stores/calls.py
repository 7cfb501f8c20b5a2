"""Calling a blocking store from the event loop: on the stores' own threads, waited for a
bounded time.

Store calls used to go through `asyncio.to_thread`, the loop's default executor (a handful
of threads on a small machine). A store that hangs (a SQLite writer holding the lock, a
Redis that stopped answering) then held every one of those threads, and anything else
that needs one (DNS lookups for new upstream connections) waited behind it. Here the
store gets its own pool, a request waits at most `timeout` seconds for an answer (the
caller then gets a 503), and bookkeeping writes nobody waits for (a token's last use) go
through one more thread of their own, so they never take a thread a lookup needs.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

    from core.stores import Store

T = TypeVar("T")

# Seconds a request waits for the token or limit store before it is answered 503
# (STORE_TIMEOUT's default). SQLite waits this long for a write lock held by someone else.
DEFAULT_STORE_TIMEOUT = 2.0
# Threads for calls a request waits on; each SQLite thread keeps its own connection.
STORE_THREADS = 16

_executors: dict[str, ThreadPoolExecutor] = {}


def _executor(name: str, workers: int) -> ThreadPoolExecutor:
    executor = _executors.get(name)
    if executor is None:
        from concurrent.futures import ThreadPoolExecutor  # loads threading's pool: lazily

        executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
        _executors[name] = executor
    return executor


async def call_store(
    store: Store, timeout: float, fn: Callable[..., T], *args: object, **kwargs: object
) -> T:
    """`fn(*args, **kwargs)` (a method of `store`); TimeoutError after `timeout` seconds."""
    if not store.blocking:
        return fn(*args, **kwargs)
    loop = asyncio.get_running_loop()
    call = functools.partial(fn, *args, **kwargs)
    future = loop.run_in_executor(_executor("store", STORE_THREADS), call)
    # The thread cannot be stopped; it ends on its own (SQLite's busy timeout, a driver's
    # socket timeout). The caller stops waiting now.
    return await asyncio.wait_for(future, timeout)


def call_store_later(store: Store, fn: Callable[..., None], *args: object) -> asyncio.Future[None]:
    """Run `fn(*args)` in the background, one at a time, on a thread no request waits for."""
    if not store.blocking:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fn(*args)
        future.set_result(None)
        return future
    loop = asyncio.get_running_loop()
    return loop.run_in_executor(_executor("store-background", 1), functools.partial(fn, *args))
