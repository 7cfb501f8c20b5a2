"""Gemini stream recovery (GEMINI_STREAM_RECOVERY=true) over real sockets, against the mock
upstream cutting its stream mid-sentence (`x-mock-cut-after`) and continuing a reply begun
in the model's turn (`x-mock-continue`): one stream to the caller, every word once."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from core.devtools.mock_upstream import _text
from core.proxy.recovery import EventSplitter, continuation_body, conversation_language
from tests.support.gemini import STREAM_PATH, ask, gemini_proxy, never_finishing
from tests.support.scripted_upstream import ScriptedUpstream
from tests.support.servers import (
    FAKE_TOKEN,
    RunningServer,
    reset_upstream,
    serve_in_thread,
)

PATH = STREAM_PATH
CUT = {"x-mock-continue": "1", "x-mock-cut-after": "3", "x-mock-chunks": "8"}


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("{"):
            self.lines.append(json.loads(message))


@pytest.fixture
def access_lines() -> Iterator[list[dict[str, Any]]]:
    handler = Lines()
    logger = logging.getLogger("llm_proxy.access")
    logger.addHandler(handler)
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)


def stream(
    proxy: RunningServer,
    text: str,
    sse: bool,
    headers: dict[str, str],
    config: dict[str, Any] | None = None,
) -> bytes:
    body: dict[str, Any] = {"contents": [{"role": "user", "parts": [{"text": text}]}]}
    if config is not None:
        body["generationConfig"] = config
    with httpx.stream(
        "POST",
        f"{proxy.url}{PATH}" + ("?alt=sse" if sse else ""),
        json=body,
        headers={"x-goog-api-key": FAKE_TOKEN, **headers},
        timeout=20,
    ) as reply:
        assert reply.status_code == 200
        return b"".join(reply.iter_raw())


def events(raw: bytes, sse: bool) -> list[dict[str, Any]]:
    if not sse:
        return list(json.loads(raw))
    return [json.loads(line[5:]) for line in raw.splitlines() if line.startswith(b"data:")]


def words(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks)


def gemini_requests(upstream: RunningServer) -> list[dict[str, Any]]:
    seen = httpx.get(f"{upstream.url}/_mock/requests").json()
    return [r for r in seen if ":streamGenerateContent" in r["path"]]


@pytest.mark.parametrize("sse", [True, False], ids=["sse", "json-array"])
def test_a_cut_stream_is_continued_seamlessly(
    mock_upstream: RunningServer, access_lines: list[dict[str, Any]], sse: bool
) -> None:
    admin = "a" * 32  # keeps a usage ledger: every reply is metered
    with gemini_proxy(
        mock_upstream, GEMINI_STREAM_RECOVERY="true", ADMIN_TOKEN=admin, ACCESS_LOG="true"
    ) as proxy:
        reset_upstream(mock_upstream)
        raw = stream(proxy, "tell me a story", sse, CUT)
    chunks = events(raw, sse)
    # Three replies (3 + 3 + 2 words), one stream, each word once, a clean end.
    assert words(chunks) == _text(8)
    assert len(chunks) == 8
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"
    assert len(gemini_requests(mock_upstream)) == 3

    attempts = [line for line in access_lines if line["event"] == "stream_attempt"]
    assert [(a["attempt"], a["ended"]) for a in attempts] == [
        (1, "cut"),
        (2, "cut"),
        (3, "finished"),
    ]
    assert sum(a["output_tokens"] for a in attempts) == 8
    [request_line] = [line for line in access_lines if line["event"] == "request"]
    assert request_line["status"] == 200 and request_line["route"] == "gemini"
    # Settled: the sum of every attempt's usage.
    assert request_line["output_tokens"] == 8
    assert request_line["input_tokens"] == sum(a["input_tokens"] for a in attempts)
    assert len({a["request_id"] for a in attempts} | {request_line["request_id"]}) == 1


def test_the_continuation_carries_the_text_so_far_and_the_instruction() -> None:
    document = {
        "contents": [{"role": "user", "parts": [{"text": "给我讲个故事"}]}],
        "generationConfig": {"temperature": 0.2},
    }
    body = json.loads(continuation_body(document, "从前有座山"))
    assert body["generationConfig"] == {"temperature": 0.2}
    _, model, ask = body["contents"]
    assert model == {"role": "model", "parts": [{"text": "从前有座山"}]}
    assert ask["role"] == "user" and "不要重复" in ask["parts"][0]["text"]
    assert conversation_language([{"parts": [{"text": "Tell me a story"}]}]) == "en"
    assert conversation_language([{"parts": [{"text": "物語を話してください"}]}]) == "ja"
    assert conversation_language([{"parts": [{"text": "이야기 해줘"}]}]) == "ko"
    # The last user message decides, not the model's words.
    mixed = [
        {"role": "user", "parts": [{"text": "你好"}]},
        {"role": "model", "parts": [{"text": "Hello"}]},
        {"role": "user", "parts": [{"text": "in English please"}]},
    ]
    assert conversation_language(mixed) == "en"


def test_recovery_is_bounded(mock_upstream: RunningServer) -> None:
    with gemini_proxy(
        mock_upstream, GEMINI_STREAM_RECOVERY="true", GEMINI_STREAM_RECOVERY_ATTEMPTS="1"
    ) as proxy:
        reset_upstream(mock_upstream)
        # Two replies of 3 words, then no attempt left: the caller sees a truncated stream.
        with pytest.raises(httpx.RemoteProtocolError):
            stream(proxy, "hi", True, CUT)
    assert len(gemini_requests(mock_upstream)) == 2


def test_off_by_default(mock_upstream: RunningServer) -> None:
    with gemini_proxy(mock_upstream) as proxy:
        reset_upstream(mock_upstream)
        with pytest.raises(httpx.RemoteProtocolError):
            stream(proxy, "hi", True, CUT)
    assert len(gemini_requests(mock_upstream)) == 1


def test_a_finished_stream_is_passed_on_once(mock_upstream: RunningServer) -> None:
    with gemini_proxy(mock_upstream, GEMINI_STREAM_RECOVERY="true") as proxy:
        reset_upstream(mock_upstream)
        raw = stream(proxy, "hi", False, {"x-mock-chunks": "5"})
    assert words(events(raw, False)) == _text(5)
    assert len(gemini_requests(mock_upstream)) == 1


def test_event_splitter_keeps_whole_events_only() -> None:
    sse = EventSplitter(sse=True)
    assert sse.feed(b'data: {"a":1}\r\n\r\ndata: {"b"') == [b'data: {"a":1}\r\n\r\n']
    assert sse.feed(b":2}\n\n") == [b'data: {"b":2}\n\n']
    array = EventSplitter(sse=False)
    assert array.feed(b'[{"t":"a}\\"{"}') == [b'{"t":"a}\\"{"}']
    assert array.feed(b'\r\n,{"x":[1,{"y":2}') == []
    assert array.feed(b"]}\r\n]") == [b'{"x":[1,{"y":2}]}']


def test_a_stream_that_simply_stops_is_continued() -> None:
    """No cut: the upstream ends its reply cleanly, but without a finishReason."""

    def event(text: str, finished: bool) -> bytes:
        candidate: dict[str, Any] = {"content": {"role": "model", "parts": [{"text": text}]}}
        if finished:
            candidate["finishReason"] = "STOP"
        usage = {"promptTokenCount": 2, "candidatesTokenCount": 1, "totalTokenCount": 3}
        return (
            b"data: "
            + json.dumps({"candidates": [candidate], "usageMetadata": usage}).encode()
            + b"\r\n\r\n"
        )

    def reply(request: dict[str, Any]) -> Any:
        first = "Continue exactly" not in request["body"].decode()
        parts = [event("Once upon", False)] if first else [event(" a time", True)]
        return 200, [("content-type", "text/event-stream")], [(0, part) for part in parts]

    upstream = ScriptedUpstream(reply)
    with (
        serve_in_thread(upstream) as server,
        gemini_proxy(server, GEMINI_STREAM_RECOVERY="true") as proxy,
    ):
        raw = stream(proxy, "a story please", True, {})
    assert words(events(raw, True)) == "Once upon a time"
    continued = json.loads(upstream.seen[1].body)
    assert continued["contents"][1] == {"role": "model", "parts": [{"text": "Once upon"}]}
    assert continued["contents"][2]["parts"][0]["text"].startswith("Continue exactly")


def test_google_genai_reads_one_whole_stream(mock_upstream: RunningServer) -> None:
    from google import genai
    from google.genai import types as genai_types

    with gemini_proxy(mock_upstream, GEMINI_STREAM_RECOVERY="true") as proxy:
        options = genai_types.HttpOptions(
            base_url=f"{proxy.url}/gemini", headers=CUT, timeout=20_000
        )
        client = genai.Client(api_key=FAKE_TOKEN, http_options=options)
        chunks = list(client.models.generate_content_stream(model="gemini-test", contents="hi"))
    assert "".join(chunk.text or "" for chunk in chunks) == _text(8)
    assert chunks[-1].candidates and chunks[-1].candidates[0].finish_reason == "STOP"


def test_continuations_stop_once_the_reservation_is_used() -> None:
    """Each continuation is another upstream call on the caller's bill: it is asked only
    while what was metered is within the request's reservation, so a request admitted for
    one worst case is charged at most one continuation past it (not one per attempt)."""
    prices = json.dumps({"gemini-*": {"input": 10, "output": 100, "max_output": 1000}})
    upstream = never_finishing(prompt_tokens=400, output_tokens=400)
    with (
        serve_in_thread(upstream) as server,
        gemini_proxy(
            server,
            GEMINI_STREAM_RECOVERY="true",
            GEMINI_STREAM_RECOVERY_ATTEMPTS="5",
            BUDGET_PER_CALLER_USD="1",
            MODEL_PRICES=prices,
        ) as proxy,
    ):
        ask(proxy, FAKE_TOKEN)
        spent = httpx.get(
            f"{proxy.url}/proxy/usage", headers={"x-goog-api-key": FAKE_TOKEN}
        ).json()["output_tokens"]
    # The first reply (800 tokens) is within its reservation (1,000 of output and the
    # prompt); the second passes it, and no third is asked.
    assert len(upstream.seen) == 2
    assert spent == 800


def test_a_token_revoked_mid_stream_gets_no_continuation(tmp_path: Any) -> None:
    from core.access.tokens import create_token, revoke_token
    from core.stores import open_store

    store_url = f"sqlite:///{tmp_path}/tokens.db"
    store = open_store(store_url)
    token, record = create_token(store, "revoked-mid-stream")
    upstream = never_finishing(on_request=lambda: revoke_token(store, record.id))
    with (
        serve_in_thread(upstream) as server,
        gemini_proxy(
            server,
            GEMINI_STREAM_RECOVERY="true",
            GEMINI_STREAM_RECOVERY_ATTEMPTS="3",
            TOKEN_STORE=store_url,
            TOKEN_CACHE_SECONDS="0",
        ) as proxy,
    ):
        ask(proxy, token)
    assert len(upstream.seen) == 1  # revoked during the first: no continuation is asked


def unfinished(usage: dict[str, int] | None = None) -> Any:
    """A Gemini stream that ends without a finishReason (so it is continued), with
    `usage` as its usageMetadata or none."""
    candidate = {"content": {"role": "model", "parts": [{"text": "more "}]}}
    event: dict[str, Any] = {"candidates": [candidate]}
    if usage is not None:
        event["usageMetadata"] = usage
    data = json.dumps(event)
    return 200, [("content-type", "text/event-stream")], [(0, f"data: {data}\n\n".encode())]


def budgeted_recovery(server: RunningServer, attempts: int) -> Any:
    """The proxy with stream recovery on, under a per-caller dollar budget."""
    prices = json.dumps({"gemini-*": {"input": 10, "output": 100, "max_output": 1000}})
    return gemini_proxy(
        server,
        GEMINI_STREAM_RECOVERY="true",
        GEMINI_STREAM_RECOVERY_ATTEMPTS=str(attempts),
        BUDGET_PER_CALLER_USD="1",
        MODEL_PRICES=prices,
    )


def test_a_stream_reporting_no_usage_gets_no_continuation_under_a_budget() -> None:
    """Usage that could not be read is not zero: a stream that ended unfinished without
    reporting its tokens is charged its reservation (fail closed), and a continuation past
    it would be generated uncharged. Under a budget no continuation is asked for it."""

    upstream = ScriptedUpstream(lambda request: unfinished())  # no usageMetadata
    with (
        serve_in_thread(upstream) as server,
        budgeted_recovery(server, attempts=5) as proxy,
    ):
        ask(proxy, FAKE_TOKEN)
    assert len(upstream.seen) == 1


def test_the_kill_switch_mid_stream_stops_continuations(tmp_path: Any) -> None:
    from core.access.status import ServiceStatus
    from core.stores import open_store

    store_url = f"sqlite:///{tmp_path}/tokens.db"
    status = ServiceStatus(open_store(store_url))
    upstream = never_finishing(on_request=lambda: status.set_online(False))
    with (
        serve_in_thread(upstream) as server,
        gemini_proxy(
            server,
            GEMINI_STREAM_RECOVERY="true",
            GEMINI_STREAM_RECOVERY_ATTEMPTS="3",
            TOKEN_STORE=store_url,
            TOKEN_CACHE_SECONDS="0",
        ) as proxy,
    ):
        ask(proxy, FAKE_TOKEN)
    assert len(upstream.seen) == 1  # switched off during the first: no continuation


def test_a_continuation_whose_usage_is_unreadable_is_charged_on_top_of_the_first() -> None:
    """The first reply reported 900 tokens (600 of prompt), within the reservation; its
    continuation re-sent that prompt and reported nothing readable. Charging the one
    reservation for both would bill less than the two calls certainly used: the unread
    attempt is charged its reservation on top of what was metered."""

    def reply(request: dict[str, Any]) -> Any:
        if "Continue exactly" in request["body"].decode():
            return unfinished()
        return unfinished(
            {"promptTokenCount": 600, "candidatesTokenCount": 300, "totalTokenCount": 900}
        )

    upstream = ScriptedUpstream(reply)
    with (
        serve_in_thread(upstream) as server,
        budgeted_recovery(server, attempts=1) as proxy,
    ):
        ask(proxy, FAKE_TOKEN)
        spent = httpx.get(f"{proxy.url}/proxy/usage", headers={"x-goog-api-key": FAKE_TOKEN}).json()
    assert len(upstream.seen) == 2
    # At least the first reply's 900 and the prompt the continuation sent again.
    assert spent["input_tokens"] + spent["output_tokens"] >= 900 + 600


# ---- the caller's output cap holds for the whole recovered request ---------------------


def finish_reason(chunk: dict[str, Any]) -> Any:
    return chunk["candidates"][0].get("finishReason")


@pytest.mark.parametrize("sse", [True, False], ids=["sse", "json-array"])
def test_the_continuations_ask_only_what_remains_of_the_output_cap(
    mock_upstream: RunningServer, access_lines: list[dict[str, Any]], sse: bool
) -> None:
    """Each continuation repeated the caller's maxOutputTokens: a request for 5 tokens,
    under MAX_TOKENS_CAP=5, generated 8 (3 + 3 + 2, over three calls), and up to
    (1 + attempts) x the cap. The continuation now asks for what remains (5 - 3), and the
    upstream (the mock stops at maxOutputTokens, as Gemini does) ends there."""
    admin = "a" * 32  # keeps a usage ledger: every reply is metered
    with gemini_proxy(
        mock_upstream,
        GEMINI_STREAM_RECOVERY="true",
        GEMINI_STREAM_RECOVERY_ATTEMPTS="3",
        MAX_TOKENS_CAP="5",
        ADMIN_TOKEN=admin,
        ACCESS_LOG="true",
    ) as proxy:
        reset_upstream(mock_upstream)
        raw = stream(proxy, "tell me a story", sse, CUT, {"maxOutputTokens": 5})
    chunks = events(raw, sse)
    assert words(chunks) == _text(5)
    assert finish_reason(chunks[-1]) == "MAX_TOKENS"
    assert len(gemini_requests(mock_upstream)) == 2
    attempts = [line for line in access_lines if line["event"] == "stream_attempt"]
    assert [a["output_tokens"] for a in attempts] == [3, 2]
    [request_line] = [line for line in access_lines if line["event"] == "request"]
    assert request_line["output_tokens"] == 5


def cap_spent(sse: bool) -> Any:
    """A Gemini upstream whose stream reports the whole cap (1,000 tokens) generated, then
    ends without its finishReason (cut between the last words and the finishing event)."""
    candidate = {"content": {"role": "model", "parts": [{"text": "more "}]}}
    usage = {"promptTokenCount": 10, "candidatesTokenCount": 1000, "totalTokenCount": 1010}
    event = json.dumps({"candidates": [candidate], "usageMetadata": usage})
    if sse:
        return 200, [("content-type", "text/event-stream")], [(0, f"data: {event}\n\n".encode())]
    return 200, [("content-type", "application/json")], [(0, f"[{event}".encode())]


@pytest.mark.parametrize("sse", [True, False], ids=["sse", "json-array"])
def test_nothing_remains_of_the_cap_the_stream_ends_without_another_call(sse: bool) -> None:
    """The first reply generated every token the caller asked for, then broke: a
    continuation would ask for nothing more (or, before, for the whole cap again). No call
    is made; the stream ends as Gemini ends one that reached its cap, whole and parseable."""
    upstream = ScriptedUpstream(lambda request: cap_spent(sse))
    with (
        serve_in_thread(upstream) as server,
        gemini_proxy(server, GEMINI_STREAM_RECOVERY="true", MAX_TOKENS_CAP="1000") as proxy,
    ):
        raw = stream(proxy, "hi", sse, {}, {"maxOutputTokens": 1000})
    chunks = events(raw, sse)
    assert len(upstream.seen) == 1
    assert words(chunks) == "more "
    assert [finish_reason(chunk) for chunk in chunks] == [None, "MAX_TOKENS"]


def test_a_continuation_counts_what_no_usage_reported() -> None:
    """What the broken reply generated past its last usage report (or without one) counts
    too, at one token a byte at most: 5 tokens reported, then 11 bytes unreported, leave
    100 - 16 of the caller's 100. The caller's other settings go along unchanged."""

    def event(text: str, usage: dict[str, int] | None, finished: bool = False) -> bytes:
        candidate: dict[str, Any] = {"content": {"role": "model", "parts": [{"text": text}]}}
        if finished:
            candidate["finishReason"] = "STOP"
        data: dict[str, Any] = {"candidates": [candidate]}
        if usage is not None:
            data["usageMetadata"] = usage
        return b"data: " + json.dumps(data).encode() + b"\n\n"

    def reply(request: dict[str, Any]) -> Any:
        if "Continue exactly" in request["body"].decode():
            parts = [event(" and on", None, finished=True)]
        else:
            usage = {"promptTokenCount": 2, "candidatesTokenCount": 5, "totalTokenCount": 7}
            parts = [event("Once ", usage), event("upon a time", None)]
        return 200, [("content-type", "text/event-stream")], [(0, part) for part in parts]

    upstream = ScriptedUpstream(reply)
    config = {"maxOutputTokens": 100, "stopSequences": ["THE END"], "temperature": 0.3}
    with (
        serve_in_thread(upstream) as server,
        gemini_proxy(server, GEMINI_STREAM_RECOVERY="true", MAX_TOKENS_CAP="100") as proxy,
    ):
        raw = stream(proxy, "a story please", True, {}, config)
    assert words(events(raw, True)) == "Once upon a time and on"
    assert len(upstream.seen) == 2
    continued = json.loads(upstream.seen[1].body)
    assert continued["generationConfig"] == {**config, "maxOutputTokens": 100 - 5 - 11}


def test_a_caller_who_leaves_mid_continuation_is_charged_for_it() -> None:
    """The outcome counted a continuation only once it was read to its end: a caller who
    left while it streamed was charged the first reply alone (settled at its reservation),
    and the continuation's re-sent prompt and its words went uncharged. It is now counted
    as it is read."""

    def data(usage: dict[str, int]) -> bytes:
        candidate = {"content": {"role": "model", "parts": [{"text": "more "}]}}
        event = {"candidates": [candidate], "usageMetadata": usage}
        return b"data: " + json.dumps(event).encode() + b"\n\n"

    def reply(request: dict[str, Any]) -> Any:
        if "Continue exactly" in request["body"].decode():
            usage = {"promptTokenCount": 500, "candidatesTokenCount": 100, "totalTokenCount": 600}
            parts = [(0, data(usage)), (3, data(usage))]
        else:
            usage = {"promptTokenCount": 400, "candidatesTokenCount": 400, "totalTokenCount": 800}
            parts = [(0, data(usage))]
        return 200, [("content-type", "text/event-stream")], parts

    upstream = ScriptedUpstream(reply)
    body = {
        "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
        "generationConfig": {"maxOutputTokens": 1000},
    }
    with (
        serve_in_thread(upstream) as server,
        budgeted_recovery(server, attempts=2) as proxy,
    ):
        with httpx.stream(
            "POST",
            f"{proxy.url}{PATH}?alt=sse",
            json=body,
            headers={"x-goog-api-key": FAKE_TOKEN},
            timeout=20,
        ) as reply_stream:
            seen = 0
            for line in reply_stream.iter_lines():
                seen += line.startswith("data:")
                if seen == 2:
                    break  # the continuation's first event: leave
        spent: dict[str, int] = {}
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            spent = httpx.get(
                f"{proxy.url}/proxy/usage", headers={"x-goog-api-key": FAKE_TOKEN}
            ).json()
            if spent.get("input_tokens", 0) + spent.get("output_tokens", 0) >= 1400:
                break
            time.sleep(0.05)
    assert len(upstream.seen) == 2
    # Both calls: 400 + 400, then 500 + 100 so far (the reservation was about 1,033).
    assert spent["input_tokens"] == 900 and spent["output_tokens"] == 500


def test_a_continuation_is_held_to_max_messages() -> None:
    """A continuation adds two turns (the text so far, and the ask to go on): a request at
    MAX_MESSAGES got one over the cap the deployment set for every upstream call. It is
    held to the same caps as the caller's request, and is not asked past them."""
    upstream = never_finishing()
    with (
        serve_in_thread(upstream) as server,
        gemini_proxy(
            server, GEMINI_STREAM_RECOVERY="true", MAX_MESSAGES="2", MAX_TOKENS_CAP="1000"
        ) as proxy,
    ):
        ask(proxy, FAKE_TOKEN)
    assert len(upstream.seen) == 1


