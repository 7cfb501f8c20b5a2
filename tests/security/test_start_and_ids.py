"""Start-up with an unopenable store, and the request id a caller sees (issue 11, finding 10)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import respx

from core.app import MisconfiguredApp, create_app
from core.config import ConfigError, load_settings
from tests.support.servers import FAKE_TOKEN, FAKE_UPSTREAM_KEY

UPSTREAM = "https://api.upstream.test/v1"


def env(**extra: str) -> dict[str, str]:
    return {
        "UPSTREAM_BASE_URL": UPSTREAM,
        "UPSTREAM_API_KEY": FAKE_UPSTREAM_KEY,
        "PROXY_ACCESS_TOKEN": FAKE_TOKEN,
        "UPSTREAM_TRANSPORT": "httpx",
        "ACCESS_LOG": "false",
        **extra,
    }


def client(app: object) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url="http://proxy.test")


@pytest.mark.parametrize("variable", ["TOKEN_STORE", "LIMIT_STORE"])
async def test_sqlite_store_in_a_missing_directory_is_a_500_naming_the_variable(
    tmp_path: Path, variable: str
) -> None:
    """`sqlite3.OperationalError: unable to open database file` crashed create_app."""
    url = f"sqlite:///{tmp_path}/no-such-dir/store.db"
    app = create_app(load_settings(env(**{variable: url, "RATE_LIMIT_REQUESTS": "5"})))
    assert isinstance(app, MisconfiguredApp)
    async with client(app) as proxy:
        response = await proxy.get("/v1/models", headers={"authorization": f"Bearer {FAKE_TOKEN}"})
    assert response.status_code == 500
    message = response.json()["error"]["message"]
    assert variable in message
    assert str(tmp_path) not in message


@pytest.mark.parametrize("variable", ["TOKEN_STORE", "LIMIT_STORE"])
def test_store_port_out_of_range_is_a_config_problem(variable: str) -> None:
    """`redis://host:99999` raised ValueError("Port out of range") out of create_app."""
    with pytest.raises(ConfigError) as caught:
        load_settings(
            env(**{variable: "redis://:s3cret@redis.test:99999/0", "RATE_LIMIT_REQUESTS": "5"})
        )
    assert any(variable in problem for problem in caught.value.problems)
    assert "s3cret" not in str(caught.value)


def test_environment_with_an_unopenable_store_serves_the_500(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in env(TOKEN_STORE=f"sqlite:///{tmp_path}/missing/t.db").items():
        monkeypatch.setenv(name, value)
    assert isinstance(create_app(), MisconfiguredApp)


@respx.mock
async def test_upstream_request_id_header_does_not_duplicate_ours() -> None:
    respx.get(f"{UPSTREAM}/models").respond(
        200, json={}, headers={"X-Proxy-Request-Id": "forged-by-upstream"}
    )
    async with client(create_app(load_settings(env()))) as proxy:
        response = await proxy.get("/v1/models", headers={"authorization": f"Bearer {FAKE_TOKEN}"})
    assert response.status_code == 200
    ids = response.headers.get_list("x-proxy-request-id")
    assert len(ids) == 1, ids
    assert ids[0] != "forged-by-upstream"


def test_check_reports_an_unopenable_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`serve` refuses such a store and points at `llm-proxy check`, which said "ok"."""
    from core.cli import main

    for name, value in env(TOKEN_STORE=f"sqlite:///{tmp_path}/missing/t.db").items():
        monkeypatch.setenv(name, value)
    assert main(["check"]) == 1
    assert "error: TOKEN_STORE could not be opened" in capsys.readouterr().out
