"""`llm-proxy check --url` against each platform's adapter, run locally the way its platform
runs it (a Lambda function behind a loopback stand-in for its Function URL or REST API),
in front of a mock provider that takes 60 ms per token: streaming adapters must be
reported as streamed, the Mangum (buffered) one as buffered."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from core.cli import main
from core.devtools.check_url import StreamTiming, check_deployment
from core.devtools.mock_upstream import MockOptions, MockUpstream
from tests.conformance.adapters import (
    Adapter,
    AwsLambdaMangum,
    AwsLambdaRestApiStreaming,
    AwsLambdaStreaming,
    GoogleFunctionsFramework,
    HttpAdapter,
    PlainHttpServer,
    UvicornInProcess,
    VercelFluid,
)
from tests.conformance.lambda_front import lambda_front
from tests.support.servers import FAKE_TOKEN, RunningServer, proxy_env, serve_in_thread

ORIGIN = "http://app.example.test"  # in proxy_env's ALLOWED_ORIGINS
STREAMING = [
    PlainHttpServer,
    GoogleFunctionsFramework,
    VercelFluid,
    AwsLambdaStreaming,
    AwsLambdaRestApiStreaming,
]


@pytest.fixture(scope="module")
def slow_provider() -> Iterator[RunningServer]:
    with serve_in_thread(MockUpstream(MockOptions(chunks=10, delay_ms=60))) as server:
        yield server


@contextlib.contextmanager
def deployed(adapter: Adapter, upstream: RunningServer) -> Iterator[str]:
    """The adapter started as its platform starts it; its URL."""
    with adapter.start(proxy_env(upstream.url)):
        if isinstance(adapter, HttpAdapter):
            yield adapter.base_url
        else:
            with lambda_front(adapter) as url:
                yield url


def run_check(url: str, **options: str) -> tuple[int, list[str]]:
    lines: list[str] = []
    status = check_deployment(
        url,
        token=options.get("token", FAKE_TOKEN),
        model="mock-model",
        origin=options.get("origin", ORIGIN),
        print_line=lines.append,
    )
    return status, lines


def finding(lines: list[str], name: str) -> str:
    (line,) = [line for line in lines if line[5:].startswith(f"{name}:")]
    return line


@pytest.mark.parametrize("kind", STREAMING, ids=[kind.name for kind in STREAMING])
def test_streaming_adapters_are_reported_as_streamed(
    kind: type[Adapter], slow_provider: RunningServer
) -> None:
    with deployed(kind(), slow_provider) as url:
        status, lines = run_check(url)
    report = "\n".join(lines)
    assert status == 0, report
    assert finding(lines, "stream").startswith("ok   stream: status 200 text/event-stream")
    assert finding(lines, "stream").endswith(": streamed"), report
    assert finding(lines, "unauthenticated") == "ok   unauthenticated: refused with 401"
    assert finding(lines, "cors").startswith("ok   cors: preflight from http://app.example.test")
    assert finding(lines, "health") == "ok   health: 200"


def test_the_buffered_mangum_adapter_is_reported_as_buffered(
    slow_provider: RunningServer,
) -> None:
    with deployed(AwsLambdaMangum(), slow_provider) as url:
        status, lines = run_check(url)
    report = "\n".join(lines)
    assert status == 1, report
    stream = finding(lines, "stream")
    assert stream.startswith("FAIL stream: status 200 text/event-stream"), report
    assert stream.endswith(": buffered"), report
    # The rest of the deployment works: only the streaming is missing.
    assert finding(lines, "unauthenticated").startswith("ok")
    assert finding(lines, "cors").startswith("ok")


@pytest.fixture(scope="module")
def local_proxy(slow_provider: RunningServer) -> Iterator[str]:
    with deployed(UvicornInProcess(), slow_provider) as url:
        yield url


def test_the_cli_takes_the_token_from_the_environment(
    local_proxy: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PROXY_ACCESS_TOKEN", f"{FAKE_TOKEN},another-token-0123456789")
    assert main(["check", "--url", local_proxy + "/", "--origin", ORIGIN]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"checking {local_proxy}/v1/chat/completions"
    assert "ok   stream:" in out and ": streamed" in out
    assert FAKE_TOKEN not in out


def test_failures_are_named_and_exit_non_zero(local_proxy: str) -> None:
    status, lines = run_check(
        local_proxy, token="wrong-token-0123456789", origin="https://evil.test"
    )
    assert status == 1
    assert finding(lines, "stream").startswith("FAIL stream: status 401: ")
    assert finding(lines, "cors").startswith(
        "FAIL cors: preflight from https://evil.test: status 403"
    )
    assert finding(lines, "unauthenticated").startswith("ok")


def test_without_origin_cors_is_skipped_not_failed(local_proxy: str) -> None:
    status, lines = run_check(local_proxy, origin="")
    assert status == 0
    assert finding(lines, "cors").startswith("skip cors: give --origin")


def test_nothing_listening_is_a_failure_per_check() -> None:
    with serve_in_thread(MockUpstream()) as server:
        url = server.url
    status, lines = run_check(url)
    assert status == 1
    assert finding(lines, "stream").startswith("FAIL stream: ConnectError")


def test_the_verdict_reads_the_arrival_spread() -> None:
    assert StreamTiming(0.5, [0.9, 0.901, 0.902], [100, 100, 100]).verdict == "buffered"
    assert StreamTiming(0.1, [0.1, 0.2, 0.3], [10, 10, 10]).verdict == "streamed"
    assert StreamTiming(0.1, [2.0], [3000]).verdict == "buffered"
    assert StreamTiming(0.1).verdict == "empty"
