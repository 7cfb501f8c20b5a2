"""The mock upstream as a package: runnable alone, and a new surface is one route line."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from core.devtools import mock_upstream
from core.devtools.mock_upstream import MockUpstream, route
from core.devtools.mock_upstream.framing import Reply
from core.devtools.mock_upstream.knobs import Knobs
from tests.support.servers import PYTHON, free_port, run_process


def test_python_dash_m_serves_the_mock() -> None:
    port = free_port()
    args = [PYTHON, "-m", "core.devtools.mock_upstream", "--port", str(port), "--chunks", "3"]
    url = f"http://127.0.0.1:{port}"
    with run_process(args, {}, f"{url}/_mock/requests"):
        reply = httpx.post(
            f"{url}/v1/chat/completions",
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
        )
    assert reply.status_code == 200
    assert reply.json()["choices"][0]["message"]["content"] == "Hello from the"


async def test_a_new_surface_is_one_line_in_the_route_table(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def ping(request: dict[str, Any], knobs: Knobs, reply: Reply) -> None:
        await reply.json(200, {"pong": request.get("n"), "chunks": knobs.chunks})

    routes = [route("/vendor/ping", ping), *mock_upstream.ROUTES]
    monkeypatch.setattr("core.devtools.mock_upstream.app.ROUTES", routes)
    transport = httpx.ASGITransport(app=MockUpstream())
    async with httpx.AsyncClient(transport=transport, base_url="http://mock") as client:
        pong = await client.post("/v1/vendor/ping", json={"n": 7}, headers={"x-mock-chunks": "2"})
        chat = await client.post("/v1/chat/completions", json={"messages": []})
        missing = await client.post("/v1/nothing/here", json={})
    assert pong.json() == {"pong": 7, "chunks": 2}
    assert chat.json()["object"] == "chat.completion"
    assert missing.status_code == 404
