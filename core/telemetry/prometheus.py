"""Prometheus exposition at `/metrics` on servers.

Served to a scrape that presents METRICS_TOKEN as a bearer token (constant-time compare),
or, with no token set, to one from loopback that no local reverse proxy forwarded (it
carries no Forwarded, Via, X-Real-IP or X-Forwarded-* header). Anything else gets a 404, as
if there were no such path. Under `--workers N` every worker writes its counts to files in a
shared temporary directory (PROMETHEUS_MULTIPROC_DIR, core/telemetry/serving.py) and a
scrape of any worker reads them all.

The model label is only ever a model an upstream accepted (a 2xx reply), at most
MODEL_LABELS of them, and the caller is never a label: a caller cannot grow the number of
series.
"""

from __future__ import annotations

import hmac
import math
import os
import time
from bisect import bisect_left
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from core.errors import NotFound, Unauthorized, send_error

# prometheus_client is imported at the first scrape, not at start (`exposition`, `family`):
# one process keeps its own totals and only needs the library to write them out, and the
# library with what it imports (wsgiref, http.server, threading's timers) is about 1.2 MB
# of a server's memory for life, which a deployment nobody scrapes never uses.
if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

    from core.telemetry.record import RequestRecord
    from core.types import Receive, Scope, Send

SECONDS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
# A header only a forwarding front end writes. Not only those that name the client: a TLS
# front end may set X-Forwarded-Proto alone (docs/admin.md has it do so for the Secure
# cookie), or only Via or X-Forwarded-Host, and still hand us strangers' requests.
_FORWARDING = frozenset({b"forwarded", b"via", b"x-real-ip"})
_FORWARDING_PREFIX = b"x-forwarded-"
# As prometheus_client decides whether a counter has a `_created` sample.
_USE_CREATED = os.environ.get("PROMETHEUS_DISABLE_CREATED_SERIES", "False").lower() not in (
    "true",
    "1",
    "t",
)
_REQUESTS = "Proxied requests and realtime sessions by route, status and refusal code"
_TOKENS = "Tokens the replies reported (type: input, output, cached_input)"
_CACHE_HITS = "Replies from the response cache"
_SPEND = "What the replies cost, where priced"
_DURATION_NAME = "gen_ai_client_operation_duration_seconds"
_DURATION = "Time from the request's arrival to the reply's end"
_FIRST_CHUNK_NAME = "gen_ai_client_operation_time_to_first_chunk_seconds"
_FIRST_CHUNK = "Time from a streamed request's arrival to its first reply byte"
_OPEN = "Requests and realtime sessions in flight (kind: http, websocket)"
# Distinct model labels a process keeps; further models share OTHER_MODEL. A 2xx bounds
# them only where the upstream refuses names it does not serve: one that runs any name
# (llama.cpp's server, a gateway ignoring `model`) would take a new series per request.
MODEL_LABELS = 500
OTHER_MODEL = "other"


Key = tuple[str, ...]


class _Children:
    """A prometheus_client metric's labelled children, kept by their label values (multiple
    worker processes): its own `labels()` checks the values, takes a lock and builds a key
    on every call; a proxy asks for the same few children over and over."""

    __slots__ = ("known", "metric")

    def __init__(self, metric: Any) -> None:
        self.metric = metric
        self.known: dict[Key, Any] = {}

    def __call__(self, *values: str) -> Any:
        child = self.known.get(values)
        if child is None:
            child = self.known[values] = self.metric.labels(*values)
        return child


class _ClientCount:
    """A prometheus_client counter or gauge (files every worker shares)."""

    __slots__ = ("children",)

    def __init__(self, metric: Any) -> None:
        self.children = _Children(metric)

    def add(self, key: Key, amount: float) -> None:
        self.children(*key).inc(amount)


class _ClientHistogram:
    __slots__ = ("children",)

    def __init__(self, metric: Any) -> None:
        self.children = _Children(metric)

    def observe(self, key: Key, value: float) -> None:
        self.children(*key).observe(value)


