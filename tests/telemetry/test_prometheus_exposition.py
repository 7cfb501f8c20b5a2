"""A single process's `/metrics` counts are plain totals collected at scrape time: the
exposition is the one prometheus_client's own Counter, Histogram and Gauge would write for
the same requests (a `_created` sample's value is when each series began)."""

from __future__ import annotations

import re

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from core.telemetry.prometheus import SECONDS_BUCKETS, PrometheusSink
from core.telemetry.record import RequestRecord
from core.types import RequestLog


def record(
    route: str,
    status: int,
    *,
    refusal: str | None = None,
    stream: bool = True,
    tokens: tuple[int, int, int] | None = None,
    cost: float | None = None,
    cache_hit: bool = False,
    duration: float = 0.2,
) -> RequestRecord:
    log = RequestLog(request_id="r", method="POST", path="/v1/chat/completions")
    log.route, log.status, log.error = route, status, refusal
    log.upstream_status = status if refusal is None else None
    log.first_byte_ms = duration * 500
    item = RequestRecord(kind="http", method="POST", path="/v1/chat/completions", log=log)
    item.request_model = "gpt-test"
    item.stream = stream
    if tokens is not None:
        item.input_tokens, item.output_tokens, item.cached_input_tokens = tokens
    item.cost_usd = cost
    item.cache_hit = cache_hit
    item.duration_s = duration
    return item


RECORDS = [
    record("openai", 200, tokens=(10, 20, 0), cost=0.001, duration=0.01),
    record("openai", 200, tokens=(5, 7, 3), cost=0.002, duration=0.025),
    record("openai", 200, stream=False, tokens=(1, 2, 0), duration=7.0),
    record("anthropic", 200, cache_hit=True, duration=400.0),
    record("openai", 401, refusal="invalid_token", duration=0.0),
]


def native(records: list[RequestRecord]) -> bytes:
    """What prometheus_client's own metrics write for the same requests."""
    registry = CollectorRegistry()
    requests = Counter(
        "llm_proxy_requests",
        "Proxied requests and realtime sessions by route, status and refusal code",
        ("route", "status", "refusal"),
        registry=registry,
    )
    tokens = Counter(
        "llm_proxy_tokens",
        "Tokens the replies reported (type: input, output, cached_input)",
        ("route", "model", "type"),
        registry=registry,
    )
    hits = Counter(
        "llm_proxy_cache_hits", "Replies from the response cache", ("route",), registry=registry
    )
    spend = Counter(
        "llm_proxy_spend_usd",
        "What the replies cost, where priced",
        ("route", "model"),
        registry=registry,
    )
    duration = Histogram(
        "gen_ai_client_operation_duration_seconds",
        "Time from the request's arrival to the reply's end",
        ("route", "operation"),
        buckets=SECONDS_BUCKETS,
        registry=registry,
    )
    first_chunk = Histogram(
        "gen_ai_client_operation_time_to_first_chunk_seconds",
        "Time from a streamed request's arrival to its first reply byte",
        ("route", "operation"),
        buckets=SECONDS_BUCKETS,
        registry=registry,
    )
    opened = Gauge(
        "llm_proxy_open",
        "Requests and realtime sessions in flight (kind: http, websocket)",
        ("kind",),
        registry=registry,
    )
    for item in records:
        route = item.route or ""
        opened.labels(item.kind).inc()
        opened.labels(item.kind).dec()
        requests.labels(route, str(item.status or 0), item.refusal or "").inc()
        duration.labels(route, item.operation).observe(item.duration_s)
        if item.stream and item.first_byte_s is not None:
            first_chunk.labels(route, item.operation).observe(item.first_byte_s)
        if item.cache_hit:
            hits.labels(route).inc()
            continue
        if item.input_tokens is not None:
            tokens.labels(route, item.model_label, "input").inc(item.input_tokens)
            tokens.labels(route, item.model_label, "output").inc(item.output_tokens or 0)
            if item.cached_input_tokens:
                tokens.labels(route, item.model_label, "cached_input").inc(item.cached_input_tokens)
        if item.cost_usd:
            spend.labels(route, item.model_label).inc(item.cost_usd)
    return generate_latest(registry)


def without_created_values(text: bytes) -> str:
    return re.sub(r"(_created\{[^}]*\}) \S+", r"\1 T", text.decode())


def test_exposition_is_prometheus_clients_own() -> None:
    sink = PrometheusSink()
    for item in RECORDS:
        sink.start(item, {})
        sink.end(item)
    ours = without_created_values(sink.exposition())
    assert ours == without_created_values(native(RECORDS))
    assert 'gen_ai_client_operation_duration_seconds_bucket{le="+Inf"' in ours


def test_an_empty_sink_writes_the_families_alone() -> None:
    assert PrometheusSink().exposition() == native([])


def test_open_counts_requests_in_flight() -> None:
    sink = PrometheusSink()
    first, second = RECORDS[0], RECORDS[1]
    sink.start(first, {})
    sink.start(second, {})
    sink.end(first)
    assert 'llm_proxy_open{kind="http"} 1.0' in sink.exposition().decode()
