"""Seven ways a hostile caller walked around RATE_LIMIT_TOKENS, each over real sockets.

Each test lets an upstream report a known usage in an awkward shape and checks that the
proxy counted it: the caller's remaining tokens (x-ratelimit-remaining-tokens on the next
request) drop by exactly that usage, or by the whole reservation where the usage could
not be known.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import httpx

from tests.support.metered import (
    AUTH,
    EVENTS,
    JSON,
    chat,
    chats_at_once,
    metered,
    models_or,
    remaining,
)
from tests.support.polling import wait_until
from tests.support.scripted_upstream import (
    ScriptedUpstream,
    gzipped,
    openai_chunks,
)
from tests.support.servers import FAKE_TOKEN, RunningServer

JSON_TYPE = {"Content-Type": "application/json"}
USAGE = {"prompt_tokens": 30, "completion_tokens": 70, "total_tokens": 100}


def test_1_a_gzipped_reply_is_counted() -> None:
    body = json.dumps({"id": "x", "choices": [], "usage": USAGE}).encode()
    upstream = ScriptedUpstream(
        models_or(lambda r: (200, [*JSON, ("content-encoding", "gzip")], [(0, gzipped(body))]))
    )
    with metered(upstream, RATE_LIMIT_TOKENS="1000") as proxy:
        reply = httpx.post(
            f"{proxy.url}/v1/chat/completions",
            json=chat(),
            headers={**AUTH, "Accept-Encoding": "gzip, deflate"},
        )
        assert reply.status_code == 200
        assert reply.json()["usage"] == USAGE  # the caller still gets the reply decoded
        assert remaining(proxy) == 900
    # While metering, the proxy asks for an uncompressed reply.
    assert upstream.seen[0].headers["accept-encoding"] == "identity"


def _late_usage(request: dict[str, Any]) -> Any:
    chunks = openai_chunks(3, USAGE)
    # Content first; the usage chunk comes 0.5 s later.
    return 200, EVENTS, [(0, b"".join(chunks[:3])), (0.5, b"".join(chunks[3:]))]


def _leave_after_content(proxy: RunningServer) -> None:
    with socket.create_connection(("127.0.0.1", proxy.port)) as sock:
        body = json.dumps(chat(stream=True)).encode()
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
            + f"Authorization: Bearer {FAKE_TOKEN}\r\nContent-Type: application/json\r\n".encode()
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        received = b""
        while b"w2 " not in received:
            received += sock.recv(65536)
    # Closed before the usage chunk arrives.


def test_2_a_caller_who_leaves_after_the_content_is_charged_its_reservation() -> None:
    with metered(ScriptedUpstream(models_or(_late_usage)), RATE_LIMIT_TOKENS="5000") as proxy:
        _leave_after_content(proxy)
        deadline = time.monotonic() + 5
        while remaining(proxy) == 5000 and time.monotonic() < deadline:
            time.sleep(0.05)
        # Usage unknown (the upstream request was cancelled): the worst case stays charged.
        left = remaining(proxy)
        assert left <= 5000 - 100  # at least max_tokens


def test_2_drain_keeps_reading_and_counts_the_exact_usage() -> None:
    upstream = ScriptedUpstream(models_or(_late_usage))
    with metered(upstream, RATE_LIMIT_TOKENS="5000", ON_CLIENT_DISCONNECT="drain") as proxy:
        _leave_after_content(proxy)
        # Settlement follows the upstream's end by a moment: poll for it, bounded, rather
        # than sleep a fixed time that loses the race under load.
        assert wait_until(lambda: upstream.finished, bool)
        assert wait_until(lambda: remaining(proxy), lambda left: left == 4900) == 4900


def test_3_a_streamed_legacy_completion_is_counted() -> None:
    def reply(request: dict[str, Any]) -> Any:
        body = json.loads(request["body"])
        usage = USAGE if body.get("stream_options", {}).get("include_usage") else None
        return 200, EVENTS, [(0, b"".join(openai_chunks(2, usage)))]

    upstream = ScriptedUpstream(models_or(reply))
    with metered(upstream, RATE_LIMIT_TOKENS="1000") as proxy:
        body = {"model": "fake-model", "prompt": "hi", "max_tokens": 100, "stream": True}
        reply = httpx.post(f"{proxy.url}/v1/completions", json=body, headers=AUTH)
        assert '"usage"' not in reply.text  # taken back out: the caller did not ask
        assert remaining(proxy) == 900


def test_4_a_trailing_slash_is_the_same_route() -> None:
    body = json.dumps({"choices": [], "usage": USAGE}).encode()
    upstream = ScriptedUpstream(models_or(lambda r: (200, JSON, [(0, body)])))
    with metered(upstream, RATE_LIMIT_TOKENS="1000") as proxy:
        for path in ("/v1/chat/completions/", "/v1//chat/completions", "/v1/Chat/Completions"):
            httpx.post(f"{proxy.url}{path}", json=chat(), headers=AUTH)
        assert remaining(proxy) == 700


def test_5_a_gemini_stream_as_a_json_array_is_counted() -> None:
    def reply(request: dict[str, Any]) -> Any:
        parts = [
            {
                "candidates": [{"content": {"parts": [{"text": "a"}]}}],
                "usageMetadata": {"promptTokenCount": 30, "totalTokenCount": 31},
            },
            {
                "candidates": [{"content": {"parts": [{"text": "b"}]}, "finishReason": "STOP"}],
                "usageMetadata": {
                    "promptTokenCount": 30,
                    "candidatesTokenCount": 70,
                    "totalTokenCount": 100,
                },
            },
        ]
        chunks = [
            b"[" + json.dumps(parts[0]).encode(),
            b",\r\n" + json.dumps(parts[1]).encode(),
            b"]",
        ]
        return 200, JSON, [(0.01, chunk) for chunk in chunks]

    with metered(ScriptedUpstream(models_or(reply)), RATE_LIMIT_TOKENS="1000") as proxy:
        path = "/gemini/v1beta/models/gemini-2.0-flash:streamGenerateContent"
        body = {
            "contents": [{"parts": [{"text": "hi"}]}],
            "generationConfig": {"maxOutputTokens": 100},
        }
        reply = httpx.post(f"{proxy.url}{path}", json=body, headers={"x-goog-api-key": FAKE_TOKEN})
        assert reply.status_code == 200
        assert remaining(proxy) == 900


def test_6_a_reply_of_many_mib_is_counted() -> None:
    filler = "x" * (6 * 1024 * 1024)
    body = json.dumps({"choices": [{"message": {"content": filler}}], "usage": USAGE}).encode()
    pieces = [body[i : i + 65536] for i in range(0, len(body), 65536)]
    upstream = ScriptedUpstream(models_or(lambda r: (200, JSON, [(0, p) for p in pieces])))
    with metered(upstream, RATE_LIMIT_TOKENS="1000") as proxy:
        reply = httpx.post(
            f"{proxy.url}/v1/chat/completions", json=chat(), headers=AUTH, timeout=30
        )
        assert len(reply.content) == len(body)
        assert remaining(proxy) == 900


def test_7_concurrent_requests_cannot_pass_the_limit_together() -> None:
    body = json.dumps({"choices": [], "usage": USAGE}).encode()

    def slow(request: dict[str, Any]) -> Any:
        return 200, JSON, [(0.3, body)]

    upstream = ScriptedUpstream(models_or(slow))
    with metered(upstream, RATE_LIMIT_TOKENS="1000") as proxy:
        statuses = chats_at_once(proxy, 50)
        admitted = statuses.count(200)
        assert statuses.count(429) == 50 - admitted
        spent = 1000 - remaining(proxy)
        # Each request may use up to ~130 tokens (prompt estimate + max_tokens 100) and
        # really uses 100: the window ends at most one request over its limit.
        assert admitted * 100 <= 1000 + 100
        assert spent == admitted * 100
        assert admitted >= 5


def _best_of_reply(request: dict[str, Any]) -> Any:
    # A completion with best_of=10 bills all ten candidates, whatever n returns.
    usage = {"prompt_tokens": 5, "completion_tokens": 1000, "total_tokens": 1005}
    body = json.dumps({"choices": [], "usage": usage}).encode()
    return 200, JSON, [(1.0, body)]


def test_8_best_of_reserves_every_answer_it_writes() -> None:
    """A legacy completion with best_of=10 reserved one answer's worst case: while it ran,
    the caller's other requests still fitted under RATE_LIMIT_TOKENS, and the ten answers it
    wrote were counted only once they were spent, past the limit."""
    import threading

    upstream = ScriptedUpstream(models_or(_best_of_reply))
    with metered(upstream, RATE_LIMIT_TOKENS="1000") as proxy:
        body = {"model": "fake-model", "prompt": "hi", "max_tokens": 100, "best_of": 10}
        first = threading.Thread(
            target=httpx.post,
            args=(f"{proxy.url}/v1/completions",),
            kwargs={"json": body, "headers": AUTH, "timeout": 10},
        )
        first.start()
        assert wait_until(lambda: len(upstream.seen), lambda seen: seen == 1) == 1
        second = httpx.post(f"{proxy.url}/v1/chat/completions", json=chat(), headers=AUTH)
        first.join()
        assert second.status_code == 429, second.text
    assert len(upstream.seen) == 1


def _field_masked(request: dict[str, Any]) -> Any:
    # As Google's front end does: a field mask (?fields=, ?$fields=, X-Goog-FieldMask)
    # trims the reply, usage included, to the fields it names.
    usage: dict[str, Any] = {"promptTokenCount": 30, "candidatesTokenCount": 70}
    masked = "fields=" in request["query"] or "x-goog-fieldmask" in request["headers"]
    if masked:
        usage = {"promptTokenCount": 30}
    body = json.dumps({"candidates": [], "usageMetadata": usage}).encode()
    return 200, JSON, [(0, body)]


def test_9_a_field_mask_cannot_trim_the_usage_the_meter_reads() -> None:
    """Google's APIs take a field mask (`?fields=`, `?$fields=`, `X-Goog-FieldMask`) that
    trims the reply: `candidates,usageMetadata.promptTokenCount` kept the answer and cut
    its output count, and the proxy charged the prompt alone."""
    upstream = ScriptedUpstream(models_or(_field_masked))
    path = "/gemini/v1beta/models/fake-model:generateContent"
    body = {"contents": [{"parts": [{"text": "hi"}]}], "generationConfig": {"maxOutputTokens": 100}}
    headers = {"x-goog-api-key": FAKE_TOKEN}
    mask = "candidates,usageMetadata.promptTokenCount"
    with metered(upstream, RATE_LIMIT_TOKENS="100000") as proxy:
        for query, extra in (
            (f"?fields={mask}", {}),
            (f"?%24fields={mask}", {}),
            ("", {"X-Goog-FieldMask": mask}),
        ):
            reply = httpx.post(f"{proxy.url}{path}{query}", json=body, headers={**headers, **extra})
            assert reply.status_code == 400, reply.text
            assert reply.json()["error"]["status"] == "INVALID_ARGUMENT"
        assert remaining(proxy) == 100000
    assert [s for s in upstream.seen if not s.path.endswith("/models")] == []


# xAI's reasoning models (and some OpenAI-compatible gateways) report reasoning beside
# `completion_tokens`, not inside it: `total_tokens` is prompt + completion + reasoning,
# and all three are billed.
REASONING_BESIDE = {
    "prompt_tokens": 30,
    "completion_tokens": 10,
    "total_tokens": 100,
    "completion_tokens_details": {"reasoning_tokens": 60},
}


def test_10_reasoning_reported_beside_the_completion_tokens_is_counted() -> None:
    def reply(request: dict[str, Any]) -> Any:
        if json.loads(request["body"]).get("stream"):
            return 200, EVENTS, [(0, b"".join(openai_chunks(3, REASONING_BESIDE)))]
        body = json.dumps({"id": "x", "choices": [], "usage": REASONING_BESIDE}).encode()
        return 200, JSON, [(0, body)]

    with metered(ScriptedUpstream(models_or(reply)), RATE_LIMIT_TOKENS="1000") as proxy:
        reply_ = httpx.post(f"{proxy.url}/v1/chat/completions", json=chat(), headers=AUTH)
        assert reply_.status_code == 200
        assert remaining(proxy) == 900  # 30 in, 70 out: not 30 and 10
        streamed = httpx.post(
            f"{proxy.url}/v1/chat/completions", json=chat(stream=True), headers=AUTH
        )
        assert streamed.status_code == 200
        assert remaining(proxy) == 800


# Anthropic's server-side compaction (beta `compact-2026-01-12`, a `compact_20260112`
# context edit the caller asks for) runs a second sampling step in the same request. Its
# tokens are billed, but only `usage.iterations` holds them: the top-level figures count
# the non-compaction iterations alone.
COMPACTED = {
    "input_tokens": 20,
    "output_tokens": 10,
    "iterations": [
        {"type": "compaction", "input_tokens": 50, "output_tokens": 20},
        {"type": "message", "input_tokens": 20, "output_tokens": 10},
    ],
}


def _compacted(request: dict[str, Any]) -> Any:
    if json.loads(request["body"]).get("stream"):
        start = {
            "type": "message_start",
            "message": {"id": "m", "usage": {"input_tokens": 20, "output_tokens": 1}},
        }
        events = [
            ("message_start", start),
            ("message_delta", {"type": "message_delta", "usage": COMPACTED}),
            ("message_stop", {"type": "message_stop"}),
        ]
        body = b"".join(
            f"event: {name}\ndata: {json.dumps(data)}\n\n".encode() for name, data in events
        )
        return 200, EVENTS, [(0, body)]
    body = json.dumps({"id": "m", "content": [], "usage": COMPACTED}).encode()
    return 200, JSON, [(0, body)]


def test_11_anthropic_compaction_iterations_are_counted() -> None:
    body = {
        "model": "fake-model",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "hi"}],
        "context_management": {"edits": [{"type": "compact_20260112"}]},
    }
    headers = {"x-api-key": FAKE_TOKEN, "anthropic-beta": "compact-2026-01-12"}
    upstream = ScriptedUpstream(models_or(_compacted))
    with metered(upstream, RATE_LIMIT_TOKENS="1000") as proxy:
        url = f"{proxy.url}/anthropic/v1/messages"
        assert httpx.post(url, json=body, headers=headers).status_code == 200
        assert remaining(proxy) == 900  # both iterations: 70 in, 30 out
        assert httpx.post(url, json={**body, "stream": True}, headers=headers).status_code == 200
        assert remaining(proxy) == 800


def test_8_a_body_the_proxy_cannot_read_is_refused_while_usage_is_capped() -> None:
    """A compressed request body (Google's clients gzip theirs) or one in another format was
    read as nothing: its worst case counted the compressed bytes, an OpenAI stream went up
    without the usage option (its reply carried no usage to charge), and a tool billed per
    call went past a dollar budget. While usage is capped it is refused, unsent."""
    stream = json.dumps(chat(stream=True)).encode()
    gemini = json.dumps(
        {"contents": [{"parts": [{"text": "hi"}]}], "tools": [{"googleSearch": {}}]}
    ).encode()
    gzip_json = {"Content-Encoding": "gzip", **JSON_TYPE}
    upstream = ScriptedUpstream(models_or(lambda r: (200, JSON, [(0, b"{}")])))
    for capped, calls in [
        (
            {"RATE_LIMIT_TOKENS": "100000"},
            [
                ("/v1/chat/completions", gzip_json, gzipped(stream)),
                ("/v1/chat/completions", {"Content-Type": "application/x-protobuf"}, b"\x0a\x02hi"),
            ],
        ),
        (
            {"BUDGET_TOTAL_USD": "10"},
            [
                (
                    "/gemini/v1beta/models/gemini-2.5-flash:generateContent",
                    gzip_json,
                    gzipped(gemini),
                )
            ],
        ),
    ]:
        with metered(upstream, **capped) as proxy:
            for path, headers, body in calls:
                reply = httpx.post(f"{proxy.url}{path}", content=body, headers={**AUTH, **headers})
                assert reply.status_code == 403, (path, reply.text)
                assert "uncompressed JSON" in reply.text, reply.text
    assert [seen for seen in upstream.seen if not seen.path.endswith("/models")] == []
