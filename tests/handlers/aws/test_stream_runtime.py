"""The streaming runtime (exec wrapper -> handlers.aws.stream) against a Runtime API
played by the test over real sockets, on one warm process for the whole module, as a
Lambda instance serves invocation after invocation."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.lambda_events import HttpRequest, api_gateway_v1, function_url
from tests.support.lambda_runtime_api import FakeRuntimeApi, Reply, fake_runtime_api
from tests.support.polling import wait_until
from tests.support.servers import FAKE_TOKEN, RunningServer, proxy_env, serve_in_thread

from .runtime_process import RecordingUpstream, RuntimeProcess, running_runtime

HTTP_INTEGRATION = "application/vnd.awslambda.http-integration-response"


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[RecordingUpstream, RunningServer]]:
    app = RecordingUpstream()
    with serve_in_thread(app) as server:
        yield app, server


@pytest.fixture(scope="module")
def runtime_api() -> Iterator[FakeRuntimeApi]:
    with fake_runtime_api() as api:
        yield api


@pytest.fixture(scope="module")
def warm_process(
    runtime_api: FakeRuntimeApi, upstream: tuple[RecordingUpstream, RunningServer]
) -> Iterator[RuntimeProcess]:
    # Anthropic's route too, on the same mock: an error the handler makes itself speaks it.
    env = proxy_env(
        upstream[1].url, ANTHROPIC_API_KEY="sk-ant-fake-key", ANTHROPIC_UPSTREAM=upstream[1].url
    )
    with running_runtime(runtime_api.address, env) as runtime:
        yield runtime


def chat_request(*, stream: bool = True, **headers: str) -> HttpRequest:
    body = {"model": "m", "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
    request = HttpRequest(
        "POST",
        "/v1/chat/completions",
        headers=[
            ("authorization", f"Bearer {FAKE_TOKEN}"),
            ("content-type", "application/json"),
            *((name.replace("_", "-"), value) for name, value in headers.items()),
        ],
        body=json.dumps(body).encode(),
    )
    return request


def chat(*, stream: bool = True, **headers: str) -> dict[str, object]:
    return function_url(chat_request(stream=stream, **headers))


def events_of(reply: Reply) -> list[str]:
    return [event for event in reply.body.decode().split("\n\n") if event]


def test_reply_is_a_streamed_http_integration_response(
    runtime_api: FakeRuntimeApi, warm_process: RuntimeProcess
) -> None:
    reply = runtime_api.invoke(chat())
    assert reply.request_headers["lambda-runtime-function-response-mode"] == "streaming"
    assert reply.request_headers["content-type"] == HTTP_INTEGRATION
    assert reply.request_headers["transfer-encoding"] == "chunked"
    assert "lambda-runtime-function-error-type" in reply.request_headers["trailer"].lower()
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("text/event-stream")
    assert reply.headers["cache-control"] == "no-cache"
    assert reply.headers["x-accel-buffering"] == "no"
    assert reply.headers["x-proxy-request-id"]
    assert events_of(reply)[-1] == "data: [DONE]"
    assert reply.error_type is None


def test_chunks_arrive_as_the_upstream_produces_them(
    runtime_api: FakeRuntimeApi, warm_process: RuntimeProcess
) -> None:
    reply = runtime_api.invoke(chat(x_mock_chunks="6", x_mock_delay_ms="150"))
    assert reply.error_type is None
    arrivals = [at - reply.sent_at for at, _ in reply.chunks]
    assert len(events_of(reply)) == 6 + 3
    # Buffered, every piece would land together at the end (about 1.05 s here).
    assert len(arrivals) >= 6
    assert arrivals[-1] - arrivals[0] >= 0.6
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert sum(1 for gap in gaps if gap >= 0.08) >= 4


def test_upstream_failure_mid_stream_is_reported_in_the_trailers(
    runtime_api: FakeRuntimeApi, warm_process: RuntimeProcess
) -> None:
    reply = runtime_api.invoke(chat(x_break_after="2"))
    assert reply.status == 200  # the status was already on its way
    assert events_of(reply) == ['data: {"n":0}', 'data: {"n":1}']
    assert reply.error_type == "UpstreamStreamBroken"
    assert reply.error_body["errorType"] == "UpstreamStreamBroken"
    assert "sk-mock" not in json.dumps(reply.error_body)


def test_deadline_ends_a_long_stream_before_lambda_cuts_it(
    runtime_api: FakeRuntimeApi,
    warm_process: RuntimeProcess,
    upstream: tuple[RecordingUpstream, RunningServer],
) -> None:
    httpx.post(f"{upstream[1].url}/_mock/reset")
    reply = runtime_api.invoke(chat(x_mock_chunks="40", x_mock_delay_ms="100"), deadline_in=1.6)
    took = reply.finished_at - reply.sent_at
    assert 0.7 <= took < 1.6, took  # stopped about half a second before the deadline
    assert reply.error_type == "DeadlineExceeded"
    assert 3 <= len(events_of(reply)) < 40
    # The upstream request was cancelled with it, not left generating.
    streams = wait_until(
        lambda: httpx.get(f"{upstream[1].url}/_mock/streams").json(), lambda found: bool(found)
    )
    (stream,) = streams
    assert stream["completed"] is False


def test_deadline_before_the_first_byte_is_a_504_json_error(
    runtime_api: FakeRuntimeApi, warm_process: RuntimeProcess
) -> None:
    # Non-streaming: the mock takes chunks x delay (3 s) before it answers at all.
    event = chat(stream=False, x_mock_chunks="10", x_mock_delay_ms="300")
    reply = runtime_api.invoke(event, deadline_in=1.2)
    assert reply.finished_at - reply.sent_at < 1.2
    assert reply.status == 504
    assert json.loads(reply.body)["error"]["code"] == "upstream_timeout"
    assert reply.error_type is None  # a complete, well-formed reply
    # Every reply names the access log's line for it, this one made by the handler too.
    assert reply.headers["x-proxy-request-id"]


def test_the_deadline_504_is_readable_by_an_allowed_page_only(
    runtime_api: FakeRuntimeApi, warm_process: RuntimeProcess
) -> None:
    # The handler answers this one itself, outside the app's CORS layer: a page must
    # still be able to read it, as any other error (and a foreign page not).
    for origin, readable in (("http://app.example.test", True), ("https://elsewhere.test", False)):
        event = chat(stream=False, x_mock_chunks="10", x_mock_delay_ms="300", origin=origin)
        reply = runtime_api.invoke(event, deadline_in=1.2)
        assert reply.status == 504
        assert "Origin" in reply.headers.get("vary", "")
        if readable:
            assert reply.headers["access-control-allow-origin"] == origin
        else:
            assert "access-control-allow-origin" not in reply.headers


def test_the_deadline_504_takes_the_routes_error_shape(
    runtime_api: FakeRuntimeApi, warm_process: RuntimeProcess
) -> None:
    # Made by the handler, not the app: it was OpenAI's shape whatever the route.
    body = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    request = HttpRequest(
        "POST",
        "/anthropic/v1/messages",
        headers=[
            ("x-api-key", FAKE_TOKEN),
            ("content-type", "application/json"),
            ("x-mock-chunks", "10"),
            ("x-mock-delay-ms", "300"),
        ],
        body=json.dumps(body).encode(),
    )
    reply = runtime_api.invoke(function_url(request), deadline_in=1.2)
    assert reply.status == 504
    error = json.loads(reply.body)
    assert error["type"] == "error" and "time limit" in error["error"]["message"]


def test_caller_gone_cancels_the_upstream_and_the_instance_serves_on(
    runtime_api: FakeRuntimeApi,
    warm_process: RuntimeProcess,
    upstream: tuple[RecordingUpstream, RunningServer],
) -> None:
    httpx.post(f"{upstream[1].url}/_mock/reset")
    # Lambda hangs up on the reply after the prelude and the first event or two.
    reply = runtime_api.invoke(chat(x_mock_chunks="50", x_mock_delay_ms="100"), cut_after_bytes=600)
    assert reply.cut
    cut_at = time.time()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        streams = httpx.get(f"{upstream[1].url}/_mock/streams").json()
        if streams and "ended_at" in streams[0]:
            break
        time.sleep(0.05)
    (stream,) = streams
    assert stream["completed"] is False
    assert stream["ended_at"] - cut_at < 1.0  # cancelled promptly, not after 5 s of tokens
    assert runtime_api.invoke(chat()).status == 200  # and the instance took the next one


def test_warm_invocations_reuse_one_process_and_one_upstream_connection(
    runtime_api: FakeRuntimeApi,
    warm_process: RuntimeProcess,
    upstream: tuple[RecordingUpstream, RunningServer],
) -> None:
    recorder = upstream[0]
    ports_before = len(recorder.client_ports)
    replies = [runtime_api.invoke(chat(stream=False)) for _ in range(5)]
    assert [r.status for r in replies] == [200] * 5
    assert warm_process.process.poll() is None
    ports = recorder.client_ports[ports_before:]
    assert len(ports) == 5
    assert len(set(ports)) == 1, ports  # the pooled connection outlived each invocation


def test_binary_body_and_encoded_path_pass_through(
    runtime_api: FakeRuntimeApi, warm_process: RuntimeProcess
) -> None:
    auth = [("authorization", f"Bearer {FAKE_TOKEN}")]
    reply = runtime_api.invoke(
        function_url(
            HttpRequest(
                "GET", "/v1/bytes", query=[("n", "300000"), ("chunk", "65536")], headers=auth
            )
        )
    )
    assert reply.status == 200
    assert reply.body == b"x" * 300000
    blob = bytes(range(256)) * 8
    reply = runtime_api.invoke(
        function_url(
            HttpRequest(
                "POST",
                "/v1/echo/a%2Fb",
                headers=[*auth, ("content-type", "application/octet-stream")],
                body=blob,
            )
        )
    )
    echoed = json.loads(reply.body)
    assert echoed["body_length"] == len(blob)


def test_bad_environment_answers_with_a_named_500(
    runtime_api: FakeRuntimeApi, upstream: tuple[RecordingUpstream, RunningServer]
) -> None:
    env = proxy_env(upstream[1].url)
    env["UPSTREAM_API_KEY"] = ""
    with fake_runtime_api() as api, running_runtime(api.address, env):
        reply = api.invoke(chat(), timeout=30)
    assert reply.status == 500
    assert "UPSTREAM_API_KEY" in json.loads(reply.body)["error"]["message"]


def test_a_broken_package_is_reported_as_an_init_error(
    tmp_path: Path, upstream: tuple[RecordingUpstream, RunningServer]
) -> None:
    # A dependency missing from the deployment package, as when it was zipped without them.
    (tmp_path / "httpx.py").write_text("raise ImportError('httpx is not in the package')\n")
    env = {**proxy_env(upstream[1].url), "PYTHONPATH": str(tmp_path)}
    with fake_runtime_api() as api, running_runtime(api.address, env) as runtime:
        runtime.process.wait(timeout=30)
        assert runtime.process.returncode != 0, runtime.output()
        (error,) = api.init_errors
    assert error["headers"]["lambda-runtime-function-error-type"] == "Runtime.InitError"
    assert error["body"]["errorType"] == "Runtime.InitError"
    assert "ImportError" in error["body"]["errorMessage"]
    assert api.next_calls == 0


def test_the_entry_refuses_to_run_outside_lambda() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "handlers.aws.stream"],
        env={"PATH": "/usr/bin:/bin"},
        cwd=str(Path(__file__).resolve().parents[3]),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode != 0
    assert "AWS_LAMBDA_RUNTIME_API" in out.stderr


def test_a_rest_api_stream_integration_event_streams_with_multi_value_headers(
    runtime_api: FakeRuntimeApi, warm_process: RuntimeProcess
) -> None:
    """API Gateway REST API, `ResponseTransferMode: STREAM`: the usual proxy event in (stage
    in requestContext.path), the same prelude + NULs + body out."""
    event = api_gateway_v1(chat_request(x_mock_chunks="6", x_mock_delay_ms="150"), stage="prod")
    reply = runtime_api.invoke(event)
    assert reply.request_headers["lambda-runtime-function-response-mode"] == "streaming"
    assert reply.request_headers["content-type"] == HTTP_INTEGRATION
    assert reply.error_type is None
    assert reply.status == 200
    assert set(reply.prelude) == {"statusCode", "headers", "multiValueHeaders"}
    assert reply.headers["content-type"].startswith("text/event-stream")
    assert reply.headers["cache-control"] == "no-cache"
    assert len(events_of(reply)) == 6 + 3
    arrivals = [at - reply.sent_at for at, _ in reply.chunks]
    assert arrivals[-1] - arrivals[0] >= 0.6  # streamed, not buffered to the end
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert sum(1 for gap in gaps if gap >= 0.08) >= 4


def test_an_event_that_is_not_from_a_function_url_is_refused_by_name(
    runtime_api: FakeRuntimeApi, warm_process: RuntimeProcess
) -> None:
    reply = runtime_api.invoke({"hello": "console test event"})
    assert reply.error is not None
    assert reply.error["errorType"] == "Runtime.UnsupportedEvent"
    assert "Function URL" in reply.error["errorMessage"]
    assert "REST API" in reply.error["errorMessage"]
    assert runtime_api.invoke(chat()).status == 200  # and the instance serves on
