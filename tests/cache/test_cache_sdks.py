"""The response cache seen through the real openai, anthropic and google-genai SDKs: a
repeated deterministic request is a hit with the same bytes and one upstream call; callers
never share entries under CACHE_SCOPE=caller; errors, broken streams, `no-store` replies
and sampling requests are never kept; `no-cache` refreshes; a hit costs nothing."""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest
from google import genai
from google.genai import types as genai_types

from tests.cache.conftest import CacheStack
from tests.support.servers import FAKE_TOKEN, RunningServer, reset_upstream, upstream_requests

_counter = itertools.count()


def fresh_messages() -> Any:
    """A prompt no other test sends: every test starts with an empty cache entry."""
    return [{"role": "user", "content": f"question {next(_counter)}"}]


def upstream_calls(stack: CacheStack) -> int:
    return len(upstream_requests(stack.upstream))


def openai_client(stack: CacheStack, key: str, **headers: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{stack.proxy.url}/openai/v1",
        api_key=key,
        max_retries=0,
        timeout=20,
        default_headers=headers or None,
    )


def chat_raw(client: openai.OpenAI, messages: Any, **options: Any) -> tuple[str, bytes, Any]:
    """(x-proxy-cache, body bytes, parsed reply) of one non-streamed chat call."""
    options.setdefault("temperature", 0)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-test", messages=messages, **options
    )
    return raw.headers["x-proxy-cache"], raw.http_response.content, raw.parse()


def chat_stream_raw(client: openai.OpenAI, messages: Any, **options: Any) -> tuple[str, bytes]:
    with client.chat.completions.with_streaming_response.create(
        model="gpt-test", messages=messages, stream=True, temperature=0, **options
    ) as reply:
        return reply.headers["x-proxy-cache"], b"".join(reply.iter_bytes())


# ---- hits: the same bytes, one upstream call ----------------------------------------------


def test_openai_chat_second_call_is_a_hit_with_the_same_bytes(stack: CacheStack) -> None:
    reset_upstream(stack.upstream)
    client = openai_client(stack, stack.token)
    messages = fresh_messages()
    first = chat_raw(client, messages)
    second = chat_raw(client, messages)
    assert (first[0], second[0]) == ("miss", "hit")
    assert first[1] == second[1]
    assert second[2].choices[0].message.content == first[2].choices[0].message.content
    assert upstream_calls(stack) == 1


def test_openai_stream_second_call_is_a_hit_with_the_same_bytes(stack: CacheStack) -> None:
    reset_upstream(stack.upstream)
    client = openai_client(stack, stack.token)
    messages = fresh_messages()
    first = chat_stream_raw(client, messages)
    second = chat_stream_raw(client, messages)
    assert (first[0], second[0]) == ("miss", "hit")
    assert first[1] == second[1] and first[1].endswith(b"data: [DONE]\n\n")
    # The SDK parses a replayed stream as it parses a live one.
    pieces = [
        chunk.choices[0].delta.content
        for chunk in client.chat.completions.create(
            model="gpt-test", messages=messages, stream=True, temperature=0
        )
        if chunk.choices and chunk.choices[0].delta.content
    ]
    assert len(pieces) == 8
    assert upstream_calls(stack) == 1


def test_stream_and_whole_reply_are_different_entries(stack: CacheStack) -> None:
    reset_upstream(stack.upstream)
    client = openai_client(stack, stack.token)
    messages = fresh_messages()
    assert chat_raw(client, messages)[0] == "miss"
    assert chat_stream_raw(client, messages)[0] == "miss"
    assert upstream_calls(stack) == 2


def test_key_order_and_whitespace_do_not_matter(stack: CacheStack) -> None:
    reset_upstream(stack.upstream)
    url = f"{stack.proxy.url}/openai/v1/chat/completions"
    auth = {"authorization": f"Bearer {stack.token}", "content-type": "application/json"}
    messages = fresh_messages()
    one = json.dumps({"model": "gpt-test", "temperature": 0, "messages": messages})
    other = json.dumps({"messages": messages, "temperature": 0, "model": "gpt-test"}, indent=3)
    first = httpx.post(url, content=one, headers=auth)
    second = httpx.post(url, content=other, headers=auth)
    assert first.headers["x-proxy-cache"] == "miss"
    assert second.headers["x-proxy-cache"] == "hit"
    assert first.content == second.content
    assert upstream_calls(stack) == 1


