"""What the proxy exports over OTLP/HTTP, decoded as a collector would: one span per
request with the GenAI attributes, for each provider's stream through its real SDK, a
refusal, a cache hit, a target failover; the caller's trace continued and carried upstream,
its baggage not; no key, token or cookie anywhere in what leaves."""

from __future__ import annotations

import itertools
import secrets
import time
from typing import Any

import anthropic
import httpx
import openai
from google import genai
from google.genai import types as genai_types

from tests.support.servers import FAKE_UPSTREAM_KEY, reset_upstream, upstream_requests
from tests.telemetry.conftest import TelemetryStack
from tests.telemetry.otlp_receiver import Span

_prompts = itertools.count()


def prompt() -> str:
    return f"telemetry question {next(_prompts)} {secrets.token_hex(4)}"


def span_for(stack: TelemetryStack, request_id: str) -> Span:
    found = stack.received.wait_for_spans(
        lambda span: span.attributes.get("llm_proxy.request_id") == request_id
    )
    assert found, f"no span exported for request {request_id}"
    return found[0]


def assert_no_secrets(stack: TelemetryStack) -> None:
    """Nothing the caller or the deployer holds secret left in any attribute or event."""
    everything: list[Any] = []
    with stack.received.lock:
        for span in stack.received.spans:
            everything += [span.name, *span.attributes.values(), *span.resource.values()]
            for name, _, attributes in span.events:
                everything += [name, *attributes.values()]
        for point in stack.received.points:
            everything += list(point.attributes.values())
    text = repr(everything)
    for secret in (*stack.secrets, FAKE_UPSTREAM_KEY, "Bearer", "cookie-secret"):
        assert secret not in text


def test_openai_stream_span_continues_the_callers_trace(stack: TelemetryStack) -> None:
    reset_upstream(stack.upstream)
    trace_id = secrets.token_hex(16)
    caller_span = secrets.token_hex(8)
    client = openai.OpenAI(
        base_url=f"{stack.proxy.url}/openai/v1",
        api_key=stack.token,
        max_retries=0,
        default_headers={
            "traceparent": f"00-{trace_id}-{caller_span}-01",
            "baggage": "user.id=alice,tenant=acme",
            "cookie": "session=cookie-secret",
        },
    )
    with client.chat.completions.with_streaming_response.create(
        model="gpt-test",
        messages=[{"role": "user", "content": prompt()}],
        stream=True,
        max_tokens=64,
    ) as reply:
        request_id = reply.headers["x-proxy-request-id"]
        body = b"".join(reply.iter_bytes())
    assert b"[DONE]" in body
    span = span_for(stack, request_id)
    attributes = span.attributes
    assert span.trace_id == trace_id and span.parent_span_id == caller_span
    assert span.name == "chat gpt-test"
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.provider.name"] == "openai"
    assert attributes["gen_ai.request.model"] == "gpt-test"
    assert attributes["gen_ai.request.max_tokens"] == 64
    # Read from the relayed stream: the model that answered, and why it stopped.
    assert attributes["gen_ai.response.model"] == "gpt-test"
    assert attributes["gen_ai.response.finish_reasons"] == ["stop"]
    assert attributes["gen_ai.usage.input_tokens"] > 0
    assert attributes["gen_ai.usage.output_tokens"] > 0
    assert attributes["server.address"] == "127.0.0.1"
    assert attributes["http.response.status_code"] == 200
    assert attributes["llm_proxy.caller"] == "mobile-app"
    assert attributes["llm_proxy.route"] == "openai"
    assert attributes["llm_proxy.stream"] is True
    assert "error.type" not in attributes
    assert 0 < attributes["gen_ai.response.time_to_first_chunk"] < 10
    assert [name for name, _, _ in span.events] == ["llm_proxy.first_byte"]
    assert span.start_ns < span.events[0][1] <= span.end_ns
    assert span.resource["service.name"] == "llm-proxy-under-test"
    # Upstream: our traceparent (same trace, the attempt span as parent), never the baggage.
    sent = upstream_requests(stack.upstream)[-1]["headers"]
    assert isinstance(sent, dict)
    assert sent["traceparent"].split("-")[1] == trace_id
    assert sent["traceparent"].split("-")[2] != caller_span
    assert "baggage" not in sent and "cookie" not in sent
    [attempt] = stack.received.wait_for_spans(lambda s: s.parent_span_id == span.span_id)
    assert sent["traceparent"].split("-")[2] == attempt.span_id
    assert attempt.attributes["http.response.status_code"] == 200
    assert_no_secrets(stack)


