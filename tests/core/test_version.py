"""One version, written once (core/__init__.py), seen everywhere an operator looks."""

from __future__ import annotations

import importlib.metadata
import json
import logging
import pathlib
import subprocess
import sys

import httpx
import pytest

from core import __version__
from core.app import create_app
from core.config import load_settings
from tests.support.servers import FAKE_TOKEN, FAKE_UPSTREAM_KEY, proxy_env

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_the_cli_prints_the_installed_version() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "core.cli", "--version"], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == f"llm-proxy {__version__}"
    # The package metadata pip installed reads the same attribute.
    assert importlib.metadata.version("llm-proxy") == __version__


def test_the_changelog_has_a_section_for_this_version() -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert f"## [{__version__}]" in changelog


async def test_health_names_the_version_and_nothing_of_the_configuration() -> None:
    app = create_app(load_settings(proxy_env("http://127.0.0.1:9/v1")))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://proxy") as client:
        reply = await client.get("/health")
    assert reply.json() == {"status": "ok", "version": __version__}
    assert "127.0.0.1" not in reply.text


def test_the_access_log_starts_with_the_version_and_the_routes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = logging.getLogger("llm_proxy")
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger="llm_proxy"):
            create_app(load_settings(proxy_env("http://127.0.0.1:9/v1", ACCESS_LOG="true")))
    finally:
        logger.removeHandler(caplog.handler)
    starts = [
        json.loads(record.getMessage())
        for record in caplog.records
        if record.name == "llm_proxy.access" and '"event": "start"' in record.getMessage()
    ]
    assert len(starts) == 1
    assert starts[0]["version"] == __version__
    assert "default" in starts[0]["routes"]
    assert starts[0]["prefixes"][starts[0]["routes"].index("default")] == "/v1"
    assert FAKE_TOKEN not in caplog.text and FAKE_UPSTREAM_KEY not in caplog.text
