"""Finding request state kept in reference cycles: what only the collector's full pass
frees (tests/server/test_no_reference_cycles.py, and every test of a request's end that
must leave nothing for it)."""

from __future__ import annotations

import contextlib
import gc
import http.client
from collections import Counter
from collections.abc import Iterator
from urllib.parse import urlsplit

# Objects of these packages found only by the collector mean a request was kept in a cycle
# (the mock upstream, core/devtools, is a test fixture here, not the proxy).
WATCHED = ("core.", "uvicorn.", "aiohttp.client", "httpx.", "httpcore.")


def leaked(garbage: list[object], allowed: set[str] | frozenset[str] = frozenset()) -> Counter[str]:
    names: Counter[str] = Counter()
    for item in garbage:
        kind = type(item)
        module = kind.__module__ or ""
        name = f"{module}.{kind.__qualname__}"
        ours = module.startswith(WATCHED) and not module.startswith("core.devtools")
        if ours and name not in allowed:
            names[name] += 1
    return names


@contextlib.contextmanager
def collector_off() -> Iterator[list[object]]:
    """The collector off for the block; then what one full pass found unreachable."""
    gc.collect()
    gc.disable()
    found: list[object] = []
    try:
        yield found
    finally:
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            gc.collect()
            found.extend(gc.garbage)
            gc.garbage.clear()
        finally:
            gc.set_debug(0)
            gc.enable()


def connect(url: str) -> http.client.HTTPConnection:
    # The standard library's client: httpx's own objects make cycles of their own, which
    # would hide the proxy's (it uses httpx as a transport).
    return http.client.HTTPConnection(urlsplit(url).netloc, timeout=10)
