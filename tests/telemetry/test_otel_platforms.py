"""OpenTelemetry where the process is not a plain server: a realtime session is one span; a
function invocation exports before it ends, and a collector that hangs delays it by at
most FLUSH_SECONDS; prompt content only with the standard switch, scrubbed and cut."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from openai import AsyncOpenAI

from core.app import create_app
from core.config import load_settings
from core.telemetry.otel import FLUSH_SECONDS
from tests.support.fake_realtime import FakeRealtime
from tests.support.realtime import ProxyFactory, fake, start_proxy, upstream  # noqa: F401 (fixtures)
from tests.support.servers import FAKE_TOKEN, FAKE_UPSTREAM_KEY, RunningServer, proxy_env
from tests.telemetry.otlp_receiver import Received, otlp_exporting, otlp_receiver


@pytest.fixture
def receiver() -> Iterator[Received]:
    with otlp_exporting(OTEL_METRICS_EXPORTER="none") as received:
        yield received


async def test_realtime_session_is_one_span(
    receiver: Received,
    start_proxy: ProxyFactory,  # noqa: F811
    upstream: FakeRealtime,  # noqa: F811
) -> None:
    with start_proxy() as proxy:
        client = AsyncOpenAI(base_url=f"{proxy.url}/v1", api_key=FAKE_TOKEN)
        async with client.realtime.connect(model="gpt-realtime") as connection:
            await connection.send({"type": "response.create"})
            while True:
                event = json.loads(await asyncio.wait_for(connection.recv_bytes(), 5))
                if event["type"] == "response.done":
                    break
        found = await asyncio.to_thread(
            receiver.wait_for_spans,
            lambda span: span.attributes.get("gen_ai.operation.name") == "realtime",
        )
    assert found
    attributes = found[0].attributes
    assert attributes["gen_ai.request.model"] == "gpt-realtime"
    assert attributes["gen_ai.provider.name"] == "openai"
    assert attributes["http.response.status_code"] == 101
    assert attributes["gen_ai.usage.output_tokens"] == 20
    # session.created names the model that answers; response.done how the response ended.
    assert attributes["gen_ai.response.model"] == "fake"
    assert attributes["gen_ai.response.finish_reasons"] == ["completed"]
    assert FAKE_TOKEN not in repr(attributes) and FAKE_UPSTREAM_KEY not in repr(attributes)


def _function_app(mock_upstream: RunningServer) -> Any:
    # A function platform's app: one request at a time, export flushed per invocation.
    return create_app(load_settings(proxy_env(mock_upstream.url)), concurrent=False)


async def test_function_invocation_exports_before_it_ends(
    mock_upstream: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    with otlp_receiver() as (endpoint, received):
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        # The batch would wait a minute: only the end-of-invocation flush can deliver it.
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "60000")
        monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "60000")
        app = _function_app(mock_upstream)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://function") as client:
            reply = await client.post(
                "/v1/chat/completions",
                headers={"authorization": f"Bearer {FAKE_TOKEN}"},
                json={"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]},
            )
        assert reply.status_code == 200
        # Already there when the invocation returned: no waiting.
        with received.lock:
            spans = [s for s in received.spans if s.attributes.get("gen_ai.request.model")]
            metrics = {point.metric for point in received.points}
        assert spans and spans[0].attributes["gen_ai.request.model"] == "gpt-test"
        assert "gen_ai.client.operation.duration" in metrics
        await app.proxy.telemetry.close()  # the process's end, before the collector's


class _Hanging(BaseHTTPRequestHandler):
    """A collector that reads the export and never answers."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", "0")))
        time.sleep(30)

    def log_message(self, *args: object) -> None:
        return None


async def test_a_hanging_collector_delays_an_invocation_by_the_flush_bound_at_most(
    mock_upstream: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hanging)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv(
            "OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}"
        )
        app = _function_app(mock_upstream)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://function") as client:
            started = time.perf_counter()
            reply = await client.post(
                "/v1/chat/completions",
                headers={"authorization": f"Bearer {FAKE_TOKEN}"},
                json={"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]},
            )
            took = time.perf_counter() - started
        assert reply.status_code == 200
        await asyncio.wait_for(app.proxy.telemetry.close(), 30)
        assert took < FLUSH_SECONDS + 1.0, took
    finally:
        server.shutdown()
        server.server_close()


def test_prompt_content_only_with_the_switch_scrubbed_and_cut(
    mock_upstream: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.support.servers import serve_in_thread

    secret_prompt = f"my key is {FAKE_UPSTREAM_KEY} and sk-live-abcdefghijklmnop " + "x" * 9000
    with otlp_receiver() as (endpoint, received):
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
        monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")
        for capture in ("", "true"):
            monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", capture)
            app = create_app(load_settings(proxy_env(mock_upstream.url)))
            with serve_in_thread(app) as proxy:
                reply = httpx.post(
                    f"{proxy.url}/v1/chat/completions",
                    headers={"authorization": f"Bearer {FAKE_TOKEN}"},
                    json={
                        "model": f"gpt-capture-{capture or 'off'}",
                        "messages": [{"role": "user", "content": secret_prompt}],
                    },
                )
                assert reply.status_code == 200
                [span] = received.wait_for_spans(
                    lambda s, c=capture: (
                        s.attributes.get("gen_ai.request.model") == f"gpt-capture-{c or 'off'}"
                    )
                )
            if not capture:
                assert "gen_ai.input.messages" not in span.attributes  # off by default
                continue
            content = span.attributes["gen_ai.input.messages"]
            assert "my key is [redacted] and [redacted]" in content
            assert FAKE_UPSTREAM_KEY not in content and "sk-live" not in content
            assert len(content) < 4200 and content.endswith("...[truncated]")