class _Count:
    """A counter or gauge of this process: totals in a dict by label values, read into a
    prometheus_client family at scrape time. An update is a dict lookup and an addition,
    not prometheus_client's lock, value object and label checks."""

    __slots__ = ("created", "doc", "kind", "labels", "name", "values")

    def __init__(self, name: str, doc: str, labels: Key, kind: str = "counter") -> None:
        self.name = name
        self.doc = doc
        self.labels = labels
        self.kind = kind
        self.values: dict[Key, float] = {}
        self.created: dict[Key, float] = {}

    def add(self, key: Key, amount: float) -> None:
        values = self.values
        value = values.get(key)
        if value is None:
            self.created[key] = time.time()
            values[key] = float(amount)
        else:
            values[key] = value + amount

    def family(self) -> Metric:
        """As prometheus_client's own Counter or Gauge exposes it."""
        from prometheus_client.metrics_core import Metric

        metric = Metric(self.name, self.doc, self.kind)
        created = self.created
        for key, value in list(self.values.items()):
            labels = dict(zip(self.labels, key, strict=True))
            if self.kind == "gauge":
                metric.add_sample(self.name, labels, value)
                continue
            metric.add_sample(f"{self.name}_total", labels, value)
            if _USE_CREATED:
                metric.add_sample(f"{self.name}_created", labels, created[key])
        return metric


class _Histogram:
    """A histogram of this process: per label values, a count per bucket and the sum."""

    __slots__ = ("bounds", "created", "doc", "labels", "name", "series", "upper")

    def __init__(self, name: str, doc: str, labels: Key, buckets: tuple[float, ...]) -> None:
        self.name = name
        self.doc = doc
        self.labels = labels
        self.bounds = [float(bound) for bound in buckets]
        # The bucket labels, as prometheus_client writes them (le="+Inf" last): at the first
        # scrape, with the library.
        self.upper: list[str] = []
        # Per label values: one count per bucket (+Inf last), then the sum.
        self.series: dict[Key, list[float]] = {}
        self.created: dict[Key, float] = {}

    def observe(self, key: Key, value: float) -> None:
        series = self.series.get(key)
        if series is None:
            self.created[key] = time.time()
            series = self.series[key] = [0.0] * (len(self.bounds) + 2)
        # A bucket holds what is at most its bound (le): bisect_left finds it.
        series[bisect_left(self.bounds, value)] += 1
        series[-1] += value

    def family(self) -> Metric:
        from prometheus_client.metrics_core import Metric
        from prometheus_client.utils import floatToGoString

        if not self.upper:
            self.upper = [floatToGoString(bound) for bound in (*self.bounds, math.inf)]
        metric = Metric(self.name, self.doc, "histogram")
        name = self.name
        for key, series in list(self.series.items()):
            labels = dict(zip(self.labels, key, strict=True))
            total = 0.0
            for upper, count in zip(self.upper, series, strict=False):
                total += count
                metric.add_sample(f"{name}_bucket", {**labels, "le": upper}, total)
            metric.add_sample(f"{name}_count", labels, total)
            metric.add_sample(f"{name}_sum", labels, series[-1])
            if _USE_CREATED:
                metric.add_sample(f"{name}_created", labels, self.created[key])
        return metric


class _Collector:
    """What a registry of prometheus_client reads at a scrape (its `Collector` protocol)."""

    def __init__(self, metrics: list[_Count | _Histogram]) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return [metric.family() for metric in self.metrics]


