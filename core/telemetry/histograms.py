"""The GenAI histograms, aggregated in plain dicts and exported beside the SDK's metrics.

A request records four histogram measurements (duration, time to first chunk, input and
output tokens). Through the SDK's instruments each one cleans and copies its attribute
dict, hashes it sorted, and takes a lock: about half of what a request cost OpenTelemetry
on the event loop. Here a measurement is a dict lookup on a tuple of label values, a bisect
and four additions. The exporter the periodic reader calls (`WithHistograms`) adds the
histograms to what the SDK collected, on the reader's thread: cumulative, with explicit
buckets, as the SDK's own would be (a DELTA temporality preference is not applied to them).

Imported only with the `otel` extra (core/telemetry/otel.py).
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

Labels = tuple[tuple[str, Any], ...]
# As the SDK's default cardinality limit: past it, measurements go to one overflow series.
MAX_SERIES = 2000
_OVERFLOW: Labels = (("otel.metric.overflow", True),)


class _Series:
    __slots__ = ("buckets", "count", "max", "min", "sum")

    def __init__(self, size: int) -> None:
        self.count = 0
        self.sum = 0.0
        self.min = float("inf")
        self.max = float("-inf")
        self.buckets = [0] * size


class Histograms:
    """Every histogram of one meter, under one lock (taken once per request)."""

    def __init__(self, resource: Resource, scope: str) -> None:
        self.resource = resource
        self.scope = InstrumentationScope(scope)
        self.started_ns = time.time_ns()
        self.lock = threading.Lock()
        self.all: list[ExplicitHistogram] = []

    def create(
        self, name: str, unit: str, description: str, bounds: Sequence[float]
    ) -> ExplicitHistogram:
        histogram = ExplicitHistogram(name, unit, description, bounds)
        self.all.append(histogram)
        return histogram

    def metrics(self) -> list[Metric]:
        now = time.time_ns()
        with self.lock:
            return [
                metric
                for histogram in self.all
                if (metric := histogram.metric(self.started_ns, now)) is not None
            ]

    def merge(self, data: MetricsData) -> MetricsData:
        """What the SDK collected, with these histograms added to this meter's scope."""
        ours = self.metrics()
        if not ours:
            return data
        resources = list(data.resource_metrics)
        for at, resource in enumerate(resources):
            scopes = list(resource.scope_metrics)
            for index, scope in enumerate(scopes):
                if scope.scope == self.scope:
                    scopes[index] = ScopeMetrics(
                        scope.scope, [*scope.metrics, *ours], scope.schema_url
                    )
                    break
            else:
                scopes.append(ScopeMetrics(self.scope, ours, ""))
            resources[at] = ResourceMetrics(resource.resource, scopes, resource.schema_url)
            return MetricsData(resources)
        return MetricsData(
            [ResourceMetrics(self.resource, [ScopeMetrics(self.scope, ours, "")], "")]
        )


class ExplicitHistogram:
    __slots__ = ("bounds", "description", "name", "series", "unit")

    def __init__(self, name: str, unit: str, description: str, bounds: Sequence[float]) -> None:
        self.name = name
        self.unit = unit
        self.description = description
        self.bounds = list(bounds)
        self.series: dict[Labels, _Series] = {}

    def record(self, value: float, labels: Labels) -> None:
        """One measurement; the caller holds the `Histograms` lock."""
        series = self.series.get(labels)
        if series is None:
            if len(self.series) >= MAX_SERIES:
                labels = _OVERFLOW
            series = self.series.get(labels)
            if series is None:
                series = self.series[labels] = _Series(len(self.bounds) + 1)
        series.count += 1
        series.sum += value
        if value < series.min:
            series.min = value
        if value > series.max:
            series.max = value
        # Explicit buckets hold (bound[i-1], bound[i]]: bisect_left finds that i.
        series.buckets[bisect_left(self.bounds, value)] += 1

    def metric(self, started_ns: int, now_ns: int) -> Metric | None:
        if not self.series:
            return None
        points = [
            HistogramDataPoint(
                attributes=dict(labels),
                start_time_unix_nano=started_ns,
                time_unix_nano=now_ns,
                count=series.count,
                sum=series.sum,
                bucket_counts=list(series.buckets),
                explicit_bounds=self.bounds,
                min=series.min,
                max=series.max,
            )
            for labels, series in self.series.items()
        ]
        data = Histogram(points, AggregationTemporality.CUMULATIVE)
        return Metric(self.name, self.description, self.unit, data)


class WithHistograms(MetricExporter):
    """The OTLP exporter, sent the histograms beside the SDK's collection."""

    def __init__(self, exporter: MetricExporter, histograms: Histograms) -> None:
        super().__init__(
            preferred_temporality=exporter._preferred_temporality,
            preferred_aggregation=exporter._preferred_aggregation,
        )
        self.exporter = exporter
        self.histograms = histograms

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        merged = self.histograms.merge(metrics_data)
        return self.exporter.export(merged, timeout_millis=timeout_millis, **kwargs)

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self.exporter.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.exporter.shutdown(timeout_millis=timeout_millis, **kwargs)