def test_anthropic_stream_span(stack: TelemetryStack) -> None:
    client = anthropic.Anthropic(
        base_url=f"{stack.proxy.url}/anthropic", api_key=stack.token, max_retries=0
    )
    with client.messages.with_streaming_response.create(
        model="claude-test",
        max_tokens=100,
        messages=[{"role": "user", "content": prompt()}],
        stream=True,
    ) as reply:
        request_id = reply.headers["x-proxy-request-id"]
        b"".join(reply.iter_bytes())
    attributes = span_for(stack, request_id).attributes
    assert attributes["gen_ai.provider.name"] == "anthropic"
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.request.model"] == "claude-test"
    assert attributes["gen_ai.request.max_tokens"] == 100
    assert attributes["gen_ai.response.model"] == "claude-test"  # message_start
    assert attributes["gen_ai.response.finish_reasons"] == ["end_turn"]  # message_delta
    assert attributes["gen_ai.usage.input_tokens"] > 0
    assert attributes["gen_ai.usage.output_tokens"] > 0
    assert attributes["llm_proxy.stream"] is True
    assert_no_secrets(stack)


def test_gemini_stream_span(stack: TelemetryStack) -> None:
    client = genai.Client(
        api_key=stack.token,
        http_options=genai_types.HttpOptions(base_url=f"{stack.proxy.url}/gemini"),
    )
    config = genai_types.GenerateContentConfig(max_output_tokens=77)
    chunks = list(
        client.models.generate_content_stream(
            model="gemini-2.0-flash", contents=prompt(), config=config
        )
    )
    assert chunks
    found = stack.received.wait_for_spans(
        lambda s: (
            s.attributes.get("gen_ai.provider.name") == "gcp.gemini"
            and s.attributes.get("gen_ai.request.max_tokens") == 77
        )
    )
    assert found
    attributes = found[0].attributes
    assert attributes["gen_ai.operation.name"] == "generate_content"
    assert attributes["gen_ai.request.model"] == "gemini-2.0-flash"
    # modelVersion: the model that answered is not always the one asked for.
    assert attributes["gen_ai.response.model"] == "mock-model"
    assert attributes["gen_ai.response.finish_reasons"] == ["STOP"]
    assert attributes["gen_ai.usage.input_tokens"] > 0
    assert attributes["llm_proxy.stream"] is True
    assert_no_secrets(stack)


def test_responses_stream_span(stack: TelemetryStack) -> None:
    client = openai.OpenAI(
        base_url=f"{stack.proxy.url}/openai/v1", api_key=stack.token, max_retries=0
    )
    with client.responses.with_streaming_response.create(
        model="gpt-responses-test", input=prompt(), stream=True
    ) as reply:
        request_id = reply.headers["x-proxy-request-id"]
        body = b"".join(reply.iter_bytes())
    assert b"response.completed" in body
    attributes = span_for(stack, request_id).attributes
    assert attributes["gen_ai.response.model"] == "gpt-responses-test"
    assert attributes["gen_ai.response.finish_reasons"] == ["completed"]
    assert_no_secrets(stack)


def test_whole_replies_name_the_model_and_finish_reason(stack: TelemetryStack) -> None:
    openai_client = openai.OpenAI(
        base_url=f"{stack.proxy.url}/openai/v1", api_key=stack.token, max_retries=0
    )
    tool: Any = {
        "type": "function",
        "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}},
    }
    chat = openai_client.chat.completions.with_raw_response.create(
        model="gpt-whole-test",
        messages=[{"role": "user", "content": prompt()}],
        tools=[tool],
    )
    assert chat.parse().choices[0].finish_reason == "tool_calls"
    attributes = span_for(stack, chat.headers["x-proxy-request-id"]).attributes
    assert attributes["llm_proxy.stream"] is False
    assert attributes["gen_ai.response.model"] == "gpt-whole-test"
    assert attributes["gen_ai.response.finish_reasons"] == ["tool_calls"]

    anthropic_client = anthropic.Anthropic(
        base_url=f"{stack.proxy.url}/anthropic", api_key=stack.token, max_retries=0
    )
    message = anthropic_client.messages.with_raw_response.create(
        model="claude-whole-test",
        max_tokens=50,
        messages=[{"role": "user", "content": prompt()}],
    )
    assert message.parse().stop_reason == "end_turn"
    attributes = span_for(stack, message.headers["x-proxy-request-id"]).attributes
    assert attributes["gen_ai.response.model"] == "claude-whole-test"
    assert attributes["gen_ai.response.finish_reasons"] == ["end_turn"]
    assert_no_secrets(stack)