def test_anthropic_message_and_stream_hits(stack: CacheStack) -> None:
    reset_upstream(stack.upstream)
    client = anthropic.Anthropic(
        base_url=f"{stack.proxy.url}/anthropic", api_key=stack.token, max_retries=0, timeout=20
    )
    messages = fresh_messages()
    # This SDK version has no `temperature` argument: it goes in as an extra body field.
    options: Any = {
        "model": "claude-test",
        "max_tokens": 64,
        "messages": messages,
        "extra_body": {"temperature": 0},
    }
    bodies = []
    for _ in range(2):
        raw = client.messages.with_raw_response.create(**options)
        bodies.append((raw.headers["x-proxy-cache"], raw.http_response.content))
        assert raw.parse().content[0].text  # type: ignore[union-attr]
    assert [b[0] for b in bodies] == ["miss", "hit"] and bodies[0][1] == bodies[1][1]

    streamed = []
    for _ in range(2):
        with client.messages.with_streaming_response.create(**options, stream=True) as reply:
            streamed.append((reply.headers["x-proxy-cache"], b"".join(reply.iter_bytes())))
    assert [s[0] for s in streamed] == ["miss", "hit"] and streamed[0][1] == streamed[1][1]
    with client.messages.stream(**options) as stream:
        assert stream.get_final_message().stop_reason == "end_turn"
    assert upstream_calls(stack) == 2


def test_gemini_generate_and_stream_hits(stack: CacheStack) -> None:
    reset_upstream(stack.upstream)
    client = genai.Client(
        api_key=stack.token,
        http_options=genai_types.HttpOptions(base_url=f"{stack.proxy.url}/gemini", timeout=20_000),
    )
    config = genai_types.GenerateContentConfig(temperature=0)
    prompt = fresh_messages()[0]["content"]
    replies = [
        client.models.generate_content(model="gemini-2.0-flash", contents=prompt, config=config)
        for _ in range(2)
    ]
    states = [r.sdk_http_response.headers["x-proxy-cache"] for r in replies]  # type: ignore[union-attr,index]
    assert states == ["miss", "hit"]
    assert replies[0].text == replies[1].text
    streams = [
        list(
            client.models.generate_content_stream(
                model="gemini-2.0-flash", contents=prompt, config=config
            )
        )
        for _ in range(2)
    ]
    assert [c.text for c in streams[0]] == [c.text for c in streams[1]]
    assert len(streams[1]) == 8
    assert upstream_calls(stack) == 2


def test_embeddings_do_not_sample_so_are_cached_without_a_temperature(stack: CacheStack) -> None:
    reset_upstream(stack.upstream)
    client = openai_client(stack, stack.token)
    text = fresh_messages()[0]["content"]
    states = [
        client.embeddings.with_raw_response.create(model="emb", input=text).headers["x-proxy-cache"]
        for _ in range(2)
    ]
    assert states == ["miss", "hit"]
    assert upstream_calls(stack) == 1


# ---- never one caller's answer to another --------------------------------------------------


def test_two_stored_tokens_never_share_an_entry(stack: CacheStack) -> None:
    reset_upstream(stack.upstream)
    messages = fresh_messages()
    assert chat_raw(openai_client(stack, stack.token), messages)[0] == "miss"
    assert chat_raw(openai_client(stack, stack.other_token), messages)[0] == "miss"
    assert chat_raw(openai_client(stack, stack.other_token), messages)[0] == "hit"
    assert upstream_calls(stack) == 2


def test_shared_token_callers_from_two_addresses_never_share_an_entry(stack: CacheStack) -> None:
    reset_upstream(stack.upstream)
    messages = fresh_messages()
    one = openai_client(stack, FAKE_TOKEN, **{"x-forwarded-for": "198.51.100.1"})
    two = openai_client(stack, FAKE_TOKEN, **{"x-forwarded-for": "198.51.100.2"})
    assert chat_raw(one, messages)[0] == "miss"
    assert chat_raw(two, messages)[0] == "miss"
    assert chat_raw(two, messages)[0] == "hit"
    assert upstream_calls(stack) == 2


