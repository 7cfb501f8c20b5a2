"""Issue 19, class 3: the cache stores or shares what it must not. Over real sockets, with
an upstream that answers the odd way real ones sometimes do.

A stream that ends cleanly but unfinished, and a 200 whose body is an error, are not
stored; every forwarded header that shapes the reply is in the key; under
CACHE_SCOPE=shared one caller's `no-cache` does not replace what everyone else gets; a hit
replays no per-request header."""

from __future__ import annotations

import contextlib
import gzip
import itertools
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.metered import EVENTS, JSON, metered
from tests.support.scripted_upstream import ScriptedUpstream
from tests.support.servers import FAKE_TOKEN, OTHER_TOKEN, RunningServer

_counter = itertools.count()
PER_REQUEST = {
    "x-request-id": "req_upstream_1",
    "request-id": "req_upstream_2",
    "anthropic-ratelimit-requests-remaining": "41",
    "openai-processing-ms": "123",
    "set-cookie": "__cf_bm=abc; path=/",
    "cf-ray": "8f00000000000000-AMS",
    "x-envoy-upstream-service-time": "99",
    "openai-version": "2020-10-01",
}


def _sse(*events: Any) -> list[tuple[float, bytes]]:
    out = []
    for event in events:
        if isinstance(event, tuple):  # (event name, data)
            name, data = event
            out.append(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
        else:
            data = event if isinstance(event, str) else json.dumps(event)
            out.append(f"data: {data}\n\n".encode())
    return [(0, chunk) for chunk in out]


def _openai_stream(n: int, finished: bool, two: bool = False) -> list[tuple[float, bytes]]:
    base = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    events: list[Any] = [{**base, "choices": [{"index": 0, "delta": {"content": f"answer {n}"}}]}]
    if two:
        # n=2: a second choice, cut (unless finished) after the first one finished; a
        # server that ends every stream with [DONE] still sends it.
        events.append({**base, "choices": [{"index": 1, "delta": {"content": f"answer {n}"}}]})
        events.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        if finished:
            events.append({**base, "choices": [{"index": 1, "delta": {}, "finish_reason": "stop"}]})
        return _sse(*events, "[DONE]")
    if finished:
        events.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        events.append("[DONE]")
    return _sse(*events)


def _anthropic_stream(n: int, finished: bool) -> list[tuple[float, bytes]]:
    events: list[Any] = [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {"id": "m", "usage": {"input_tokens": 1, "output_tokens": 1}},
            },
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": f"answer {n}"},
            },
        ),
    ]
    if finished:
        events.append(("message_stop", {"type": "message_stop"}))
    return _sse(*events)


def _gemini_stream(n: int, finished: bool, two: bool = False) -> list[tuple[float, bytes]]:
    candidate: dict[str, Any] = {"content": {"parts": [{"text": f"answer {n}"}], "role": "model"}}
    if not two:
        if finished:
            candidate["finishReason"] = "STOP"
        return _sse({"candidates": [candidate]})
    # candidateCount 2: the candidates are written side by side and finish apart (Gemini
    # leaves out an `index` of 0). The first one finishing is not the stream finishing.
    second = {**candidate, "index": 1}
    events: list[Any] = [
        {"candidates": [candidate, second]},
        {"candidates": [{**candidate, "finishReason": "STOP"}]},
    ]
    if finished:
        events.append({"candidates": [{**second, "finishReason": "STOP"}]})
    return _sse(*events)


