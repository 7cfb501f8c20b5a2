"""The GenAI histograms as exported: buckets as OpenTelemetry defines them, and a bounded
number of series however many models the callers name."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.metrics.export import MetricsData
from opentelemetry.sdk.resources import Resource

from core.telemetry.histograms import MAX_SERIES, Histograms


def exported(histograms: Histograms) -> dict[str, list[Any]]:
    data = histograms.merge(MetricsData([]))
    [resource] = data.resource_metrics
    [scope] = resource.scope_metrics
    return {metric.name: list(metric.data.data_points) for metric in scope.metrics}


def test_a_value_on_a_bound_falls_in_that_bucket() -> None:
    histograms = Histograms(Resource.create({}), "llm_proxy")
    seconds = histograms.create("duration", "s", "", [1.0, 2.0])
    with histograms.lock:
        for value in (0.5, 1.0, 1.5, 2.0, 3.0):
            seconds.record(value, (("route", "openai"),))
    [point] = exported(histograms)["duration"]
    assert point.bucket_counts == [2, 2, 1]
    assert (point.count, point.sum, point.min, point.max) == (5, 8.0, 0.5, 3.0)
    assert point.attributes == {"route": "openai"}


def test_series_past_the_limit_overflow_into_one() -> None:
    histograms = Histograms(Resource.create({}), "llm_proxy")
    tokens = histograms.create("tokens", "{token}", "", [10.0])
    with histograms.lock:
        for n in range(MAX_SERIES + 50):
            tokens.record(1, (("gen_ai.request.model", f"model-{n}"),))
    points = exported(histograms)["tokens"]
    assert len(points) == MAX_SERIES + 1
    [overflow] = [p for p in points if p.attributes == {"otel.metric.overflow": True}]
    assert overflow.count == 50
