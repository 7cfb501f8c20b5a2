"""`/metrics` on servers: served to loopback or to the METRICS_TOKEN bearer only; the counts
of one process, and of `llm-proxy serve --workers 2` added up across its workers, match
what the usage ledger recorded."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from core.app import create_app
from core.config import load_settings
from core.stores import open_store
from core.telemetry import serving
from core.usage.ledger import UsageLedger
from tests.support.servers import (
    FAKE_TOKEN,
    PYTHON,
    RunningServer,
    free_port,
    proxy_env,
    reset_upstream,
    run_process,
    serve_in_thread,
    upstream_requests,
)

METRICS_TOKEN = "fake-metrics-token-0123456789"


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Every sample of `name` in an exposition, keyed by its sorted labels."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def chat(url: str, token: str = FAKE_TOKEN, stream: bool = False) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/chat/completions",
        headers={"authorization": f"Bearer {token}"},
        json={
            "model": "gpt-test",
            "stream": stream,
            "messages": [{"role": "user", "content": "hi"}],
        },
        timeout=20,
    )


@pytest.fixture
def server_proxy(
    mock_upstream: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[RunningServer]:
    monkeypatch.setattr(serving, "SERVER", True)  # as `llm-proxy serve` marks its process
    app = create_app(load_settings(proxy_env(mock_upstream.url)))
    with serve_in_thread(app) as proxy:
        yield proxy


def test_loopback_scrape_reads_requests_by_status_and_refusal(server_proxy: RunningServer) -> None:
    for _ in range(3):
        assert chat(server_proxy.url, stream=True).status_code == 200
    assert chat(server_proxy.url, token="fake-wrong-token-0000").status_code == 401
    scrape = httpx.get(f"{server_proxy.url}/metrics")
    assert scrape.status_code == 200
    assert scrape.headers["content-type"].startswith("text/plain")
    text = scrape.text
    requests = samples(text, "llm_proxy_requests_total")
    assert requests[(("refusal", ""), ("route", "default"), ("status", "200"))] == 3
    refused = [dict(labels) for labels in requests if dict(labels)["status"] == "401"]
    assert len(refused) == 1 and refused[0]["refusal"], refused  # the refusal's own code
    first_chunk = samples(text, "gen_ai_client_operation_time_to_first_chunk_seconds_count")
    assert sum(first_chunk.values()) == 3
    # Counting is per request: a deployment with no rule that meters leaves each stream
    # as it was (no usage asked for, no event read), so it has no token counts.
    assert samples(text, "llm_proxy_tokens_total") == {}
    assert samples(text, "llm_proxy_open")[(("kind", "http"),)] == 0
    for secret in (FAKE_TOKEN, "fake-wrong-token-0000", "sk-mock"):
        assert secret not in text


def test_counting_leaves_the_request_as_the_caller_sent_it(
    server_proxy: RunningServer, mock_upstream: RunningServer
) -> None:
    body = json.dumps(
        {"model": "gpt-test", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    ).encode()
    reset_upstream(mock_upstream)
    reply = httpx.post(
        f"{server_proxy.url}/v1/chat/completions",
        headers={"authorization": f"Bearer {FAKE_TOKEN}", "content-type": "application/json"},
        content=body,
        timeout=20,
    )
    assert reply.status_code == 200 and b"[DONE]" in reply.content
    [sent] = upstream_requests(mock_upstream)
    assert sent["body_sha256"] == hashlib.sha256(body).hexdigest()  # no stream_options added


def test_paths_a_stranger_makes_up_add_no_series(server_proxy: RunningServer) -> None:
    # The operation label came from the path's `:method`: each made-up method (on a 404,
    # no token needed) was a new histogram series, so memory and the scrape grew without
    # bound.
    for index in range(20):
        reply = httpx.post(f"{server_proxy.url}/no/such/route:made{index}", timeout=20)
        assert reply.status_code == 404
    text = httpx.get(f"{server_proxy.url}/metrics").text
    operations = {
        dict(labels)["operation"]
        for labels in samples(text, "gen_ai_client_operation_duration_seconds_count")
    }
    assert not any(name.startswith("made") for name in operations), operations
    assert len(operations) <= 2, operations


def test_models_an_upstream_takes_whatever_their_name_add_bounded_series(
    mock_upstream: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The model label is the caller's model wherever the upstream answered 2xx: an upstream
    that runs any name (llama.cpp's server, the mock, a gateway that ignores `model`) let a
    caller add a series per request. Past the bound, further names share one label."""
    from core.telemetry import prometheus

    monkeypatch.setattr(serving, "SERVER", True)
    monkeypatch.setattr(prometheus, "MODEL_LABELS", 3, raising=False)
    # The ledger is kept: every reply is metered.
    env = proxy_env(mock_upstream.url, ADMIN_TOKEN="test-admin-token-for-metrics-0123456789")
    with serve_in_thread(create_app(load_settings(env))) as proxy:
        for index in range(8):
            reply = httpx.post(
                f"{proxy.url}/v1/chat/completions",
                headers={"authorization": f"Bearer {FAKE_TOKEN}"},
                json={"model": f"made-up-{index}", "messages": [{"role": "user", "content": "hi"}]},
                timeout=20,
            )
            assert reply.status_code == 200
        tokens = samples(httpx.get(f"{proxy.url}/metrics").text, "llm_proxy_tokens_total")
    models = {dict(labels)["model"] for labels in tokens}
    assert len(models) <= 4, models  # three names, then one shared label
    assert sum(v for k, v in tokens.items() if dict(k)["type"] == "input") == 8  # all counted


