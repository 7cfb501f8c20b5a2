"""See every request: OpenTelemetry GenAI traces and metrics, Prometheus, the request log.

`build_telemetry` decides once at start which sinks a deployment has, and returns None
when it has none, so the proxy then runs exactly as without this package:

- OpenTelemetry (core/telemetry/otel.py) when OTEL_EXPORTER_OTLP_ENDPOINT, or its
  _TRACES_ / _METRICS_ variant, is set; the SDK is imported only then (the `otel` extra).
- Prometheus `/metrics` (core/telemetry/prometheus.py) on servers only.
- The ledger's request log (core/telemetry/request_log.py) wherever the usage ledger is
  kept: the dashboard's Requests page reads it.

The interface and its hooks are in core/telemetry/hub.py.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from core.telemetry import serving

if TYPE_CHECKING:
    from core.telemetry.hub import Sink, Telemetry
    from core.usage.ledger import UsageLedger

logger = logging.getLogger("llm_proxy")


def otel_wanted(env: Mapping[str, str]) -> bool:
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return any(
        env.get(name)
        for name in (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
        )
    )


def build_telemetry(
    ledger: UsageLedger | None,
    api_keys: Iterable[bytes],
    *,
    concurrent: bool,
    env: Mapping[str, str] = os.environ,
) -> tuple[Telemetry | None, object | None]:
    """The deployment's telemetry and its OpenTelemetry sink (for the attempt recorder),
    or (None, None) when nothing is configured. `api_keys` are the keys content capture
    scrubs from what it records (the reply scrubber's own list)."""
    sinks: list[Sink] = []
    otel = None
    content = None
    if otel_wanted(env):
        try:
            from core.telemetry.otel import OpenTelemetrySink
        except ImportError:
            logger.warning(
                "OTEL_EXPORTER_OTLP_ENDPOINT is set but OpenTelemetry is not installed: "
                "install llm-proxy[otel]; telemetry stays off"
            )
        else:
            otel = OpenTelemetrySink(env)
            sinks.append(otel)
            from core.telemetry.content import ContentCapture, capture_wanted

            if capture_wanted(env):
                content = ContentCapture(key.decode() for key in api_keys)
    metrics_token = env.get("METRICS_TOKEN", "").strip()
    prometheus = None
    if serving.SERVER:
        # Looked up, not imported: the library is only needed at a scrape (prometheus.py).
        if importlib.util.find_spec("prometheus_client") is None:
            logger.warning("prometheus_client is not installed: /metrics is off")
        else:
            from core.telemetry.prometheus import MetricsEndpoint, PrometheusSink

            prometheus = PrometheusSink()
            sinks.append(prometheus)
    if ledger is not None:
        from core.telemetry.request_log import RequestLogSink

        sinks.append(RequestLogSink(ledger))
    if not sinks:
        return None, None
    from core.telemetry.hub import Telemetry

    telemetry = Telemetry(sinks, content=content)
    telemetry.flush_each = not concurrent and otel is not None
    telemetry.meters = telemetry.spans = otel is not None
    if prometheus is not None:
        telemetry.metrics_endpoint = MetricsEndpoint(prometheus, metrics_token)
    return telemetry, otel
