"""A hostile caller against the response cache's key: what shapes a reply must be in it.

Over real sockets with a scripted upstream. Each test failed before its fix."""

from __future__ import annotations

import contextlib
import itertools
import json
from collections.abc import Iterator
from typing import Any

import httpx

from tests.support.metered import JSON, metered
from tests.support.scripted_upstream import ScriptedUpstream
from tests.support.servers import FAKE_TOKEN, OTHER_TOKEN, RunningServer

_counter = itertools.count()


def _echo_file_uri(request: dict[str, Any]) -> Any:
    """A Gemini answer that names a File by the upstream's own URL, as a model asked to
    repeat a fileUri does (and as files.get does): the proxy points it at itself."""
    uri = f"http://{request['headers']['host']}/v1beta/files/abc"
    answer = {
        "candidates": [{"content": {"parts": [{"text": f"See {uri}"}]}, "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": 1},
    }
    return 200, JSON, [(0, json.dumps(answer).encode())]


@contextlib.contextmanager
def _shared_cache() -> Iterator[RunningServer]:
    with metered(ScriptedUpstream(_echo_file_uri), CACHE_URL="memory", CACHE_SCOPE="shared") as p:
        yield p


def _ask_gemini(proxy: RunningServer, question: str, token: str, **headers: str) -> httpx.Response:
    body = {"contents": [{"parts": [{"text": question}]}], "generationConfig": {"temperature": 0}}
    return httpx.post(
        f"{proxy.url}/gemini/v1beta/models/gemini-pro:generateContent",
        json=body,
        headers={"x-goog-api-key": token, **headers},
        timeout=10,
    )


def test_a_reply_the_proxy_rewrote_for_one_host_is_not_replayed_to_another() -> None:
    """Gemini replies name the proxy by the Host the caller sent (core/proxy/uploads.py): a
    caller's own choice, meant to shape only its own reply. Under CACHE_SCOPE=shared, a
    caller that sent `Host: evil.example` had every later caller handed links to
    evil.example (and their SDKs would send their token there)."""
    with _shared_cache() as proxy:
        question = f"repeat the file uri {next(_counter)}"
        poisoned = _ask_gemini(proxy, question, OTHER_TOKEN, Host="evil.example")
        assert "http://evil.example/gemini/v1beta/files/abc" in poisoned.text
        victim = _ask_gemini(proxy, question, FAKE_TOKEN)
        assert victim.status_code == 200
        assert "evil.example" not in victim.text  # main: the poisoned entry, a hit
        assert f"{proxy.url}/gemini/v1beta/files/abc" in victim.text
        again = _ask_gemini(proxy, question, FAKE_TOKEN)
        assert again.headers["x-proxy-cache"] == "hit" and again.content == victim.content


def test_how_each_request_directive_is_read() -> None:
    """docs/cache.md, "The caller decides too": any case, every Cache-Control header, the
    smallest max-age, an odd one as fresh, a huge one as 2**31, Pragma only alone."""
    from core.cache.key import cache_control, max_age

    def age(*headers: tuple[bytes, bytes]) -> int | None:
        return max_age(list(headers))

    cc = b"cache-control"
    assert b"no-store" in cache_control([(cc, b"max-age=5"), (cc, b" NO-STORE ")])
    assert age((cc, b"Max-Age=60"), (cc, b"max-age=5")) == 5
    assert age((cc, b"max-age=60, max-age=0")) == 0
    assert age((cc, b'max-age="12"')) == 12
    assert age((cc, b"private, No-Cache")) == 0
    for odd in (b"-1", b"soon", b"", b"1.5", b"+3"):
        assert age((cc, b"max-age=" + odd)) == 0, odd
    assert age((cc, b"max-age=" + b"9" * 5000)) == 2**31
    assert age((cc, b"max-age=99999999999")) == 2**31
    assert age((b"pragma", b"no-cache")) == 0
    assert age((b"pragma", b"no-cache"), (cc, b"max-age=30")) == 30  # RFC 9111: CC wins
    assert age((cc, b"no-transform")) is None and age() is None