def test_refused_request_span_names_the_refusal(stack: TelemetryStack) -> None:
    reply = httpx.post(
        f"{stack.proxy.url}/openai/v1/chat/completions",
        headers={"authorization": "Bearer fake-wrong-token-123456"},
        json={"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert reply.status_code == 401
    span = span_for(stack, reply.headers["x-proxy-request-id"])
    assert span.attributes["http.response.status_code"] == 401
    assert span.attributes["error.type"] == span.attributes["llm_proxy.refusal"]
    assert span.attributes["error.type"]
    assert span.status_code == 2  # STATUS_CODE_ERROR
    assert "fake-wrong-token-123456" not in repr(span.attributes)
    assert_no_secrets(stack)


def test_cache_hit_span(stack: TelemetryStack) -> None:
    client = openai.OpenAI(
        base_url=f"{stack.proxy.url}/openai/v1", api_key=stack.token, max_retries=0
    )
    messages: Any = [{"role": "user", "content": prompt()}]
    ids = []
    for _ in range(2):
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-test", messages=messages, temperature=0
        )
        ids.append((raw.headers["x-proxy-cache"], raw.headers["x-proxy-request-id"]))
    assert [state for state, _ in ids] == ["miss", "hit"]
    miss, hit = (span_for(stack, request_id).attributes for _, request_id in ids)
    assert miss["llm_proxy.cache"] == "miss" and miss["llm_proxy.attempts"] == 1
    assert hit["llm_proxy.cache"] == "hit" and hit["llm_proxy.attempts"] == 0
    assert_no_secrets(stack)


def test_failover_has_one_child_span_per_attempt(stack: TelemetryStack) -> None:
    spans = []
    for _ in range(4):  # the targets take turns: one of these goes to the dead one first
        reply = httpx.post(
            f"{stack.proxy.url}/groq/openai/v1/chat/completions",
            headers={"authorization": f"Bearer {stack.token}"},
            json={"model": "llama-test", "messages": [{"role": "user", "content": prompt()}]},
            timeout=20,
        )
        assert reply.status_code == 200
        spans.append(span_for(stack, reply.headers["x-proxy-request-id"]))
    failed_over = [span for span in spans if span.attributes["llm_proxy.attempts"] == 2]
    assert failed_over, [span.attributes["llm_proxy.attempts"] for span in spans]
    span = failed_over[0]
    assert span.attributes["gen_ai.provider.name"] == "groq"
    children = stack.received.wait_for_spans(lambda s: s.parent_span_id == span.span_id, 2)
    errors = sorted(str(child.attributes.get("error.type")) for child in children)
    assert errors == ["ConnectError", "None"]
    assert_no_secrets(stack)


def test_metrics_follow_the_genai_conventions(stack: TelemetryStack) -> None:
    client = openai.OpenAI(
        base_url=f"{stack.proxy.url}/openai/v1", api_key=stack.token, max_retries=0
    )
    client.chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": prompt()}]
    )
    received = stack.received

    def has(metric: str) -> bool:
        return bool(received.latest_points(metric))

    names = (
        "gen_ai.client.token.usage",
        "gen_ai.client.operation.duration",
        "gen_ai.client.operation.time_to_first_chunk",
        "llm_proxy.requests",
        "llm_proxy.cache.hits",
        "llm_proxy.open",
    )
    deadline = time.monotonic() + 15
    while not all(has(name) for name in names):
        assert time.monotonic() < deadline, [n for n in names if not has(n)]
        time.sleep(0.1)
    tokens = received.latest_points("gen_ai.client.token.usage")
    types = {point.attributes["gen_ai.token.type"] for point in tokens}
    assert types == {"input", "output"}
    assert all(point.attributes["gen_ai.operation.name"] for point in tokens)
    # The answered model beside the asked one, on the series of accepted requests.
    assert any(point.attributes.get("gen_ai.response.model") == "gpt-test" for point in tokens)
    statuses = {
        (point.attributes["http.response.status_code"], point.attributes["llm_proxy.refusal"])
        for point in received.latest_points("llm_proxy.requests")
    }
    assert (200, "") in statuses
    assert any(status == 401 and refusal for status, refusal in statuses)
    assert_no_secrets(stack)


def test_histograms_bucket_each_request_once(stack: TelemetryStack) -> None:
    """A model of its own gives the request its own series: one measurement each, in the
    bucket its value falls in, as a backend computing percentiles reads them."""
    client = openai.OpenAI(
        base_url=f"{stack.proxy.url}/openai/v1", api_key=stack.token, max_retries=0
    )
    model = f"gpt-histogram-{secrets.token_hex(3)}"
    completion = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": prompt()}]
    )
    assert completion.usage is not None
    received = stack.received

    def points(metric: str) -> list[Any]:
        return [
            point
            for point in received.latest_points(metric)
            if point.attributes.get("gen_ai.request.model") == model
        ]

    deadline = time.monotonic() + 15
    while len(points("gen_ai.client.token.usage")) < 2 or not points(
        "gen_ai.client.operation.duration"
    ):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    tokens = {p.attributes["gen_ai.token.type"]: p for p in points("gen_ai.client.token.usage")}
    expected = {
        "input": completion.usage.prompt_tokens,
        "output": completion.usage.completion_tokens,
    }
    for kind, value in expected.items():
        point = tokens[kind]
        assert (point.count, point.value, point.unit) == (1, value, "{token}")
        assert point.temporality == 2  # cumulative
        assert point.attributes["gen_ai.response.model"] == model
        # Explicit buckets hold (bound[i-1], bound[i]]; the last is everything above.
        index = next(
            (i for i, bound in enumerate(point.explicit_bounds) if value <= bound),
            len(point.explicit_bounds),
        )
        assert point.bucket_counts[index] == 1 and sum(point.bucket_counts) == 1
    [duration] = points("gen_ai.client.operation.duration")
    assert duration.count == 1 and 0 < duration.value < 10 and duration.unit == "s"
    assert sum(duration.bucket_counts) == 1