def test_scrape_through_a_local_reverse_proxy_is_refused(server_proxy: RunningServer) -> None:
    reply = httpx.get(f"{server_proxy.url}/metrics", headers={"x-forwarded-for": "203.0.113.9"})
    assert reply.status_code == 404


@pytest.mark.parametrize(
    "forwarded",
    [
        {"x-forwarded-proto": "https"},
        {"x-forwarded-host": "proxy.example.com"},
        {"via": "1.1 proxy.example.com"},
        {"x-forwarded-port": "443"},
    ],
)
def test_a_front_end_that_names_no_client_still_forwards(
    server_proxy: RunningServer, forwarded: dict[str, str]
) -> None:
    """A local TLS front end that sets only X-Forwarded-Proto (what docs/admin.md has it
    send for the Secure cookie), X-Forwarded-Host or Via, and not the client's address,
    still forwards strangers' requests from loopback: /metrics was theirs to read."""
    reply = httpx.get(f"{server_proxy.url}/metrics", headers=forwarded)
    assert reply.status_code == 404


def test_metrics_token_is_required_when_set(
    mock_upstream: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(serving, "SERVER", True)
    monkeypatch.setenv("METRICS_TOKEN", METRICS_TOKEN)
    app = create_app(load_settings(proxy_env(mock_upstream.url)))
    with serve_in_thread(app) as proxy:
        assert httpx.get(f"{proxy.url}/metrics").status_code == 401
        wrong = httpx.get(
            f"{proxy.url}/metrics", headers={"authorization": f"Bearer {METRICS_TOKEN}x"}
        )
        assert wrong.status_code == 401
        right = httpx.get(
            f"{proxy.url}/metrics", headers={"authorization": f"Bearer {METRICS_TOKEN}"}
        )
        assert right.status_code == 200 and "llm_proxy_requests" in right.text
        assert METRICS_TOKEN not in right.text


def test_functions_have_no_metrics_path(mock_upstream: RunningServer) -> None:
    app = create_app(load_settings(proxy_env(mock_upstream.url)))
    with serve_in_thread(app) as proxy:
        reply = httpx.get(f"{proxy.url}/metrics", headers={"authorization": f"Bearer {FAKE_TOKEN}"})
        assert reply.status_code == 404


def test_workers_add_up_and_match_the_ledger(
    mock_upstream: RunningServer, tmp_path: object
) -> None:
    port = free_port()
    store_url = f"sqlite:///{tmp_path}/usage.db"
    env = proxy_env(mock_upstream.url, USAGE_STORE=store_url, ACCESS_LOG="false")
    url = f"http://127.0.0.1:{port}"
    args = [PYTHON, "-m", "core.cli", "serve", "--workers", "2", "--port", str(port)]
    sent = 24
    # A new connection per request: the kernel hands them to both workers.
    with run_process(args, env, f"{url}/health"), httpx.Client(timeout=20) as client:
        for index in range(sent):
            reply = httpx.post(
                f"{url}/v1/chat/completions",
                headers={"authorization": f"Bearer {FAKE_TOKEN}", "connection": "close"},
                json={
                    "model": "gpt-test",
                    "stream": index % 2 == 0,
                    "messages": [{"role": "user", "content": "hi"}],
                },
                timeout=20,
            )
            assert reply.status_code == 200
        # A request is counted when its handling ends, which can come a moment after the
        # caller read its last byte: a scrape right after may still miss the last one.
        deadline = time.monotonic() + 10
        while True:
            text = client.get(f"{url}/metrics").text
            requests = samples(text, "llm_proxy_requests_total")
            key = (("refusal", ""), ("route", "default"), ("status", "200"))
            if requests.get(key) == sent or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    assert requests[key] == sent
    tokens = samples(text, "llm_proxy_tokens_total")
    ledger = UsageLedger(open_store(store_url))
    [row] = ledger.rows(by="model")
    assert row.requests == sent
    assert (
        tokens[(("model", "gpt-test"), ("route", "default"), ("type", "input"))] == row.input_tokens
    )
    assert (
        tokens[(("model", "gpt-test"), ("route", "default"), ("type", "output"))]
        == row.output_tokens
    )
