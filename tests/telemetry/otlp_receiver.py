"""A tiny OTLP/HTTP collector for tests: it decodes what the proxy exports with the
opentelemetry-proto messages, as a real collector would, and keeps it for assertions."""

from __future__ import annotations

import contextlib
import gzip
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in any_value.array_value.values]
    return getattr(any_value, kind) if kind else None


def attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


@dataclass
class Span:
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    events: list[tuple[str, int, dict[str, Any]]]
    status_code: int
    resource: dict[str, Any]


@dataclass
class Point:
    metric: str
    attributes: dict[str, Any]
    value: float  # a sum's value, or a histogram's sum
    count: int = 0  # a histogram's count
    unit: str = ""
    # A histogram's buckets, and 2 for cumulative (AGGREGATION_TEMPORALITY_CUMULATIVE).
    bucket_counts: tuple[int, ...] = ()
    explicit_bounds: tuple[float, ...] = ()
    temporality: int = 0


@dataclass
class Received:
    spans: list[Span] = field(default_factory=list)
    points: list[Point] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wait_for_spans(
        self, match: Callable[[Span], bool], count: int = 1, timeout: float = 15
    ) -> list[Span]:
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                found = [span for span in self.spans if match(span)]
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    def latest_points(self, metric: str) -> list[Point]:
        """The last export's points of `metric` (cumulative temporality: the totals)."""
        with self.lock:
            points = [point for point in self.points if point.metric == metric]
        latest: dict[tuple[tuple[str, Any], ...], Point] = {}
        for point in points:
            latest[tuple(sorted((k, str(v)) for k, v in point.attributes.items()))] = point
        return list(latest.values())


def _decode_traces(body: bytes, received: Received) -> None:
    request = ExportTraceServiceRequest.FromString(body)
    for resource_spans in request.resource_spans:
        resource = attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                decoded = Span(
                    name=span.name,
                    trace_id=span.trace_id.hex(),
                    span_id=span.span_id.hex(),
                    parent_span_id=span.parent_span_id.hex(),
                    kind=span.kind,
                    start_ns=span.start_time_unix_nano,
                    end_ns=span.end_time_unix_nano,
                    attributes=attributes(span.attributes),
                    events=[
                        (event.name, event.time_unix_nano, attributes(event.attributes))
                        for event in span.events
                    ],
                    status_code=span.status.code,
                    resource=resource,
                )
                with received.lock:
                    received.spans.append(decoded)


def _decode_metrics(body: bytes, received: Received) -> None:
    request = ExportMetricsServiceRequest.FromString(body)
    for resource_metrics in request.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                kind = metric.WhichOneof("data")
                points: list[Point] = []
                if kind == "sum":
                    for p in metric.sum.data_points:
                        value = p.as_double if p.WhichOneof("value") == "as_double" else p.as_int
                        points.append(Point(metric.name, attributes(p.attributes), value))
                elif kind == "histogram":
                    for h in metric.histogram.data_points:
                        point = Point(metric.name, attributes(h.attributes), h.sum, h.count)
                        point.unit = metric.unit
                        point.bucket_counts = tuple(h.bucket_counts)
                        point.explicit_bounds = tuple(h.explicit_bounds)
                        point.temporality = metric.histogram.aggregation_temporality
                        points.append(point)
                with received.lock:
                    received.points.extend(points)


@contextlib.contextmanager
def otlp_receiver() -> Iterator[tuple[str, Received]]:
    """Serve OTLP/HTTP on a free loopback port: yields (endpoint, what was received)."""
    received = Received()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            if self.headers.get("content-encoding") == "gzip":
                body = gzip.decompress(body)
            if self.path == "/v1/traces":
                _decode_traces(body, received)
                reply = ExportTraceServiceResponse().SerializeToString()
            elif self.path == "/v1/metrics":
                _decode_metrics(body, received)
                reply = ExportMetricsServiceResponse().SerializeToString()
            else:
                self.send_response(404)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def otlp_exporting(**settings: str) -> Iterator[Received]:
    """A receiver, and this process's OpenTelemetry settings pointed at it with batches
    sent every 50 ms, plus `settings` (OTEL_* variables), restored afterwards."""
    import pytest

    with otlp_receiver() as (endpoint, received), pytest.MonkeyPatch.context() as patch:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_BSP_SCHEDULE_DELAY": "50"}
        for name, value in {**env, **settings}.items():
            patch.setenv(name, value)
        yield received