class Upstream:
    """Answers by the request's `model`: `<shape>` or `<shape>-unfinished`, and counts."""

    def __init__(self) -> None:
        self.calls = 0
        self.scripted = ScriptedUpstream(self.reply)

    def reply(self, request: dict[str, Any]) -> Any:
        self.calls += 1
        n = self.calls
        body = json.loads(request["body"] or b"{}")
        model = body.get("model") or request["path"].rsplit("/", 1)[-1].split(":")[0]
        finished = not model.endswith("-unfinished")
        headers = [*PER_REQUEST.items()]
        if model.startswith("openai-stream"):
            return 200, [*EVENTS, *headers], _openai_stream(n, finished, "-two" in model)
        if model.startswith("claude-stream"):
            return 200, [*EVENTS, *headers], _anthropic_stream(n, finished)
        if model.startswith("gemini-stream"):
            return 200, [*EVENTS, *headers], _gemini_stream(n, finished, "-two" in model)
        if model.startswith("coded-"):
            # `coded-gzip`, `coded-identity`, `coded-` (an empty value): the upstream sends
            # that Content-Encoding whatever the proxy asked for.
            coding = model.removeprefix("coded-")
            answer = json.dumps(
                {
                    "id": "x",
                    "object": "chat.completion",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": f"answer {n}"},
                            "finish_reason": "stop",
                        }
                    ],
                }
            ).encode()
            if coding == "gzip":
                answer = gzip.compress(answer)
            return 200, [*JSON, ("content-encoding", coding), *headers], [(0, answer)]
        if model.startswith("error-200"):
            error = {"error": {"message": "Provider returned error", "code": 502}}
            return 200, [*JSON, *headers], [(0, json.dumps(error).encode())]
        if model.startswith("gemini"):
            masked = "x-goog-fieldmask" in request["headers"]
            answer: dict[str, Any] = {
                "candidates": [
                    {"content": {"parts": [{"text": f"answer {n}"}]}, "finishReason": "STOP"}
                ]
            }
            if not masked:
                answer["usageMetadata"] = {"promptTokenCount": 1, "candidatesTokenCount": 1}
            return 200, [*JSON, *headers], [(0, json.dumps(answer).encode())]
        reply = {
            "id": "x",
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": f"answer {n}"},
                    "finish_reason": "stop",
                }
            ],
        }
        return 200, [*JSON, *headers], [(0, json.dumps(reply).encode())]


@contextlib.contextmanager
def cached(**extra: str) -> Iterator[tuple[RunningServer, Upstream]]:
    upstream = Upstream()
    with metered(upstream.scripted, CACHE_URL="memory", **extra) as proxy:
        yield proxy, upstream


def _ask(
    proxy: RunningServer, kind: str, model: str, token: str = FAKE_TOKEN, **headers: str
) -> httpx.Response:
    question = [{"role": "user", "content": f"q{next(_counter)}"}]
    return _send(proxy, kind, model, question, token, **headers)


def _send(
    proxy: RunningServer,
    kind: str,
    model: str,
    question: Any,
    token: str = FAKE_TOKEN,
    **headers: str,
) -> httpx.Response:
    if kind == "openai":
        body: dict[str, Any] = {
            "model": model,
            "messages": question,
            "temperature": 0,
            "stream": "stream" in model,
        }
        return httpx.post(
            f"{proxy.url}/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {token}", **headers},
            timeout=10,
        )
    if kind == "anthropic":
        body = {
            "model": model,
            "messages": question,
            "max_tokens": 10,
            "temperature": 0,
            "stream": True,
        }
        return httpx.post(
            f"{proxy.url}/anthropic/v1/messages",
            json=body,
            headers={"x-api-key": token, "anthropic-version": "2023-06-01", **headers},
            timeout=10,
        )
    stream = "stream" in model
    path = f"/gemini/v1beta/models/{model}:" + (
        "streamGenerateContent?alt=sse" if stream else "generateContent"
    )
    body = {
        "contents": [{"parts": [{"text": question[0]["content"]}]}],
        "generationConfig": {"temperature": 0},
    }
    return httpx.post(
        f"{proxy.url}{path}", json=body, headers={"x-goog-api-key": token, **headers}, timeout=10
    )


