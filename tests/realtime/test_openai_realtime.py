"""OpenAI Realtime through the proxy with the real `openai` SDK (`client.realtime.connect`),
over real sockets: proxy and fake upstream both on uvicorn."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
import websockets
from openai import AsyncOpenAI

from core.access.tokens import create_token
from core.app import create_app
from core.config import load_settings
from core.stores import open_store
from core.usage.ledger import UsageLedger
from tests.support.fake_realtime import FakeRealtime
from tests.support.realtime import ProxyFactory, eventually
from tests.support.servers import FAKE_TOKEN, FAKE_UPSTREAM_KEY, RunningServer, proxy_env


def ws_url(http_url: str) -> str:
    return "ws" + http_url[4:]


async def read_until(connection: Any, kind: str) -> dict[str, Any]:
    while True:
        event = json.loads(await asyncio.wait_for(connection.recv_bytes(), 5))
        if event.get("type") == kind:
            return event  # type: ignore[no-any-return]


async def test_sdk_session_relays_frames_and_reports_usage(
    start_proxy: ProxyFactory, upstream: FakeRealtime
) -> None:
    with start_proxy() as proxy:
        client = AsyncOpenAI(base_url=f"{proxy.url}/v1", api_key=FAKE_TOKEN)
        async with client.realtime.connect(model="gpt-realtime") as connection:
            created = await read_until(connection, "session.created")
            assert created["session"]["model"] == "fake"
            item = {
                "type": "conversation.item.create",
                "item": {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "héllo"}],
                },
            }
            await connection.send(item)  # type: ignore[arg-type]
            echoed = await read_until(connection, "conversation.item.create")
            assert echoed["item"]["content"][0]["text"] == "héllo"
            await connection.send({"type": "response.create"})
            done = await read_until(connection, "response.done")
            assert done["response"]["usage"]["output_tokens"] == 20
    seen = upstream.sessions[-1]
    assert seen["path"] == "/v1/realtime"
    assert seen["query"] == {"model": ["gpt-realtime"]}
    # The real key upstream; the caller's token never.
    assert seen["headers"]["authorization"] == f"Bearer {FAKE_UPSTREAM_KEY}"
    assert FAKE_TOKEN not in json.dumps(seen["headers"])


async def test_openai_prefix_route_and_binary_frames(
    start_proxy: ProxyFactory, upstream: FakeRealtime
) -> None:
    with start_proxy() as proxy:
        url = ws_url(proxy.url) + "/openai/v1/realtime?model=gpt-realtime"
        headers = {"Authorization": f"Bearer {FAKE_TOKEN}"}
        async with websockets.connect(url, additional_headers=headers) as socket:
            json.loads(await socket.recv())  # session.created
            await socket.send(b"\x00\x01binary\xff")
            assert await socket.recv() == b"\x00\x01binary\xff"
            await socket.send("plain text, not JSON")
            assert await socket.recv() == "plain text, not JSON"
        await eventually(lambda: upstream.sessions[-1].get("closed_with") is not None)
    seen = upstream.sessions[-1]
    assert seen["path"] == "/v1/realtime"
    # The caller who left closed the upstream with its own code.
    assert seen["closed_with"] == 1000


async def test_a_wrong_token_is_refused_before_the_upgrade(
    start_proxy: ProxyFactory, upstream: FakeRealtime
) -> None:
    with start_proxy() as proxy:
        client = AsyncOpenAI(base_url=f"{proxy.url}/v1", api_key="not-the-token-0123456789")
        with pytest.raises(Exception) as caught:
            async with client.realtime.connect(model="gpt-realtime"):
                pass
        assert "401" in str(caught.value)
        # Seen as HTTP: the status and a JSON error in OpenAI's shape.
        url = ws_url(proxy.url) + "/v1/realtime?model=gpt-realtime"
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(url, additional_headers={"Authorization": "Bearer nope"})
        response = refused.value.response
        assert response.status_code == 401
        assert json.loads(response.body)["error"]["code"] == "invalid_api_key"
    assert upstream.sessions == []


async def test_an_upstream_close_code_reaches_the_caller(
    start_proxy: ProxyFactory, upstream: FakeRealtime
) -> None:
    with start_proxy() as proxy:
        url = ws_url(proxy.url) + "/v1/realtime?model=gpt-realtime"
        headers = {"Authorization": f"Bearer {FAKE_TOKEN}"}
        async with websockets.connect(url, additional_headers=headers) as socket:
            await socket.recv()
            await socket.send(json.dumps({"type": "test.close", "code": 4001, "reason": "bye"}))
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(socket.recv(), 5)
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4001, "bye")


async def test_the_session_time_limit_closes_with_a_reason(
    start_proxy: ProxyFactory, upstream: FakeRealtime
) -> None:
    with start_proxy(REALTIME_MAX_SECONDS="0.5") as proxy:
        url = ws_url(proxy.url) + "/v1/realtime?model=gpt-realtime"
        headers = {"Authorization": f"Bearer {FAKE_TOKEN}"}
        async with websockets.connect(url, additional_headers=headers) as socket:
            await socket.recv()
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(socket.recv(), 5)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1008
        assert "REALTIME_MAX_SECONDS" in closed.value.rcvd.reason


async def test_model_scope_and_token_limit_settle_to_metered_usage(
    start_proxy: ProxyFactory, upstream: FakeRealtime, tmp_path: Any
) -> None:
    store_url = f"sqlite:///{tmp_path}/tokens.db"
    store = open_store(store_url)
    token, _ = create_token(store, "realtime-only", models=("gpt-realtime",))
    with start_proxy(
        TOKEN_STORE=store_url, RATE_LIMIT_TOKENS="100000", REALTIME_RESERVE_TOKENS="30000"
    ) as proxy:
        base = ws_url(proxy.url) + "/v1/realtime"
        headers = {"Authorization": f"Bearer {token}"}
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(base + "?model=gpt-4o", additional_headers=headers)
        assert refused.value.response.status_code == 403
        assert b"gpt-4o" in refused.value.response.body
        async with websockets.connect(
            base + "?model=gpt-realtime", additional_headers=headers
        ) as socket:
            await socket.recv()
            # While the session runs, its reservation counts against the limit.
            usage = httpx.get(f"{proxy.url}/v1/models", headers=headers)
            assert int(usage.headers["x-ratelimit-remaining-tokens"]) <= 70_000
            await socket.send(json.dumps({"type": "response.create"}))
            await socket.recv()
            await socket.recv()  # response.done
        # Settled: only the metered 70 tokens stay counted.
        await eventually(lambda: tokens_left(proxy, headers) == 100_000 - 70)
        after = httpx.get(f"{proxy.url}/v1/models", headers=headers)
        assert int(after.headers["x-ratelimit-remaining-tokens"]) == 100_000 - 70


async def test_an_upgrade_on_the_http_path_points_to_ephemeral_keys() -> None:
    # What a function platform (Lambda, Vercel, Cloud Run functions) hands the proxy: an
    # ordinary HTTP request that asks for a WebSocket.
    app = create_app(load_settings(proxy_env("http://127.0.0.1:9")))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://proxy") as client:
        reply = await client.get(
            "/v1/realtime?model=gpt-realtime",
            headers={
                "Authorization": f"Bearer {FAKE_TOKEN}",
                "Upgrade": "websocket",
                "Connection": "Upgrade",
            },
        )
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["code"] == "websocket_unsupported"
    assert "/v1/realtime/client_secrets" in error["message"]


async def test_a_budget_reserves_up_front_and_the_ledger_records_the_session(
    start_proxy: ProxyFactory, upstream: FakeRealtime, tmp_path: Any
) -> None:
    usage_url = f"sqlite:///{tmp_path}/usage.db"
    prices = json.dumps({"gpt-realtime*": {"input": 32, "output": 64, "cached_input": 0.4}})
    with start_proxy(
        BUDGET_PER_CALLER_USD="5", MODEL_PRICES=prices, USAGE_STORE=usage_url
    ) as proxy:
        headers = {"Authorization": f"Bearer {FAKE_TOKEN}"}
        base = ws_url(proxy.url) + "/v1/realtime"
        # No price, no session: a budget never counts a model as free.
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(base + "?model=unpriced-model", additional_headers=headers)
        assert refused.value.response.status_code == 403
        async with websockets.connect(
            base + "?model=gpt-realtime", additional_headers=headers
        ) as socket:
            await socket.recv()
            held = httpx.get(f"{proxy.url}/proxy/usage", headers=headers).json()
            # REALTIME_RESERVE_TOKENS (20,000) output tokens at $64 per million.
            assert held["spent_usd"] == pytest.approx(1.28)
            await socket.send(json.dumps({"type": "response.create"}))
            await socket.recv()
            await socket.recv()
        await eventually(
            lambda: (
                httpx.get(f"{proxy.url}/proxy/usage", headers=headers).json()["output_tokens"] == 20
            )
        )
        figures = httpx.get(f"{proxy.url}/proxy/usage", headers=headers).json()
    assert (figures["input_tokens"], figures["output_tokens"]) == (50, 20)
    assert figures["spent_usd"] == pytest.approx((42 * 32 + 8 * 0.4 + 20 * 64) / 1e6, abs=1e-5)
    (row,) = UsageLedger(open_store(usage_url)).rows(by="model")
    assert (row.key, row.input_tokens, row.output_tokens, row.cached_input_tokens) == (
        "gpt-realtime",
        50,
        20,
        8,
    )


async def test_a_session_that_uses_its_reservation_is_closed(
    start_proxy: ProxyFactory, upstream: FakeRealtime
) -> None:
    with start_proxy(RATE_LIMIT_TOKENS="100000", REALTIME_RESERVE_TOKENS="60") as proxy:
        url = ws_url(proxy.url) + "/v1/realtime?model=gpt-realtime"
        headers = {"Authorization": f"Bearer {FAKE_TOKEN}"}
        async with websockets.connect(url, additional_headers=headers) as socket:
            await socket.recv()
            await socket.send(json.dumps({"type": "response.create"}))
            await socket.recv()
            # The response that passed the reservation still arrives whole, then the close.
            assert json.loads(await socket.recv())["type"] == "response.done"
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(socket.recv(), 5)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1008
        assert "REALTIME_RESERVE_TOKENS" in closed.value.rcvd.reason
        await eventually(lambda: tokens_left(proxy, headers) == 100_000 - 70)
        after = httpx.get(f"{proxy.url}/v1/models", headers=headers)
        # Settled to what was metered, past the reservation by one response at most.
        assert int(after.headers["x-ratelimit-remaining-tokens"]) == 100_000 - 70


async def test_provider_refusals_and_outages_reach_the_caller_as_statuses(
    start_proxy: ProxyFactory, upstream: FakeRealtime
) -> None:
    headers = {"Authorization": f"Bearer {FAKE_TOKEN}"}
    with start_proxy(OPENAI_API_KEY="sk-not-the-key-the-fake-wants") as proxy:
        url = ws_url(proxy.url) + "/openai/v1/realtime?model=gpt-realtime"
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(url, additional_headers=headers)
        assert refused.value.response.status_code == 401
        body = json.loads(refused.value.response.body)["error"]
        assert body["code"] == "upstream_refused_session"
        assert "sk-not-the-key" not in refused.value.response.body.decode()
    with start_proxy(OPENAI_UPSTREAM="http://127.0.0.1:9") as proxy:
        url = ws_url(proxy.url) + "/openai/v1/realtime?model=gpt-realtime"
        with pytest.raises(websockets.InvalidStatus) as down:
            await websockets.connect(url, additional_headers=headers)
        assert down.value.response.status_code == 502


async def test_a_caller_close_code_reaches_the_upstream(
    start_proxy: ProxyFactory, upstream: FakeRealtime
) -> None:
    with start_proxy() as proxy:
        url = ws_url(proxy.url) + "/v1/realtime?model=gpt-realtime"
        headers = {"Authorization": f"Bearer {FAKE_TOKEN}"}
        async with websockets.connect(url, additional_headers=headers) as socket:
            await socket.recv()
            await socket.close(code=4002, reason="done here")
        await eventually(lambda: upstream.sessions[-1].get("closed_with") == 4002)
    assert upstream.sessions[-1]["closed_with"] == 4002


def tokens_left(proxy: RunningServer, headers: dict[str, str]) -> int:
    reply = httpx.get(f"{proxy.url}/v1/models", headers=headers)
    return int(reply.headers["x-ratelimit-remaining-tokens"])
