"""Debian's real Prometheus server scrapes `llm-proxy serve --workers 2` under load (with a
METRICS_TOKEN, as a remote scraper would present it), and its HTTP query API reads back the
same counts the usage ledger recorded. Needs `make prometheus-server` (the Debian package)."""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from core.stores import open_store
from core.usage.ledger import UsageLedger
from tests.support.servers import (
    FAKE_TOKEN,
    PYTHON,
    RunningServer,
    free_port,
    proxy_env,
    run_process,
    stop_process,
)

PROMETHEUS = "/usr/bin/prometheus"
METRICS_TOKEN = "fake-metrics-token-for-prometheus"


@contextlib.contextmanager
def prometheus_scraping(target: str, workdir: Path) -> Iterator[str]:
    if not Path(PROMETHEUS).exists():
        raise RuntimeError(
            "prometheus is not installed: run `make prometheus-server` (Debian package)"
        )
    (workdir / "token").write_text(METRICS_TOKEN)
    config = workdir / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
        "scrape_configs:\n  - job_name: llm-proxy\n"
        f"    authorization:\n      credentials_file: {workdir / 'token'}\n"
        f"    static_configs:\n      - targets: ['{target}']\n"
    )
    port = free_port()
    process = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and process.poll() is None, (
                "prometheus did not start"
            )
            time.sleep(0.1)
        yield url
    finally:
        stop_process(process)  # type: ignore[arg-type]


def query(prometheus: str, expression: str) -> float | None:
    reply = httpx.get(f"{prometheus}/api/v1/query", params={"query": expression}, timeout=5).json()
    result = reply["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def test_prometheus_reads_back_the_ledgers_counts(
    mock_upstream: RunningServer, tmp_path: Path
) -> None:
    port = free_port()
    store_url = f"sqlite:///{tmp_path}/usage.db"
    env = proxy_env(mock_upstream.url, USAGE_STORE=store_url, METRICS_TOKEN=METRICS_TOKEN)
    proxy = f"http://127.0.0.1:{port}"
    args = [PYTHON, "-m", "core.cli", "serve", "--workers", "2", "--port", str(port)]
    sent = 60
    with (
        run_process(args, env, f"{proxy}/health"),
        prometheus_scraping(f"127.0.0.1:{port}", tmp_path) as prom,
    ):
        # Load: four callers at once, streamed and whole replies, while Prometheus scrapes.
        def caller(count: int) -> None:
            with httpx.Client(timeout=20) as client:
                for index in range(count):
                    reply = client.post(
                        f"{proxy}/v1/chat/completions",
                        headers={"authorization": f"Bearer {FAKE_TOKEN}"},
                        json={
                            "model": "gpt-test",
                            "stream": index % 2 == 0,
                            "messages": [{"role": "user", "content": "hi"}],
                        },
                    )
                    assert reply.status_code == 200

        threads = [threading.Thread(target=caller, args=(sent // 4,)) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        ledger = UsageLedger(open_store(store_url))
        deadline = time.monotonic() + 20
        while True:  # the ledger writes in the background: wait for all of them
            rows = ledger.rows(by="model")
            if rows and rows[0].requests == sent:
                break
            assert time.monotonic() < deadline, rows
            time.sleep(0.1)
        [row] = rows
        requests = 'sum(llm_proxy_requests_total{route="default",status="200"})'
        deadline = time.monotonic() + 20
        while query(prom, requests) != sent:  # the next scrapes see the last requests
            assert time.monotonic() < deadline, query(prom, requests)
            time.sleep(0.2)
        assert query(prom, 'sum(llm_proxy_tokens_total{type="input"})') == row.input_tokens
        assert query(prom, 'sum(llm_proxy_tokens_total{type="output"})') == row.output_tokens
        assert query(prom, "up") == 1