class PrometheusSink:
    requests: _Count | _ClientCount
    tokens: _Count | _ClientCount
    cache_hits: _Count | _ClientCount
    spend: _Count | _ClientCount
    open: _Count | _ClientCount
    duration: _Histogram | _ClientHistogram
    first_chunk: _Histogram | _ClientHistogram
    registry: CollectorRegistry | None

    def __init__(self) -> None:
        # The model labels in use (at most MODEL_LABELS).
        self.models: set[str] = set()
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        if self.multiprocess:
            self._client_metrics()
        else:
            self._own_metrics()

    def _own_metrics(self) -> None:
        """One process: plain totals, collected at scrape time into a registry of our own
        (several apps in one process, tests or embedding, never collide)."""
        self.requests = _Count("llm_proxy_requests", _REQUESTS, ("route", "status", "refusal"))
        self.tokens = _Count("llm_proxy_tokens", _TOKENS, ("route", "model", "type"))
        self.cache_hits = _Count("llm_proxy_cache_hits", _CACHE_HITS, ("route",))
        self.spend = _Count("llm_proxy_spend_usd", _SPEND, ("route", "model"))
        self.duration = _Histogram(
            _DURATION_NAME, _DURATION, ("route", "operation"), SECONDS_BUCKETS
        )
        self.first_chunk = _Histogram(
            _FIRST_CHUNK_NAME, _FIRST_CHUNK, ("route", "operation"), SECONDS_BUCKETS
        )
        self.open = _Count("llm_proxy_open", _OPEN, ("kind",), "gauge")
        self.own: list[_Count | _Histogram] = [
            self.requests,
            self.tokens,
            self.cache_hits,
            self.spend,
            self.duration,
            self.first_chunk,
            self.open,
        ]
        self.registry = None  # made at the first scrape (`exposition`)

    def _client_metrics(self) -> None:
        """`--workers N`: prometheus_client's metrics, whose values every worker writes to
        files in PROMETHEUS_MULTIPROC_DIR, so a scrape of any worker adds them all up."""
        from prometheus_client import Counter, Gauge, Histogram

        self.registry = None
        labels = ("route", "status", "refusal")
        self.requests = _ClientCount(Counter("llm_proxy_requests", _REQUESTS, labels))
        self.tokens = _ClientCount(Counter("llm_proxy_tokens", _TOKENS, ("route", "model", "type")))
        self.cache_hits = _ClientCount(Counter("llm_proxy_cache_hits", _CACHE_HITS, ("route",)))
        self.spend = _ClientCount(Counter("llm_proxy_spend_usd", _SPEND, ("route", "model")))
        self.duration = _ClientHistogram(
            Histogram(_DURATION_NAME, _DURATION, ("route", "operation"), buckets=SECONDS_BUCKETS)
        )
        self.first_chunk = _ClientHistogram(
            Histogram(
                _FIRST_CHUNK_NAME, _FIRST_CHUNK, ("route", "operation"), buckets=SECONDS_BUCKETS
            )
        )
        self.open = _ClientCount(
            Gauge("llm_proxy_open", _OPEN, ("kind",), multiprocess_mode="livesum")
        )

    def start(self, record: RequestRecord, scope: Scope) -> None:
        self.open.add((record.kind,), 1)

    def end(self, record: RequestRecord) -> None:
        route = record.route or ""
        self.open.add((record.kind,), -1)
        self.requests.add((route, str(record.status or 0), record.refusal or ""), 1)
        operation = (route, record.operation)
        self.duration.observe(operation, record.duration_s)
        if record.stream and record.first_byte_s is not None:
            self.first_chunk.observe(operation, record.first_byte_s)
        if record.cache_hit:
            self.cache_hits.add((route,), 1)
            return  # a hit's tokens were saved, not spent
        model = record.model_label
        if model not in self.models:
            if len(self.models) >= MODEL_LABELS:
                model = OTHER_MODEL
            else:
                self.models.add(model)
        if record.input_tokens is not None:
            tokens = self.tokens
            tokens.add((route, model, "input"), record.input_tokens)
            tokens.add((route, model, "output"), record.output_tokens or 0)
            if record.cached_input_tokens:
                tokens.add((route, model, "cached_input"), record.cached_input_tokens)
        if record.cost_usd:
            self.spend.add((route, model), record.cost_usd)

    async def flush(self) -> None:
        return None

    def exposition(self) -> bytes:
        from prometheus_client import CollectorRegistry, generate_latest

        if self.multiprocess:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        if self.registry is None:
            # Our own registry (several apps in one process, tests or embedding, never
            # collide).
            self.registry = CollectorRegistry()
            self.registry.register(_Collector(self.own))
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
        return not any(
            name in _FORWARDING or name.startswith(_FORWARDING_PREFIX) for name, _ in headers
        )

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
        from prometheus_client.exposition import CONTENT_TYPE_LATEST

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
