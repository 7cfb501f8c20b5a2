"""OpenTelemetry traces and metrics over OTLP/HTTP, following the GenAI conventions.

Imported only when an OTLP endpoint is set (core/telemetry/__init__.py): the SDK and the
exporter are the `otel` extra. Configured by the standard variables alone: the endpoints,
headers, timeout, compression, OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES,
OTEL_TRACES_SAMPLER, OTEL_BSP_*, OTEL_METRIC_EXPORT_INTERVAL; OTEL_TRACES_EXPORTER=none or
OTEL_METRICS_EXPORTER=none turn one half off. Nothing here is process-global, so an app
that embeds the proxy keeps its own telemetry apart.

Spans are written from the request record at its end, straight to OTLP protobuf, and
batched (core/telemetry/spans.py): the SDK's tracer is not used. Metrics go through the
SDK's meter provider and OTLP exporter, the histograms aggregated here (histograms.py);
the resource is the SDK's (`Resource.create`, which reads the resource variables).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from opentelemetry.sdk.resources import Resource

from core.telemetry.spans import (
    SPAN_ATTRIBUTES,
    STATUS_ERROR,
    KeyValues,
    OtlpHttp,
    Sampler,
    SpanBatches,
    SpanContext,
    encode_resource,
    encode_scope,
    encode_span,
    new_id,
    parse_traceparent,
    parse_tracestate,
)

if TYPE_CHECKING:
    from core.telemetry.record import Attempt, RequestRecord
    from core.types import Scope

logger = logging.getLogger("llm_proxy")

# The most a function invocation waits for its export before it ends (the process may
# be frozen after the reply): a slow or unreachable collector costs a caller at most this.
FLUSH_SECONDS = 1.0
TOKEN_BUCKETS = [4**n for n in range(14)]  # 1 .. 67,108,864, as the conventions advise
SECONDS_BUCKETS = [
    0.01,
    0.02,
    0.04,
    0.08,
    0.16,
    0.32,
    0.64,
    1.28,
    2.56,
    5.12,
    10.24,
    20.48,
    40.96,
    81.92,
]
_FIRST_BYTE = "llm_proxy.first_byte"
_INPUT = ("gen_ai.token.type", "input")
_OUTPUT = ("gen_ai.token.type", "output")


def _on(*names: str, env: Mapping[str, str]) -> bool:
    return any(env.get(name) for name in names)


def traces_wanted(env: Mapping[str, str]) -> bool:
    if env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return False
    return _on("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", env=env)


def metrics_wanted(env: Mapping[str, str]) -> bool:
    if env.get("OTEL_METRICS_EXPORTER", "otlp").strip().lower() == "none":
        return False
    return _on("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", env=env)


def _resource(env: Mapping[str, str]) -> Resource:
    named = env.get("OTEL_SERVICE_NAME") or "service.name=" in env.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    )
    return Resource.create({} if named else {"service.name": "llm-proxy"})


class OpenTelemetrySink:
    def __init__(self, env: Mapping[str, str] = os.environ) -> None:
        protocol = env.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        if protocol != "http/protobuf":
            logger.warning(
                "OTEL_EXPORTER_OTLP_PROTOCOL=%s: this proxy exports OTLP over HTTP (protobuf) only",
                protocol,
            )
        resource = _resource(env)
        # Traces: spans encoded from the request record at its end and batched
        # (core/telemetry/spans.py); the SDK's tracer is not used.
        self.spans: SpanBatches | None = None
        self.sampler = Sampler(env)
        limit = env.get("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT") or env.get(
            "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT"
        )
        self.keyvalues = KeyValues(
            SPAN_ATTRIBUTES,
            int(limit) if limit and limit.strip().isdigit() else None,
            unique=("llm_proxy.request_id", "gen_ai.input.messages"),
        )
        if traces_wanted(env):
            self.spans = SpanBatches(
                env,
                OtlpHttp(env),
                encode_resource(resource.attributes),
                encode_scope("llm_proxy"),
            )
        self.meter_provider: Any = None
        self.instruments: dict[str, Any] = {}
        self.histograms: Any = None
        self.counts = _Counts()
        if metrics_wanted(env):
            self._metrics(resource)

    def _metrics(self, resource: Resource) -> None:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        from core.telemetry.histograms import Histograms, WithHistograms
        from core.telemetry.spans import withhold_library_values

        # Before the exporter reads OTEL_EXPORTER_OTLP_HEADERS (and logs what it cannot).
        withhold_library_values()

        # The histograms are aggregated here and added to each export (histograms.py): a
        # request's four measurements cost a lookup each, not the SDK's attribute handling.
        histograms = self.histograms = Histograms(resource, "llm_proxy")
        exporter = WithHistograms(OTLPMetricExporter(), histograms)
        reader = PeriodicExportingMetricReader(exporter)
        self.meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
        meter = self.meter_provider.get_meter("llm_proxy")
        seconds = SECONDS_BUCKETS
        self.instruments = {
            "tokens": histograms.create(
                "gen_ai.client.token.usage",
                "{token}",
                "Input and output tokens per request, as the reply reported them",
                TOKEN_BUCKETS,
            ),
            "duration": histograms.create(
                "gen_ai.client.operation.duration",
                "s",
                "Time from the request's arrival to the reply's end",
                seconds,
            ),
            "first_chunk": histograms.create(
                "gen_ai.client.operation.time_to_first_chunk",
                "s",
                "Time from the request's arrival to the first reply byte",
                seconds,
            ),
        }
        # Counts are kept in plain dicts and read by the SDK at export time (observable
        # instruments): a request pays for no SDK measurement at all.
        counts = self.counts
        meter.create_observable_counter(
            "llm_proxy.requests",
            callbacks=[_observe(counts.requests)],
            unit="{request}",
            description="Requests by status and refusal code",
        )
        meter.create_observable_counter(
            "llm_proxy.cache.hits",
            callbacks=[_observe(counts.cache_hits)],
            unit="{request}",
            description="Replies from the response cache",
        )
        meter.create_observable_counter(
            "llm_proxy.spend",
            callbacks=[_observe(counts.spend)],
            unit="USD",
            description="What the replies cost, where priced",
        )
        meter.create_observable_up_down_counter(
            "llm_proxy.open",
            callbacks=[_observe(counts.open)],
            unit="{stream}",
            description="Requests and sessions in flight",
        )

    # ---- the sink ----------------------------------------------------------------------

    def start(self, record: RequestRecord, scope: Scope) -> None:
        if self.spans is not None:
            record.span = self._context(scope.get("headers", ()))
        if self.instruments:
            _add(self.counts.open, (("llm_proxy.kind", record.kind),), 1)

    def _context(self, headers: Any) -> SpanContext:
        """The request span's ids: a caller's trace continued (W3C trace context), or a new
        one; sampled as OTEL_TRACES_SAMPLER says."""
        traceparent = None
        tracestate: list[str] = []
        for name, value in headers:
            if name == b"traceparent":
                traceparent = value.decode("latin-1")
            elif name == b"tracestate":
                tracestate.append(value.decode("latin-1"))
        parent = parse_traceparent(traceparent) if traceparent is not None else None
        if parent is None:
            trace_id = new_id(16)
            return SpanContext(trace_id, new_id(8), b"", self.sampler.sampled(trace_id, None))
        trace_id, parent_id, flags = parent
        return SpanContext(
            trace_id,
            new_id(8),
            parent_id,
            self.sampler.sampled(trace_id, flags),
            remote=True,
            trace_state=parse_tracestate(tracestate) if tracestate else "",
        )

    def attempt_headers(
        self, record: RequestRecord, attempt: Attempt, headers: list[tuple[bytes, bytes]]
    ) -> list[tuple[bytes, bytes]]:
        """A child span for one upstream try; its id goes upstream as the parent."""
        context: SpanContext | None = record.span
        if context is None:
            return headers
        child = attempt.span = new_id(8)
        flags = "01" if context.sampled else "00"
        traceparent = f"00-{context.trace_hex}-{child.hex()}-{flags}"
        return [*headers, (b"traceparent", traceparent.encode())]

    def end(self, record: RequestRecord) -> None:
        attributes = genai_attributes(record)
        if record.span is not None and record.span.sampled:
            self._end_span(record, attributes)
        if self.instruments:
            self._measure(record, attributes)

    def _end_span(self, record: RequestRecord, attributes: dict[str, Any]) -> None:
        """The request's span and one child per upstream try, encoded and queued."""
        context: SpanContext = record.span
        assert self.spans is not None
        model = record.request_model
        name = f"{record.operation} {model[:100]}" if model else record.operation
        everything = {**attributes, **proxy_attributes(record)}
        if record.content:
            everything.update(record.content)
        end_ns = record.started_ns + int(record.duration_s * 1e9)
        first_byte = record.first_byte_ns
        keyvalues = self.keyvalues
        trace_id = context.trace_id
        spans = [
            encode_span(
                keyvalues,
                trace_id,
                context.span_id,
                context.parent_id,
                name,
                record.started_ns,
                end_ns,
                everything,
                trace_state=context.trace_state,
                remote_parent=context.remote,
                events=((_FIRST_BYTE, first_byte),) if first_byte is not None else (),
                status=STATUS_ERROR if "error.type" in attributes else 0,
            )
        ]
        last = len(record.attempts) - 1
        for index, attempt in enumerate(record.attempts):
            child = attempt.span
            if child is None:
                continue
            child_attributes: dict[str, Any] = {"server.address": attempt.server}
            if attempt.status is not None:
                child_attributes["http.response.status_code"] = attempt.status
            if attempt.error is not None:
                child_attributes["error.type"] = attempt.error
            # The try that answered lasts as long as its reply; a failed one, to its answer.
            spans.append(
                encode_span(
                    keyvalues,
                    trace_id,
                    child,
                    context.span_id,
                    "upstream attempt",
                    attempt.started_ns,
                    end_ns if index == last else attempt.ended_ns,
                    child_attributes,
                    trace_state=context.trace_state,
                    status=STATUS_ERROR if attempt.error is not None else 0,
                )
            )
        self.spans.add(spans)

    def _measure(self, record: RequestRecord, attributes: dict[str, Any]) -> None:
        # The metric attributes, as a tuple the histograms key their series by.
        labels: list[tuple[str, Any]] = [
            ("gen_ai.operation.name", attributes["gen_ai.operation.name"])
        ]
        provider = attributes.get("gen_ai.provider.name")
        if provider is not None:
            labels.append(("gen_ai.provider.name", provider))
        # Metric series are labelled only with a model an upstream accepted; the model
        # that answered is the upstream's own word, a bounded set.
        label = record.model_label
        labels.append(("gen_ai.request.model", label))
        if label and record.response_model:
            labels.append(("gen_ai.response.model", record.response_model[:100]))
        for name in ("server.address", "error.type"):
            value = attributes.get(name)
            if value is not None:
                labels.append((name, value))
        measured = tuple(labels)
        instruments = self.instruments
        counts = self.counts
        with self.histograms.lock:
            instruments["duration"].record(record.duration_s, measured)
            if record.first_byte_s is not None and record.stream:
                instruments["first_chunk"].record(record.first_byte_s, measured)
            if record.input_tokens is not None and not record.cache_hit:
                tokens = instruments["tokens"]
                tokens.record(record.input_tokens, (*measured, _INPUT))
                tokens.record(record.output_tokens or 0, (*measured, _OUTPUT))
        _add(counts.open, (("llm_proxy.kind", record.kind),), -1)
        route = record.route or ""
        status = (
            ("http.response.status_code", record.status or 0),
            ("llm_proxy.refusal", record.refusal or ""),
            ("llm_proxy.route", route),
        )
        _add(counts.requests, status, 1)
        if record.cache_hit:
            _add(counts.cache_hits, (("llm_proxy.route", route),), 1)
        if record.cost_usd:
            _add(counts.spend, (("llm_proxy.route", route),), record.cost_usd)

    async def flush(self) -> None:
        """Export what is pending, waiting FLUSH_SECONDS at most (function platforms)."""
        try:
            await asyncio.wait_for(asyncio.to_thread(self._flush), FLUSH_SECONDS)
        except TimeoutError:
            logger.warning("telemetry export took longer than %gs; not waited for", FLUSH_SECONDS)

    def _flush(self) -> None:
        if self.spans is not None:
            self.spans.flush(FLUSH_SECONDS)
        if self.meter_provider is not None:
            self.meter_provider.force_flush(int(FLUSH_SECONDS * 1000))

    def shutdown(self) -> None:
        if self.spans is not None:
            self.spans.shutdown()
        if self.meter_provider is not None:
            self.meter_provider.shutdown()