def _twice(proxy: RunningServer, kind: str, model: str) -> tuple[httpx.Response, httpx.Response]:
    question = [{"role": "user", "content": f"q{next(_counter)}"}]
    return _send(proxy, kind, model, question), _send(proxy, kind, model, question)


@pytest.mark.parametrize(
    ("kind", "model"),
    [
        ("openai", "openai-stream"),
        ("openai", "openai-stream-two"),  # main: one of two choices finished was kept
        ("anthropic", "claude-stream"),
        ("gemini", "gemini-stream"),
        ("gemini", "gemini-stream-two"),  # main: one of two candidates finished was kept
    ],
)
def test_an_unfinished_stream_is_not_stored_but_a_finished_one_is(kind: str, model: str) -> None:
    with cached() as (proxy, upstream):
        first, second = _twice(proxy, kind, model + "-unfinished")
        assert first.status_code == second.status_code == 200
        assert second.headers["x-proxy-cache"] == "miss"  # a hit on main: replayed for the TTL
        assert "answer 2" in second.text
        assert upstream.calls == 2
        first, second = _twice(proxy, kind, model)
        assert second.headers["x-proxy-cache"] == "hit"
        assert second.content == first.content
        assert upstream.calls == 3


def test_a_200_whose_body_is_an_error_is_not_stored() -> None:
    with cached() as (proxy, upstream):
        first, second = _twice(proxy, "openai", "error-200")
        assert first.status_code == 200 and "error" in first.json()
        assert second.headers["x-proxy-cache"] == "miss"
        assert upstream.calls == 2


def test_a_responses_reply_with_a_null_error_is_an_answer() -> None:
    """Every Responses API object carries `"error": null`: read as an error, no
    non-streamed Responses reply was ever kept. A non-null `error` still keeps a reply out."""
    from core.cache.complete import finished

    reply = {"object": "response", "status": "completed", "error": None, "output": []}
    assert finished("openai", b"application/json", json.dumps(reply).encode(), False)
    failed = {**reply, "status": "failed", "error": {"code": "server_error"}}
    assert not finished("openai", b"application/json", json.dumps(failed).encode(), False)
    assert not finished("openai", b"application/json", b'{"error": {"message": "x"}}', False)


def test_a_hit_replays_no_per_request_header() -> None:
    with cached() as (proxy, upstream):
        for kind, model in (
            ("openai", "gpt"),
            ("openai", "openai-stream"),
            ("anthropic", "claude-stream"),
        ):
            first, second = _twice(proxy, kind, model)
            assert second.headers["x-proxy-cache"] == "hit"
            for name in PER_REQUEST:
                assert name not in second.headers, name
            assert second.headers["content-type"] == first.headers["content-type"]
            assert second.headers["x-proxy-request-id"] != first.headers["x-proxy-request-id"]
        assert upstream.calls == 3


def test_a_header_that_shapes_the_reply_is_part_of_the_key() -> None:
    with cached() as (proxy, upstream):
        question = [{"role": "user", "content": f"q{next(_counter)}"}]
        plain = _send(proxy, "gemini", "gemini-pro", question)
        masked = _send(
            proxy, "gemini", "gemini-pro", question, **{"X-Goog-FieldMask": "candidates"}
        )
        assert masked.headers["x-proxy-cache"] == "miss"  # main: a hit with the unmasked reply
        assert "usageMetadata" in plain.json() and "usageMetadata" not in masked.json()
        again = _send(proxy, "gemini", "gemini-pro", question, **{"X-Goog-FieldMask": "candidates"})
        assert again.headers["x-proxy-cache"] == "hit" and again.content == masked.content
        beta = _send(proxy, "anthropic", "claude-stream", question, **{"anthropic-beta": "x-2025"})
        plain_claude = _send(proxy, "anthropic", "claude-stream", question)
        assert (
            plain_claude.headers["x-proxy-cache"] == "miss" and beta.content != plain_claude.content
        )
        assert upstream.calls == 4