def test_scope_shared_gives_the_same_answer_to_any_allowed_caller(
    shared_stack: CacheStack,
) -> None:
    reset_upstream(shared_stack.upstream)
    messages = fresh_messages()
    first = chat_raw(openai_client(shared_stack, shared_stack.token), messages)
    second = chat_raw(openai_client(shared_stack, shared_stack.other_token), messages)
    third = chat_raw(openai_client(shared_stack, FAKE_TOKEN), messages)
    assert (first[0], second[0], third[0]) == ("miss", "hit", "hit")
    assert first[1] == second[1] == third[1]
    assert upstream_calls(shared_stack) == 1


# ---- what is never kept --------------------------------------------------------------------


def test_upstream_errors_are_not_cached(stack: CacheStack) -> None:
    reset_upstream(stack.upstream)
    client = openai_client(stack, stack.token, **{"x-mock-status": "500"})
    messages = fresh_messages()
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            chat_raw(client, messages)
    assert chat_raw(openai_client(stack, stack.token), messages)[0] == "miss"
    assert upstream_calls(stack) == 3


def test_a_broken_stream_is_not_cached(stack: CacheStack) -> None:
    reset_upstream(stack.upstream)
    messages = fresh_messages()
    broken = openai_client(stack, stack.token, **{"x-break-after": "2"})
    with pytest.raises((openai.APIError, httpx.HTTPError)):
        list(
            broken.chat.completions.create(
                model="gpt-test", messages=messages, stream=True, temperature=0
            )
        )
    client = openai_client(stack, stack.token)
    assert chat_stream_raw(client, messages)[0] == "miss"
    assert chat_stream_raw(client, messages)[0] == "hit"
    assert upstream_calls(stack) == 2


def test_a_reply_marked_no_store_is_not_cached(stack: CacheStack) -> None:
    reset_upstream(stack.upstream)
    client = openai_client(stack, stack.token, **{"x-reply-cache-control": "private, no-store"})
    messages = fresh_messages()
    assert [chat_raw(client, messages)[0] for _ in range(2)] == ["miss", "miss"]
    assert upstream_calls(stack) == 2


def test_no_cache_bypasses_the_lookup_and_refreshes_the_entry(stack: CacheStack) -> None:
    reset_upstream(stack.upstream)
    messages = fresh_messages()
    three = openai_client(stack, stack.token, **{"x-mock-chunks": "3"})
    five = openai_client(stack, stack.token, **{"x-mock-chunks": "5"})
    five_fresh = openai_client(
        stack, stack.token, **{"x-mock-chunks": "5", "cache-control": "no-cache"}
    )
    first = chat_raw(three, messages)
    refreshed = chat_raw(five_fresh, messages)
    after = chat_raw(five, messages)
    assert (first[0], refreshed[0], after[0]) == ("miss", "bypass", "hit")
    assert after[1] == refreshed[1] != first[1]
    # A header the upstream shapes its reply by (here the mock's x-mock-chunks) is part of
    # the key: the first entry is still there, untouched.
    assert chat_raw(three, messages)[:2] == ("hit", first[1])
    assert upstream_calls(stack) == 2


@pytest.mark.parametrize(
    "asks_fresh",
    [
        {"cache-control": "max-age=0"},  # what a browser's fetch(url, {cache: "no-cache"}) sends
        {"pragma": "no-cache"},  # HTTP/1.0, with no Cache-Control
        {"cache-control": "max-age=soon"},  # no whole number: RFC 9111 reads it as stale
    ],
)
def test_every_way_of_asking_a_fresh_reply_refreshes_the_entry(
    stack: CacheStack, asks_fresh: dict[str, str]
) -> None:
    reset_upstream(stack.upstream)
    messages = fresh_messages()
    first = chat_raw(openai_client(stack, stack.token, **{"x-mock-chunks": "3"}), messages)
    fresh = openai_client(stack, stack.token, **{"x-mock-chunks": "3", **asks_fresh})
    refreshed = chat_raw(fresh, messages)
    assert (first[0], refreshed[0]) == ("miss", "bypass")
    assert upstream_calls(stack) == 2