def test_a_usage_report_without_an_output_count_does_not_zero_what_was_generated() -> None:
    """Gemini's chunks may carry usageMetadata with no candidatesTokenCount (protobuf JSON
    leaves a zero out; an early chunk may count the prompt alone): such a report counted as
    "0 generated so far", dropping the text sent with it and the count reported before it,
    so the continuation asked for the whole cap again. 5 tokens reported, then 11 bytes
    under a prompt-only report, leave at most 100 - 16."""

    def event(text: str, usage: dict[str, int], finished: bool = False) -> bytes:
        candidate: dict[str, Any] = {"content": {"role": "model", "parts": [{"text": text}]}}
        if finished:
            candidate["finishReason"] = "STOP"
        data = {"candidates": [candidate], "usageMetadata": usage}
        return b"data: " + json.dumps(data).encode() + b"\n\n"

    prompt_only = {"promptTokenCount": 2, "totalTokenCount": 2}

    def reply(request: dict[str, Any]) -> Any:
        if "Continue exactly" in request["body"].decode():
            parts = [event(" and on", prompt_only, finished=True)]
        else:
            counted = {"promptTokenCount": 2, "candidatesTokenCount": 5, "totalTokenCount": 7}
            parts = [event("Once ", counted), event("upon a time", prompt_only)]
        return 200, [("content-type", "text/event-stream")], [(0, part) for part in parts]

    upstream = ScriptedUpstream(reply)
    with (
        serve_in_thread(upstream) as server,
        gemini_proxy(server, GEMINI_STREAM_RECOVERY="true", MAX_TOKENS_CAP="100") as proxy,
    ):
        raw = stream(proxy, "a story please", True, {}, {"maxOutputTokens": 100})
    assert words(events(raw, True)) == "Once upon a time and on"
    assert len(upstream.seen) == 2
    continued = json.loads(upstream.seen[1].body)
    assert continued["generationConfig"]["maxOutputTokens"] <= 100 - 5 - 11
