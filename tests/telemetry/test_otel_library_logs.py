"""The OpenTelemetry libraries' own log lines, under the proxy's rule: no credential in any
of them. They quote what they were given: an OTEL_EXPORTER_OTLP_HEADERS entry they cannot
parse (a collector's API key), an export's error (whose text names the endpoint, query
string and all)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from core.telemetry.otel import OpenTelemetrySink
from core.telemetry.spans import OtlpHttp
from tests.support.servers import free_port

SECRET = "fake-collector-s3cret"


@pytest.fixture
def no_otel_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    import os

    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)
    yield monkeypatch


def logged(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(
        f"{record.name}: {record.getMessage()} {record.exc_text or ''}" for record in caplog.records
    )


@pytest.mark.parametrize(
    "headers",
    [
        f'x-honeycomb-team=abc"{SECRET}',  # a quote: neither reading accepts it
        f"authorization=Bearer {SECRET};v=1",  # a `;`
        f"x-api-key=abc\\{SECRET}",  # a backslash
    ],
)
def test_an_unreadable_otlp_header_is_not_quoted(
    headers: str, caplog: pytest.LogCaptureFixture, no_otel_env: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.DEBUG)
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1",
        "OTEL_EXPORTER_OTLP_HEADERS": headers,
    }
    OtlpHttp(env).close()
    # The metrics exporter reads the environment itself.
    for name, value in env.items():
        no_otel_env.setenv(name, value)
    no_otel_env.setenv("OTEL_TRACES_EXPORTER", "none")
    import os

    sink = OpenTelemetrySink(os.environ)
    try:
        assert sink.meter_provider is not None
    finally:
        sink.shutdown()
    text = logged(caplog)
    assert "OTEL_EXPORTER_OTLP" in text or "Header format invalid" in text  # still said
    assert SECRET not in text


def test_a_failed_metrics_export_does_not_quote_the_endpoint_query(
    caplog: pytest.LogCaptureFixture, no_otel_env: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.DEBUG)
    endpoint = f"http://127.0.0.1:{free_port()}/v1/metrics?api_key={SECRET}"
    no_otel_env.setenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", endpoint)
    no_otel_env.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    no_otel_env.setenv("OTEL_TRACES_EXPORTER", "none")
    import os

    sink = OpenTelemetrySink(os.environ)
    assert sink.meter_provider is not None
    try:
        sink.counts.requests[(("http.response.status_code", 200),)] = 1
        sink.meter_provider.force_flush(5000)
    finally:
        sink.shutdown()
    text = logged(caplog)
    assert "metrics" in text  # the failure is still logged
    assert SECRET not in text