Labels = tuple[tuple[str, Any], ...]


class _Counts:
    """Running totals by attribute set, read at each export."""

    def __init__(self) -> None:
        self.requests: dict[Labels, float] = {}
        self.cache_hits: dict[Labels, float] = {}
        self.spend: dict[Labels, float] = {}
        self.open: dict[Labels, float] = {}


def _add(totals: dict[Labels, float], labels: Labels, amount: float) -> None:
    totals[labels] = totals.get(labels, 0) + amount


def _observe(totals: dict[Labels, float]) -> Any:
    from opentelemetry.metrics import Observation

    def callback(options: Any) -> list[Observation]:
        # Runs on the exporter's thread: a snapshot (one C-level call under the GIL).
        return [Observation(value, dict(labels)) for labels, value in list(totals.items())]

    return callback


def genai_attributes(record: RequestRecord) -> dict[str, Any]:
    """The GenAI semantic-convention attributes the record supports."""
    attributes: dict[str, Any] = {"gen_ai.operation.name": record.operation}
    if record.provider_name:
        attributes["gen_ai.provider.name"] = record.provider_name
    if record.request_model:
        attributes["gen_ai.request.model"] = record.request_model[:200]
    if record.response_model:
        attributes["gen_ai.response.model"] = record.response_model[:200]
    if record.max_tokens is not None:
        attributes["gen_ai.request.max_tokens"] = record.max_tokens
    if record.input_tokens is not None:
        attributes["gen_ai.usage.input_tokens"] = record.input_tokens
        attributes["gen_ai.usage.output_tokens"] = record.output_tokens or 0
        if record.cached_input_tokens:
            attributes["gen_ai.usage.cache_read.input_tokens"] = record.cached_input_tokens
    if record.finish_reasons:
        attributes["gen_ai.response.finish_reasons"] = record.finish_reasons  # a tuple
    if record.server:
        attributes["server.address"] = record.server
    if record.status is not None:
        attributes["http.response.status_code"] = record.status
    if record.first_byte_s is not None and record.stream:
        attributes["gen_ai.response.time_to_first_chunk"] = record.first_byte_s
    error = record.error_type
    if error is not None:
        attributes["error.type"] = error
    return attributes


def proxy_attributes(record: RequestRecord) -> dict[str, Any]:
    """This proxy's own: who called (the label, never the credential), route, cache, cost."""
    attributes: dict[str, Any] = {"llm_proxy.stream": record.stream}
    if record.caller:
        attributes["llm_proxy.caller"] = record.caller[:200]
    if record.route:
        attributes["llm_proxy.route"] = record.route
    log = record.log
    if log is not None:
        attributes["llm_proxy.request_id"] = log.request_id
        if log.cache:
            attributes["llm_proxy.cache"] = log.cache
        if log.upstream_status is not None:
            attributes["llm_proxy.upstream_status"] = log.upstream_status
    if record.cache_hit:
        attributes["llm_proxy.cache"] = "hit"
    if record.refusal:
        attributes["llm_proxy.refusal"] = record.refusal
    if record.cost_usd is not None:
        attributes["llm_proxy.cost_usd"] = round(record.cost_usd, 6)
    attributes["llm_proxy.attempts"] = len(record.attempts)
    return attributes