def test_shared_scope_no_cache_does_not_replace_what_everyone_gets() -> None:
    with cached(CACHE_SCOPE="shared") as (proxy, upstream):
        question = [{"role": "user", "content": f"q{next(_counter)}"}]
        first = _send(proxy, "openai", "gpt", question)
        assert first.headers["x-proxy-cache"] == "miss"
        fresh = _send(
            proxy, "openai", "gpt", question, OTHER_TOKEN, **{"Cache-Control": "no-cache"}
        )
        assert fresh.headers["x-proxy-cache"] == "bypass"
        assert fresh.json()["choices"][0]["message"]["content"] == "answer 2"
        later = _send(proxy, "openai", "gpt", question)
        assert later.headers["x-proxy-cache"] == "hit"
        assert later.content == first.content  # main: the bypassing caller's answer 2
        assert upstream.calls == 2


def test_shared_scope_max_age_zero_does_not_replace_what_everyone_gets() -> None:
    """A browser's `cache: "no-cache"` (Cache-Control: max-age=0) is `no-cache` here too."""
    with cached(CACHE_SCOPE="shared") as (proxy, upstream):
        question = [{"role": "user", "content": f"q{next(_counter)}"}]
        first = _send(proxy, "openai", "gpt", question)
        fresh = _send(
            proxy, "openai", "gpt", question, OTHER_TOKEN, **{"Cache-Control": "max-age=0"}
        )
        assert fresh.headers["x-proxy-cache"] == "bypass"
        later = _send(proxy, "openai", "gpt", question)
        assert later.headers["x-proxy-cache"] == "hit" and later.content == first.content
        assert upstream.calls == 2


class TestAReplyTheUpstreamCompressedAnyway:
    """The proxy asks for `identity`, but an upstream may compress regardless. Kept, the
    gzip bytes would be replayed for the TTL to callers that never said they read gzip."""

    def test_a_gzip_reply_reaches_its_caller_and_is_not_stored(self) -> None:
        with cached() as (proxy, upstream):
            first, second = _twice(proxy, "openai", "coded-gzip")
            assert first.status_code == second.status_code == 200
            assert first.json()["choices"][0]["message"]["content"] == "answer 1"
            assert second.headers["x-proxy-cache"] == "miss"
            assert second.json()["choices"][0]["message"]["content"] == "answer 2"
            assert upstream.calls == 2

    @pytest.mark.parametrize("coding", ["identity", ""])
    def test_a_reply_marked_uncompressed_is_stored(self, coding: str) -> None:
        with cached() as (proxy, upstream):
            first, second = _twice(proxy, "openai", f"coded-{coding}")
            assert second.headers["x-proxy-cache"] == "hit"
            assert second.content == first.content
            assert upstream.calls == 1


@pytest.mark.parametrize(
    ("kind", "model"),
    [
        ("openai", "gpt"),
        ("openai", "openai-stream"),
        ("anthropic", "claude-stream"),
        ("gemini", "gemini-pro"),
    ],
)
def test_a_max_age_of_thousands_of_digits_reads_as_the_longest_age(kind: str, model: str) -> None:
    """RFC 9111 reads a max-age past 2**31 as 2**31: any stored reply will do. Converted
    whole, 5000 digits raised in Python's int() and the request was a 500 `proxy_error`
    (which every SDK retries), in each protocol's shape."""
    with cached() as (proxy, upstream):
        question = [{"role": "user", "content": f"q{next(_counter)}"}]
        first = _send(proxy, kind, model, question)
        assert first.status_code == 200 and first.headers["x-proxy-cache"] == "miss"
        for age in ("9" * 5000, "0" * 5000 + "1"):
            again = _send(proxy, kind, model, question, **{"Cache-Control": f"max-age={age}"})
            assert again.status_code == 200, again.text  # main: 500
            assert again.headers["x-proxy-cache"] == "hit" and again.content == first.content
        assert upstream.calls == 1
