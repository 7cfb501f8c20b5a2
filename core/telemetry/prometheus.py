"""Prometheus exposition at `/metrics` on servers.

Served to a scrape that presents METRICS_TOKEN as a bearer token (constant-time compare),
or, with no token set, to one from loopback that no local reverse proxy forwarded (it
carries no Forwarded / X-Forwarded-For). Anything else gets a 404, as if there were no such
path. Under `--workers N` every worker writes its counts to files in a shared temporary
directory (PROMETHEUS_MULTIPROC_DIR, core/telemetry/serving.py) and a scrape of any
worker reads them all.

The model label is only ever a model an upstream accepted (a 2xx reply), and the caller is
never a label: a caller cannot grow the number of series.
"""

from __future__ import annotations

import hmac
import os
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from core.errors import NotFound, Unauthorized, send_error

if TYPE_CHECKING:
    from core.telemetry.record import RequestRecord
    from core.types import Receive, Scope, Send

SECONDS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
_FORWARDING = frozenset({b"forwarded", b"x-forwarded-for", b"x-real-ip"})


class _Children:
    """A metric's labelled children, kept by their label values. prometheus_client's own
    `labels()` checks the values, takes a lock and builds a key on every call (about a
    third of this sink's time per request); a proxy asks for the same few children over and
    over. It holds no child the metric does not hold too."""

    __slots__ = ("known", "metric")

    def __init__(self, metric: Any) -> None:
        self.metric = metric
        self.known: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str) -> Any:
        child = self.known.get(values)
        if child is None:
            child = self.known[values] = self.metric.labels(*values)
        return child


class PrometheusSink:
    def __init__(self) -> None:
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        # A registry of our own: several apps in one process (tests, embedding) never
        # collide in prometheus_client's global one.
        registry = None if self.multiprocess else CollectorRegistry()
        self.registry = registry
        labels = ("route", "status", "refusal")
        self.requests = Counter(
            "llm_proxy_requests",
            "Proxied requests and realtime sessions by route, status and refusal code",
            labels,
            registry=registry,
        )
        self.tokens = Counter(
            "llm_proxy_tokens",
            "Tokens the replies reported (type: input, output, cached_input)",
            ("route", "model", "type"),
            registry=registry,
        )
        self.cache_hits = Counter(
            "llm_proxy_cache_hits", "Replies from the response cache", ("route",), registry=registry
        )
        self.spend = Counter(
            "llm_proxy_spend_usd",
            "What the replies cost, where priced",
            ("route", "model"),
            registry=registry,
        )
        self.duration = Histogram(
            "gen_ai_client_operation_duration_seconds",
            "Time from the request's arrival to the reply's end",
            ("route", "operation"),
            buckets=SECONDS_BUCKETS,
            registry=registry,
        )
        self.first_chunk = Histogram(
            "gen_ai_client_operation_time_to_first_chunk_seconds",
            "Time from a streamed request's arrival to its first reply byte",
            ("route", "operation"),
            buckets=SECONDS_BUCKETS,
            registry=registry,
        )
        self.open = Gauge(
            "llm_proxy_open",
            "Requests and realtime sessions in flight (kind: http, websocket)",
            ("kind",),
            registry=registry,
            multiprocess_mode="livesum",
        )
        self._open = _Children(self.open)
        self._requests = _Children(self.requests)
        self._tokens = _Children(self.tokens)
        self._cache_hits = _Children(self.cache_hits)
        self._spend = _Children(self.spend)
        self._duration = _Children(self.duration)
        self._first_chunk = _Children(self.first_chunk)

    def start(self, record: RequestRecord, scope: Scope) -> None:
        self._open(record.kind).inc()

    def end(self, record: RequestRecord) -> None:
        route = record.route or ""
        self._open(record.kind).dec()
        self._requests(route, str(record.status or 0), record.refusal or "").inc()
        operation = record.operation
        self._duration(route, operation).observe(record.duration_s)
        if record.stream and record.first_byte_s is not None:
            self._first_chunk(route, operation).observe(record.first_byte_s)
        if record.cache_hit:
            self._cache_hits(route).inc()
            return  # a hit's tokens were saved, not spent
        model = record.model_label
        if record.input_tokens is not None:
            self._tokens(route, model, "input").inc(record.input_tokens)
            self._tokens(route, model, "output").inc(record.output_tokens or 0)
            if record.cached_input_tokens:
                self._tokens(route, model, "cached_input").inc(record.cached_input_tokens)
        if record.cost_usd:
            self._spend(route, model).inc(record.cost_usd)

    async def flush(self) -> None:
        return None

    def exposition(self) -> bytes:
        if self.multiprocess:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        assert self.registry is not None
        return generate_latest(self.registry)


class MetricsEndpoint:
    """`GET /metrics`: the exposition, for a scrape that may read it."""

    def __init__(self, sink: PrometheusSink, token: str) -> None:
        self.sink = sink
        self.token = token.encode()

    def allowed(self, scope: Scope) -> bool:
        headers: Any = scope.get("headers", ())
        if self.token:
            for name, value in headers:
                if name == b"authorization":
                    scheme, _, presented = value.partition(b" ")
                    return scheme.lower() == b"bearer" and hmac.compare_digest(
                        presented.strip(), self.token
                    )
            return False
        client = scope.get("client")
        if not client or client[0] not in _LOOPBACK:
            return False
        return not any(name in _FORWARDING for name, _ in headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] not in ("GET", "HEAD"):
            await send_error(send, NotFound("No route for '/metrics' on this proxy."), "openai")
            return
        if not self.allowed(scope):
            if self.token:
                await send_error(
                    send, Unauthorized("The metrics token is missing or wrong."), "openai"
                )
            else:
                await send_error(send, NotFound("No route for '/metrics' on this proxy."), "openai")
            return
        body = self.sink.exposition()
        headers = [
            (b"content-type", CONTENT_TYPE_LATEST.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send(
            {"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body}
        )