def test_a_max_age_serves_only_entries_that_young(stack: CacheStack) -> None:
    import time

    reset_upstream(stack.upstream)
    messages = fresh_messages()
    plain = openai_client(stack, stack.token)
    assert chat_raw(plain, messages)[0] == "miss"
    within = openai_client(stack, stack.token, **{"cache-control": "max-age=3600"})
    assert chat_raw(within, messages)[0] == "hit"
    time.sleep(1.2)
    # Older than the caller accepts: a fresh answer, which becomes the entry.
    young = openai_client(stack, stack.token, **{"cache-control": "max-age=1"})
    assert chat_raw(young, messages)[0] == "bypass"
    assert chat_raw(young, messages)[0] == "hit"
    assert upstream_calls(stack) == 2


def test_no_store_on_a_request_skips_the_cache_both_ways(stack: CacheStack) -> None:
    reset_upstream(stack.upstream)
    messages = fresh_messages()
    first = chat_raw(openai_client(stack, stack.token), messages)
    skipping = openai_client(stack, stack.token, **{"cache-control": "no-store"})
    assert chat_raw(skipping, messages)[0] == "bypass"  # not served the entry
    fresh = fresh_messages()
    assert chat_raw(skipping, fresh)[0] == "bypass"
    assert chat_raw(openai_client(stack, stack.token), fresh)[0] == "miss"  # nor stored
    assert first[0] == "miss" and upstream_calls(stack) == 4


def test_only_if_cached_is_a_504_on_a_miss_and_a_hit_when_stored(stack: CacheStack) -> None:
    """`Cache-Control: only-if-cached` asks for a stored reply and nothing else (RFC 9111
    5.2.1.7): on a miss the request went upstream and spent. Now a 504 in the caller's
    shape that no SDK retries, nothing asked of the provider; a stored reply still serves,
    whole or streamed. Failed before (the miss was a 200 and an upstream call)."""

    def spent() -> float:
        reply = httpx.get(
            f"{stack.proxy.url}/proxy/usage", headers={"authorization": f"Bearer {stack.token}"}
        )
        return float(reply.json()["spent_usd"])

    reset_upstream(stack.upstream)
    messages = fresh_messages()
    only = openai_client(stack, stack.token, **{"cache-control": "only-if-cached"})
    before = spent()
    with pytest.raises(openai.APIStatusError) as refused:
        chat_raw(only, messages)
    assert refused.value.status_code == 504
    assert refused.value.response.headers["x-should-retry"] == "false"
    assert refused.value.body["code"] == "not_cached"  # type: ignore[index]
    with pytest.raises(openai.APIStatusError):
        chat_stream_raw(only, messages)
    # A sampling request is never stored: only-if-cached cannot be answered either.
    with pytest.raises(openai.APIStatusError):
        chat_raw(only, fresh_messages(), temperature=0.7)
    assert upstream_calls(stack) == 0 and spent() == before
    plain = openai_client(stack, stack.token)
    assert chat_raw(plain, messages)[0] == "miss"
    assert chat_stream_raw(plain, messages)[0] == "miss"
    assert chat_raw(only, messages)[0] == "hit"
    assert chat_stream_raw(only, messages)[0] == "hit"
    assert upstream_calls(stack) == 2

    anthropic_only = anthropic.Anthropic(
        base_url=f"{stack.proxy.url}/anthropic",
        api_key=stack.token,
        max_retries=0,
        timeout=20,
        default_headers={"cache-control": "only-if-cached"},
    )
    with pytest.raises(anthropic.APIStatusError) as refused_there:
        anthropic_only.messages.create(
            model="claude-test",
            max_tokens=64,
            messages=fresh_messages(),
            extra_body={"temperature": 0},
        )
    assert refused_there.value.status_code == 504
    assert refused_there.value.body["error"]["type"]  # type: ignore[index]
    assert upstream_calls(stack) == 2


def test_sampling_requests_are_not_cached_by_default(stack: CacheStack) -> None:
    reset_upstream(stack.upstream)
    client = openai_client(stack, stack.token)
    messages = fresh_messages()
    client_calls = [
        chat_raw(client, messages, temperature=openai.NOT_GIVEN)[0],
        chat_raw(client, messages, temperature=openai.NOT_GIVEN)[0],
        chat_raw(client, messages, temperature=0.7)[0],
        chat_raw(client, messages, temperature=0.7)[0],
    ]
    assert client_calls == ["bypass"] * 4
    assert upstream_calls(stack) == 4


