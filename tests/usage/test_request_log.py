"""The ledger's request log: bounded per store whatever the traffic, filtered as the
dashboard filters it, percentiles by nearest rank; `llm-proxy usage --requests` prints the
figures the dashboard's Requests page shows."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from core.app import create_app
from core.cli import main
from core.config import load_settings
from core.stores import open_store
from core.telemetry.request_log import UNIDENTIFIED_PER_MINUTE
from core.usage import ledger as ledger_module
from core.usage.cli import requests_report
from core.usage.ledger import RequestEntry, UsageLedger, percentiles, request_figures


def entry(at: float, **fields: object) -> RequestEntry:
    values: dict[str, object] = {
        "caller": "web",
        "provider": "openai",
        "model": "gpt-4o",
        "status": 200,
        "latency_ms": 100.0,
        "first_byte_ms": 20.0,
    }
    values.update(fields)
    return RequestEntry(at=at, **values)  # type: ignore[arg-type]


def test_the_log_keeps_the_latest_within_its_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ledger_module, "REQUEST_LOG_SIZE", 5)
    ledger = UsageLedger(open_store(f"sqlite:///{tmp_path}/log.db"))
    now = 1_800_000_000.0
    for index in range(12):
        ledger.record_request(entry(now + index, request_id=f"r{index}"))
    kept = ledger.recent_requests(limit=100)
    assert [e.request_id for e in kept] == ["r11", "r10", "r9", "r8", "r7"]
    assert len(ledger.store.scan(ledger_module.REQUEST_PREFIX)) == 5


def test_filters_by_caller_model_status_class_and_refusal() -> None:
    entries = [
        entry(1, caller="web", status=200),
        entry(2, caller="app", model="claude", status=429, refusal="rate_limited"),
        entry(3, caller="app", status=502),
    ]

    def matching(**filters: str) -> list[float]:
        values = {"caller": "", "model": "", "status": "", **filters}
        return [e.at for e in entries if e.matches(**values)]

    assert matching(caller="app") == [2, 3]
    assert matching(model="claude") == [2]
    assert matching(status="4xx") == [2]
    assert matching(status="5xx") == [3]
    assert matching(status="rate_limited") == [2]
    assert matching(status="200") == [1]


def test_percentiles_by_nearest_rank_of_forwarded_requests() -> None:
    assert percentiles([float(v) for v in range(1, 101)]) == {"p50": 50, "p90": 90, "p99": 99}
    assert percentiles([7.0]) == {"p50": 7, "p90": 7, "p99": 7}
    assert percentiles([]) == {}
    figures = request_figures(
        [
            entry(1, latency_ms=100.0),
            entry(2, latency_ms=0.1, status=401, refusal="invalid_api_key"),
            entry(3, latency_ms=0.2, cache="hit"),
        ]
    )
    assert figures["requests"] == 3
    assert figures["latency_ms"] == {"p50": 100.0, "p90": 100.0, "p99": 100.0}


def test_usage_requests_command_prints_the_dashboards_figures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path}/log.db"
    ledger = UsageLedger(open_store(url))
    ledger.record_request(entry(1_800_000_000, caller="app", input_tokens=12, output_tokens=30))
    ledger.record_request(entry(1_800_000_001, status=429, refusal="rate_limited", latency_ms=1.0))
    assert main(["usage", "--store", url, "--requests", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(json.dumps(requests_report(ledger, limit=50)))
    assert [row["status"] for row in printed["requests"]] == [429, 200]
    assert main(["usage", "--store", url, "--requests", "--status", "4xx"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("1 requests; latency p50/p90/p99 ms: -")
    assert "429 rate_limited" in table[1] and len(table) == 2


def test_strangers_cannot_push_the_real_requests_out_of_the_log(tmp_path: Path) -> None:
    """A 401 is anyone on the internet: at most UNIDENTIFIED_PER_MINUTE of them a minute are
    written, so the ring keeps the callers' own requests (and stores are not written on
    a stranger's behalf without end)."""
    from tests.support.scripted_upstream import ScriptedUpstream
    from tests.support.servers import FAKE_TOKEN, proxy_env, serve_in_thread

    url = f"sqlite:///{tmp_path}/usage.db"
    reply = json.dumps({"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1}})
    upstream = ScriptedUpstream(
        lambda r: (200, [("content-type", "application/json")], [(0, reply.encode())])
    )
    with serve_in_thread(upstream) as up:
        app = create_app(load_settings(proxy_env(up.url, USAGE_STORE=url)))
        with serve_in_thread(app) as proxy, httpx.Client(base_url=proxy.url) as client:
            body = {"model": "m", "messages": []}
            for _ in range(UNIDENTIFIED_PER_MINUTE + 20):
                stranger = {"Authorization": "Bearer not-a-token-of-this-proxy"}
                assert (
                    client.post("/v1/chat/completions", json=body, headers=stranger).status_code
                    == 401
                )
            own = {"Authorization": f"Bearer {FAKE_TOKEN}"}
            assert client.post("/v1/chat/completions", json=body, headers=own).status_code == 200
    ledger = UsageLedger(open_store(url))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not any(
        e.status == 200 for e in ledger.recent_requests()
    ):
        time.sleep(0.05)  # written in the background
    entries = ledger.recent_requests()
    assert [e.status for e in entries].count(401) <= UNIDENTIFIED_PER_MINUTE
    assert [e.status for e in entries].count(200) == 1