def test_sampling_requests_are_cached_when_allowed(shared_stack: CacheStack) -> None:
    reset_upstream(shared_stack.upstream)
    client = openai_client(shared_stack, shared_stack.token)
    messages = fresh_messages()
    states = [chat_raw(client, messages, temperature=0.7)[0] for _ in range(2)]
    assert states == ["miss", "hit"]


# ---- what a hit costs ----------------------------------------------------------------------


@pytest.fixture
def access_lines() -> Iterator[list[dict[str, Any]]]:
    lines: list[dict[str, Any]] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(json.loads(record.getMessage()))

    handler = Collect()
    logger = logging.getLogger("llm_proxy.access")
    logger.addHandler(handler)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)


def test_a_hit_costs_nothing_and_still_counts_as_a_request(
    stack: CacheStack, access_lines: list[dict[str, Any]]
) -> None:
    def spent() -> float:
        reply = httpx.get(
            f"{stack.proxy.url}/proxy/usage", headers={"authorization": f"Bearer {stack.token}"}
        )
        return float(reply.json()["spent_usd"])

    client = openai_client(stack, stack.token)
    messages = fresh_messages()
    before = spent()
    miss = client.chat.completions.with_raw_response.create(
        model="gpt-test", messages=messages, temperature=0
    )
    after_miss = spent()
    hit = client.chat.completions.with_raw_response.create(
        model="gpt-test", messages=messages, temperature=0
    )
    assert hit.headers["x-proxy-cache"] == "hit"
    assert after_miss > before and spent() == after_miss
    remaining = [int(r.headers["x-ratelimit-remaining-requests"]) for r in (miss, hit)]
    assert remaining[1] < remaining[0]
    assert "access-control-expose-headers" not in hit.headers  # not a browser: no CORS
    # The access log names the hit, its zero cost and the tokens it saved.
    [first] = [entry for entry in access_lines if entry.get("cache") == "miss"]
    [line] = [entry for entry in access_lines if entry.get("cache") == "hit"]
    assert line["cost_usd"] == 0 < first["cost_usd"]
    assert line["saved_input_tokens"] == first["input_tokens"] > 0
    assert line["saved_output_tokens"] == first["output_tokens"] > 0
    assert "input_tokens" not in line and "upstream_status" in line
    assert line["upstream_status"] is None


def test_browsers_may_read_the_cache_header(stack: CacheStack) -> None:
    reply = httpx.post(
        f"{stack.proxy.url}/openai/v1/chat/completions",
        json={"model": "gpt-test", "messages": fresh_messages(), "temperature": 0},
        headers={"authorization": f"Bearer {stack.token}", "origin": "http://app.example.test"},
    )
    assert reply.headers["x-proxy-cache"] == "miss"
    assert "x-proxy-cache" in reply.headers["access-control-expose-headers"]


def test_without_cache_url_replies_say_nothing_of_a_cache(proxy: RunningServer) -> None:
    reply = httpx.post(
        f"{proxy.url}/v1/chat/completions",
        json={"model": "m", "messages": fresh_messages(), "temperature": 0},
        headers={"authorization": f"Bearer {FAKE_TOKEN}"},
    )
    assert reply.status_code == 200 and "x-proxy-cache" not in reply.headers


def test_a_reply_marked_private_is_not_shared(shared_stack: CacheStack) -> None:
    """`Cache-Control: private` says the reply is for one user: a shared cache must not
    store it (RFC 9111 5.2.2.7). Under CACHE_SCOPE=shared it went to every caller."""
    reset_upstream(shared_stack.upstream)
    messages = fresh_messages()
    mark = {"x-reply-cache-control": "private"}
    first = openai_client(shared_stack, shared_stack.token, **mark)
    other = openai_client(shared_stack, shared_stack.other_token, **mark)
    assert chat_raw(first, messages)[0] == "miss"
    assert chat_raw(other, messages)[0] == "miss"  # main: a hit, the first caller's reply
    assert upstream_calls(shared_stack) == 2
