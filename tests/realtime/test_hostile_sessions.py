"""Realtime sessions against a hostile caller (issue 19, classes 1 and 2), over real sockets:
the proxy and the fake provider both on uvicorn, the caller a plain `websockets` client.

A session is a request that lasts: one checked model, frames bounded by the proxy, and
the kill switch, revocation and the per-caller cap reaching it while it is open."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from core.access.status import ServiceStatus
from core.access.tokens import create_token, revoke_token
from core.stores import open_store
from tests.support.fake_realtime import LIVE_PATH, FakeRealtime
from tests.support.realtime import ProxyFactory, eventually
from tests.support.servers import (
    FAKE_TOKEN,
    FAKE_UPSTREAM_KEY,
    RunningServer,
    free_port,
    http_entry,
    proxy_env,
    run_process,
    serve_in_thread,
)

AUTH = {"Authorization": f"Bearer {FAKE_TOKEN}"}


def ws_url(http_url: str) -> str:
    return "ws" + http_url[4:]


def scoped_token(tmp_path: Path, *models: str) -> tuple[str, str]:
    store_url = f"sqlite:///{tmp_path}/tokens.db"
    token, _ = create_token(open_store(store_url), "scoped", models=models)
    return store_url, token


# ---- class 1: one value checked, another forwarded ------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "model=gpt-realtime-mini&model=gpt-realtime",
        "model=gpt-realtime-mini&%6Dodel=gpt-realtime",
        "model=gpt-realtime-mini&MODEL=gpt-realtime",
        "model=gpt-realtime-mini&Model=gpt-realtime",
        "model=gpt-realtime-mini;model=gpt-realtime",
    ],
)
async def test_a_model_named_twice_in_the_query_is_refused(
    start_proxy: ProxyFactory, upstream: FakeRealtime, tmp_path: Path, query: str
) -> None:
    store_url, token = scoped_token(tmp_path, "gpt-realtime-mini")
    with start_proxy(TOKEN_STORE=store_url) as proxy:
        url = ws_url(proxy.url) + "/v1/realtime?" + query
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(url, additional_headers={"Authorization": f"Bearer {token}"})
    reply = refused.value.response
    assert reply.status_code == 400
    assert json.loads(reply.body)["error"]["code"] == "repeated_field"
    assert upstream.sessions == []  # the provider never saw the second model


@pytest.mark.parametrize(
    ("query", "status"),
    [
        # Azure reads the deployment: checked as the model, never beside another one.
        ("deployment=gpt-realtime", 403),
        ("model=gpt-realtime-mini&deployment=gpt-realtime", 400),
        ("deployment=gpt-realtime-mini&Deployment=gpt-realtime", 400),
        # A deployment in the path (what the proxy reads) and another in the query.
        ("deployments/gpt-realtime-mini/realtime?deployment=gpt-realtime", 400),
        ("deployments/gpt-realtime-mini/realtime?model=gpt-realtime", 400),
    ],
)
async def test_an_azure_deployment_is_the_model_checked(
    start_proxy: ProxyFactory,
    fake: tuple[FakeRealtime, RunningServer],
    upstream: FakeRealtime,
    tmp_path: Path,
    query: str,
    status: int,
) -> None:
    store_url, token = scoped_token(tmp_path, "gpt-realtime-mini")
    with start_proxy(
        TOKEN_STORE=store_url,
        AZURE_OPENAI_API_KEY="fake-azure-key",
        AZURE_OPENAI_UPSTREAM=fake[1].url,
    ) as proxy:
        path, _, query = query.rpartition("?")
        url = (
            f"{ws_url(proxy.url)}/azure/openai/{path or 'realtime'}?api-version=2025-04-01&{query}"
        )
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(url, additional_headers={"api-key": token})
    assert refused.value.response.status_code == status
    assert upstream.sessions == []


async def test_a_gemini_setup_naming_the_model_twice_is_refused(
    start_proxy: ProxyFactory, upstream: FakeRealtime, tmp_path: Path
) -> None:
    store_url, token = scoped_token(tmp_path, "gemini-live-*-flash*")
    # Pro first (unchecked to a first-wins reader), then flash (what a last-wins check saw).
    setup = (
        '{"setup": {"model": "models/gemini-live-2.5-pro", '
        '"model": "models/gemini-live-2.5-flash-preview"}}'
    )
    with start_proxy(TOKEN_STORE=store_url) as proxy:
        url = ws_url(proxy.url) + "/gemini" + LIVE_PATH + f"?key={token}"
        async with websockets.connect(url) as socket:
            await socket.send(setup)
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(socket.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    assert "more than once" in closed.value.rcvd.reason
    assert upstream.sessions == []


async def test_a_gemini_setup_naming_its_model_with_a_lone_surrogate_is_refused(
    start_proxy: ProxyFactory, upstream: FakeRealtime
) -> None:
    # `\\ud800` is valid JSON yet no Unicode text: nothing could send it on or key on it.
    with start_proxy() as proxy:
        url = ws_url(proxy.url) + "/gemini" + LIVE_PATH + f"?key={FAKE_TOKEN}"
        async with websockets.connect(url) as socket:
            await socket.send('{"setup": {"model": "models/gemini-live\\ud800"}}')
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(socket.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    assert "not Unicode" in closed.value.rcvd.reason
    assert upstream.sessions == []


async def test_a_second_setup_or_a_model_change_mid_session_is_refused(
    start_proxy: ProxyFactory, upstream: FakeRealtime
) -> None:
    with start_proxy() as proxy:
        url = ws_url(proxy.url) + "/gemini" + LIVE_PATH + f"?key={FAKE_TOKEN}"
        async with websockets.connect(url) as socket:
            await socket.send('{"setup": {"model": "models/gemini-live-2.5-flash-preview"}}')
            await asyncio.wait_for(socket.recv(), 5)  # setupComplete
            await socket.send('{"setup": {"model": "models/gemini-live-2.5-pro"}}')
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(socket.recv(), 5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
        url = ws_url(proxy.url) + "/v1/realtime?model=gpt-realtime-mini"
        async with websockets.connect(url, additional_headers=AUTH) as socket:
            await socket.recv()  # session.created
            update = {"type": "session.update", "session": {"model": "gpt-realtime"}}
            await socket.send(json.dumps(update))
            with pytest.raises(websockets.ConnectionClosed) as changed:
                await asyncio.wait_for(socket.recv(), 5)
        assert changed.value.rcvd is not None and changed.value.rcvd.code == 1008
        assert "model" in changed.value.rcvd.reason
    # Neither reached the provider.
    assert all("gemini-live-2.5-pro" not in str(s["received"]) for s in upstream.sessions)
    assert all("session.update" not in str(s["received"]) for s in upstream.sessions)


@pytest.mark.parametrize(
    "body",
    [
        {
            "bidiGenerateContentSetup": {"model": "models/gemini-live-2.5-flash-preview"},
            "bidi_generate_content_setup": {"model": "models/gemini-live-2.5-pro"},
        },
        {
            "bidiGenerateContentSetup": {
                "model": "models/gemini-live-2.5-flash-preview",
                "setup": {"model": "models/gemini-live-2.5-pro"},
            }
        },
    ],
)
async def test_a_gemini_mint_naming_a_second_model_is_refused(
    start_proxy: ProxyFactory, upstream: FakeRealtime, tmp_path: Path, body: object
) -> None:
    store_url, token = scoped_token(tmp_path, "gemini-live-*-flash*")
    with start_proxy(ALLOW_EPHEMERAL_KEYS="true", TOKEN_STORE=store_url) as proxy:
        reply = httpx.post(
            f"{proxy.url}/gemini/v1alpha/auth_tokens",
            headers={"x-goog-api-key": token},
            json=body,
        )
    assert reply.status_code == 400
    assert reply.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert upstream.minted == []


@pytest.mark.parametrize(
    ("path", "content_type", "body"),
    [
        ("/v1/realtime/client_secrets;x", "application/json", b"{}"),
        ("/v1/realtime/client_secrets/", "application/json", b"{}"),
        ("/v1/Realtime/Client_Secrets", "application/json", b"{}"),
        ("/v1/realtime/client%5Fsecrets", "application/json", b"{}"),
        ("/v1/realtime/clientSecrets", "application/json", b"{}"),
        ("/v1/realtime/calls", "application/sdp", b"v=0\r\n"),
        ("/v1/realtime/calls;x/", "application/sdp", b"v=0\r\n"),
        ("/v1/realtime?model=gpt-realtime", "application/sdp", b"v=0\r\n"),
        ("/v1/realtime/calls/rtc_1/accept", "application/json", b"{}"),
        ("/gemini/v1alpha/authTokens", "application/json", b"{}"),
        ("/gemini/v1alpha/auth_tokens;x", "application/json", b"{}"),
    ],
)
async def test_with_minting_off_every_session_creating_route_is_refused(
    start_proxy: ProxyFactory,
    upstream: FakeRealtime,
    path: str,
    content_type: str,
    body: bytes,
) -> None:
    with start_proxy() as proxy:
        reply = httpx.post(
            proxy.url + path,
            headers={**AUTH, "x-goog-api-key": FAKE_TOKEN, "content-type": content_type},
            content=body,
        )
    assert reply.status_code == 403
    assert "ALLOW_EPHEMERAL_KEYS" in reply.text
    assert upstream.minted == []


async def test_with_minting_on_a_webrtc_call_is_still_refused(
    start_proxy: ProxyFactory, upstream: FakeRealtime
) -> None:
    with start_proxy(ALLOW_EPHEMERAL_KEYS="true") as proxy:
        reply = httpx.post(
            f"{proxy.url}/v1/realtime/calls?model=gpt-realtime",
            headers={**AUTH, "content-type": "application/sdp"},
            content=b"v=0\r\n",
        )
    assert reply.status_code == 403
    assert "client_secrets" in reply.text
    assert upstream.minted == []


# ---- a model rule holds when no model is named ----------------------------------------

# Each rule that limits models: the deployment's list, or a model-scoped token.
MODEL_RULES = ["allowed-models", "scoped-token"]
LIVE_FLASH = "models/gemini-live-2.5-flash-preview"


@contextlib.contextmanager
def ruled_proxy(
    start_proxy: ProxyFactory, tmp_path: Path, rule: str, **extra: str
) -> Iterator[tuple[RunningServer, str]]:
    """A proxy whose rule admits gpt-realtime-mini and the Live flash models, and the
    credential to call it with."""
    models = ("gpt-realtime-mini", "gemini-live-*-flash*")
    if rule == "allowed-models":
        with start_proxy(ALLOWED_MODELS=",".join(models), **extra) as server:
            yield server, FAKE_TOKEN
        return
    store_url, token = scoped_token(tmp_path, *models)
    with start_proxy(TOKEN_STORE=store_url, **extra) as server:
        yield server, token


@pytest.mark.parametrize("rule", MODEL_RULES)
@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/realtime/client_secrets", b""),
        ("/v1/realtime/sessions", b""),
        ("/v1/realtime/transcription_sessions", b""),
        ("/v1/realtime/client_secrets", b"{}"),
        ("/gemini/v1alpha/auth_tokens", b""),
        ("/gemini/v1alpha/auth_tokens", b"{}"),
    ],
)
async def test_a_mint_naming_no_model_is_refused_under_a_model_rule(
    start_proxy: ProxyFactory,
    upstream: FakeRealtime,
    tmp_path: Path,
    rule: str,
    path: str,
    body: bytes,
) -> None:
    """An empty body let ALLOWED_MODELS through: the provider then minted a key for its
    default model, or (Gemini) a token for any Live model."""
    with ruled_proxy(start_proxy, tmp_path, rule, ALLOW_EPHEMERAL_KEYS="true") as (server, token):
        reply = httpx.post(
            server.url + path,
            headers={
                "Authorization": f"Bearer {token}",
                "x-goog-api-key": token,
                "content-type": "application/json",
            },
            content=body,
        )
    assert reply.status_code == 403, reply.text
    assert upstream.minted == []


@pytest.mark.parametrize("rule", MODEL_RULES)
@pytest.mark.parametrize("query", ["", "?model=", "?deployment="])
async def test_a_session_naming_no_model_is_refused_under_a_model_rule(
    start_proxy: ProxyFactory, upstream: FakeRealtime, tmp_path: Path, rule: str, query: str
) -> None:
    """Without ?model= the provider opens its default model."""
    with ruled_proxy(start_proxy, tmp_path, rule) as (server, token):
        url = ws_url(server.url) + "/v1/realtime" + query
        headers = {"Authorization": f"Bearer {token}"}
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(url, additional_headers=headers)
        assert refused.value.response.status_code == 403
        # The model it names is still admitted.
        url = ws_url(server.url) + "/v1/realtime?model=gpt-realtime-mini"
        async with websockets.connect(url, additional_headers=headers) as socket:
            await asyncio.wait_for(socket.recv(), 5)  # session.created
    assert [session["query"] for session in upstream.sessions] == [{"model": ["gpt-realtime-mini"]}]


@pytest.mark.parametrize("rule", MODEL_RULES)
@pytest.mark.parametrize(
    ("body", "minted"),
    [
        ({"bidiGenerateContentSetup": {"model": LIVE_FLASH}}, True),
        ({"bidiGenerateContentSetup": {"model": LIVE_FLASH}, "fieldMask": ""}, True),
        (
            {
                "bidiGenerateContentSetup": {"model": LIVE_FLASH, "temperature": 0.2},
                "fieldMask": "model,temperature",
            },
            True,
        ),
        # The mask keeps only the temperature: the holder's own setup names the model.
        (
            {
                "bidiGenerateContentSetup": {"model": LIVE_FLASH, "temperature": 0.2},
                "fieldMask": "temperature",
            },
            False,
        ),
        ({"bidiGenerateContentSetup": {"model": LIVE_FLASH}, "field_mask": "temperature"}, False),
        ({"bidiGenerateContentSetup": {"model": LIVE_FLASH}, "fieldMask": ["model"]}, False),
        # Named where the token service does not read it: not a constraint.
        ({"model": LIVE_FLASH}, False),
        ({"bidiGenerateContentSetup": {"setup": {"model": LIVE_FLASH}}}, False),
    ],
    ids=[
        "locked",
        "empty-mask",
        "mask-with-model",
        "mask-without-model",
        "snake-mask-without-model",
        "mask-not-a-string",
        "top-level-model",
        "nested-setup-model",
    ],
)
async def test_a_gemini_token_must_lock_its_model_under_a_model_rule(
    start_proxy: ProxyFactory,
    upstream: FakeRealtime,
    tmp_path: Path,
    rule: str,
    body: dict[str, object],
    minted: bool,
) -> None:
    with ruled_proxy(start_proxy, tmp_path, rule, ALLOW_EPHEMERAL_KEYS="true") as (server, token):
        reply = httpx.post(
            f"{server.url}/gemini/v1alpha/auth_tokens",
            headers={"x-goog-api-key": token},
            json=body,
        )
    if minted:
        assert reply.status_code == 200, reply.text
        assert len(upstream.minted) == 1
    else:
        assert reply.status_code == 403, reply.text
        assert reply.json()["error"]["status"] == "PERMISSION_DENIED"
        assert upstream.minted == []


async def test_without_a_model_rule_a_gemini_token_need_not_name_a_model(
    start_proxy: ProxyFactory, upstream: FakeRealtime
) -> None:
    with start_proxy(ALLOW_EPHEMERAL_KEYS="true") as proxy:
        reply = httpx.post(
            f"{proxy.url}/gemini/v1alpha/auth_tokens",
            headers={"x-goog-api-key": FAKE_TOKEN},
            json={"fieldMask": "temperature"},
        )
    assert reply.status_code == 200, reply.text
    assert len(upstream.minted) == 1


# ---- class 2: long-lived things outlive the rules -------------------------------------


async def test_the_kill_switch_closes_an_open_session(
    start_proxy: ProxyFactory, upstream: FakeRealtime, tmp_path: Path
) -> None:
    store_url = f"sqlite:///{tmp_path}/tokens.db"
    with start_proxy(
        TOKEN_STORE=store_url, TOKEN_CACHE_SECONDS="0.2", REALTIME_RECHECK_SECONDS="0.5"
    ) as proxy:
        url = ws_url(proxy.url) + "/v1/realtime?model=gpt-realtime"
        async with websockets.connect(url, additional_headers=AUTH) as socket:
            await socket.recv()  # session.created
            ServiceStatus(open_store(store_url)).set_online(False)
            started = asyncio.get_running_loop().time()
            with pytest.raises(websockets.ConnectionClosed) as closed:
                while True:  # frames still flow until the next check
                    await asyncio.wait_for(socket.recv(), 5)
            waited = asyncio.get_running_loop().time() - started
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
    assert "switched off" in closed.value.rcvd.reason
    assert waited < 3
    await eventually(lambda: upstream.sessions[-1]["closed_with"] is not None)


@pytest.mark.parametrize(
    "turn",
    [
        '{"type": "response.create"}',
        # `.` as a JSON escape: the provider decodes it to response.create.
        '{"type": "response\\u002ecreate"}',
    ],
)
async def test_a_turn_after_revocation_closes_the_session_at_once(
    start_proxy: ProxyFactory, upstream: FakeRealtime, tmp_path: Path, turn: str
) -> None:
    store_url = f"sqlite:///{tmp_path}/tokens.db"
    store = open_store(store_url)
    token, record = create_token(store, "revoked-mid-session")
    # The periodic check is far away: only the turn's own check can end it.
    with start_proxy(
        TOKEN_STORE=store_url, TOKEN_CACHE_SECONDS="0", REALTIME_RECHECK_SECONDS="600"
    ) as proxy:
        url = ws_url(proxy.url) + "/v1/realtime?model=gpt-realtime"
        headers = {"Authorization": f"Bearer {token}"}
        async with websockets.connect(url, additional_headers=headers) as socket:
            await socket.recv()  # session.created
            await socket.send(json.dumps({"type": "response.create"}))
            await socket.recv()  # response.created: allowed while the token is good
            await socket.recv()  # response.done
            revoke_token(store, record.id)
            await socket.send(turn)
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(socket.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    assert "not valid" in closed.value.rcvd.reason
    # The provider got one turn, not two: the first frame only.
    turns = [f for f in upstream.sessions[-1]["received"] if "response.create" in str(f)]
    assert len(turns) == 1
    assert len(upstream.sessions[-1]["received"]) == 1


async def test_a_revoked_token_loses_its_session_within_the_recheck_period(
    start_proxy: ProxyFactory, upstream: FakeRealtime, tmp_path: Path
) -> None:
    store_url = f"sqlite:///{tmp_path}/tokens.db"
    store = open_store(store_url)
    token, record = create_token(store, "quiet-session")
    with start_proxy(
        TOKEN_STORE=store_url, TOKEN_CACHE_SECONDS="0.2", REALTIME_RECHECK_SECONDS="0.5"
    ) as proxy:
        url = ws_url(proxy.url) + "/gemini" + LIVE_PATH + f"?key={token}"
        async with websockets.connect(url) as socket:
            await socket.send('{"setup": {"model": "models/gemini-live-2.5-flash-preview"}}')
            await asyncio.wait_for(socket.recv(), 5)  # setupComplete
            revoke_token(store, record.id)
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(socket.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


async def test_sessions_per_caller_are_capped(
    start_proxy: ProxyFactory, upstream: FakeRealtime, tmp_path: Path
) -> None:
    store_url, token = scoped_token(tmp_path)
    headers = {"Authorization": f"Bearer {token}"}
    with start_proxy(TOKEN_STORE=store_url, REALTIME_SESSIONS_PER_CALLER="2") as proxy:
        url = ws_url(proxy.url) + "/v1/realtime?model=gpt-realtime"
        first = await websockets.connect(url, additional_headers=headers)
        second = await websockets.connect(url, additional_headers=headers)
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(url, additional_headers=headers)
        assert refused.value.response.status_code == 429
        assert b"REALTIME_SESSIONS_PER_CALLER" in refused.value.response.body
        await first.close()

        # A closed session gives its place back.
        async def third_opens() -> bool:
            try:
                socket = await websockets.connect(url, additional_headers=headers)
            except websockets.InvalidStatus:
                return False
            await socket.close()
            return True

        deadline = asyncio.get_running_loop().time() + 5
        opened = await third_opens()
        while not opened and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.1)
            opened = await third_opens()
        assert opened
        await second.close()


@pytest.mark.parametrize("parser", ["httptools", "h11"])
async def test_websocket_sessions_count_against_max_connections(
    fake: tuple[FakeRealtime, RunningServer], upstream: FakeRealtime, parser: str
) -> None:
    port = free_port()
    env = proxy_env(
        fake[1].url,
        HOST="127.0.0.1",
        PORT=str(port),
        OPENAI_API_KEY=FAKE_UPSTREAM_KEY,
        OPENAI_UPSTREAM=fake[1].url,
        MAX_CONNECTIONS="3",
        REALTIME_SESSIONS_PER_CALLER="0",
    )
    url = f"http://127.0.0.1:{port}"
    with run_process(http_entry(parser), env, f"{url}/health"):
        opened = []
        refused = 0
        try:
            for _ in range(6):
                try:
                    socket = await websockets.connect(
                        ws_url(url) + "/v1/realtime?model=gpt-realtime", additional_headers=AUTH
                    )
                    opened.append(socket)
                except websockets.InvalidStatus as exc:
                    assert exc.response.status_code == 503
                    refused += 1
            assert (len(opened), refused) == (3, 3)
            assert len(upstream.sessions) == 3  # no upstream socket for a refused one
            # A Gemini Live handshake past the bound: Gemini's shape (main: OpenAI's).
            with pytest.raises(websockets.InvalidStatus) as live:
                await websockets.connect(
                    ws_url(url) + "/gemini" + LIVE_PATH,
                    additional_headers={"x-goog-api-key": FAKE_TOKEN},
                )
            assert live.value.response.status_code == 503
            error = json.loads(live.value.response.body)["error"]
            assert (error["code"], error["status"]) == (503, "UNAVAILABLE")
            # As the app's own 503 past the bound: server_overloaded, retried after a second
            # (main: a `bad_request` with no Retry-After).
            with pytest.raises(websockets.InvalidStatus) as over:
                await websockets.connect(
                    ws_url(url) + "/v1/realtime?model=gpt-realtime", additional_headers=AUTH
                )
            assert json.loads(over.value.response.body)["error"]["code"] == "server_overloaded"
            assert over.value.response.headers["retry-after"] == "1"
            assert "x-should-retry" not in over.value.response.headers
        finally:
            for socket in opened:
                await socket.close()


async def test_a_frame_over_the_proxy_bound_is_refused(
    start_proxy: ProxyFactory, upstream: FakeRealtime
) -> None:
    with start_proxy(MAX_BODY_BYTES=str(1024 * 1024)) as proxy:
        url = ws_url(proxy.url) + "/v1/realtime?model=gpt-realtime"
        async with websockets.connect(url, additional_headers=AUTH, max_size=None) as socket:
            await socket.recv()  # session.created
            await socket.send(b"x" * 1000)
            assert await socket.recv() == b"x" * 1000  # a small frame passes
            await socket.send(b"x" * (3 * 1024 * 1024))
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(socket.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    assert all(len(frame) < 1024 * 1024 for frame in upstream.sessions[-1]["received"])


# ---- what the provider reads, not what the proxy's substring test sees ------------------


@pytest.mark.parametrize(
    "frame",
    [
        # `.` written as a JSON escape: the provider decodes it to session.update.
        '{"type": "session\\u002eupdate", "session": {"model": "gpt-realtime"}}',
        # The key name escaped.
        '{"type": "session.update", "\\u0073ession": {"model": "gpt-realtime"}}',
    ],
)
async def test_an_escaped_model_change_is_refused(
    start_proxy: ProxyFactory, upstream: FakeRealtime, frame: str
) -> None:
    with start_proxy() as proxy:
        url = ws_url(proxy.url) + "/v1/realtime?model=gpt-realtime-mini"
        async with websockets.connect(url, additional_headers=AUTH) as socket:
            await socket.recv()  # session.created
            await socket.send(frame)
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(socket.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    assert all('gpt-realtime"' not in str(f) for f in upstream.sessions[-1]["received"])


@pytest.mark.parametrize(
    "second",
    [
        '{"\\u0073etup": {"model": "models/gemini-live-2.5-pro"}}',
        # JSON in UTF-16 (a decoder that detects the encoding reads it) hides every marker.
        '{"setup": {"model": "models/gemini-live-2.5-pro"}}'.encode("utf-16"),
    ],
)
async def test_an_escaped_second_gemini_setup_is_refused(
    start_proxy: ProxyFactory, upstream: FakeRealtime, second: str | bytes
) -> None:
    with start_proxy() as proxy:
        url = ws_url(proxy.url) + "/gemini" + LIVE_PATH + f"?key={FAKE_TOKEN}"
        async with websockets.connect(url) as socket:
            await socket.send('{"setup": {"model": "models/gemini-live-2.5-flash-preview"}}')
            await asyncio.wait_for(socket.recv(), 5)  # setupComplete
            await socket.send(second)
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(socket.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    assert all(len(s["received"]) <= 1 for s in upstream.sessions)  # the first setup only


# ---- the reply side of a session: the same rules as an HTTP reply -----------------------


async def test_the_providers_frames_and_close_reason_never_carry_the_key(
    start_proxy: ProxyFactory, upstream: FakeRealtime
) -> None:
    with start_proxy() as proxy:
        url = ws_url(proxy.url) + "/v1/realtime?model=gpt-realtime"
        async with websockets.connect(url, additional_headers=AUTH) as socket:
            await socket.recv()  # session.created
            await socket.send(json.dumps({"type": "test.quote_key"}))
            text = await asyncio.wait_for(socket.recv(), 5)
            binary = await asyncio.wait_for(socket.recv(), 5)
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(socket.recv(), 5)
    assert isinstance(text, str) and isinstance(binary, bytes)
    assert "bad key [redacted]" in text and b"bad key [redacted]" in binary
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4001
    # Masked as providers mask (`sk-**********real`): the mask and the last four go.
    assert closed.value.rcvd.reason.endswith("[redacted]")
    for seen in (text, binary.decode(), closed.value.rcvd.reason):
        assert FAKE_UPSTREAM_KEY not in seen and FAKE_UPSTREAM_KEY[-4:] not in seen


async def test_subprotocols_cannot_choose_the_account_billed(
    start_proxy: ProxyFactory, upstream: FakeRealtime
) -> None:
    offered = [
        "realtime",
        f"openai-insecure-api-key.{FAKE_TOKEN}",
        "openai-organization.org-someone-else",
        "OpenAI-Project.proj_other",
        "openai-beta.realtime-v1",
    ]
    with start_proxy() as proxy:
        url = ws_url(proxy.url) + "/v1/realtime?model=gpt-realtime"
        async with websockets.connect(url, subprotocols=offered) as socket:  # type: ignore[arg-type]
            await socket.recv()  # session.created
    # The browser's credential and both account selectors stay with the proxy, as their
    # header forms do on HTTP; a feature flag passes.
    assert upstream.sessions[-1]["subprotocols"] == ["realtime", "openai-beta.realtime-v1"]


@pytest.mark.parametrize(
    ("query", "headers", "offered"),
    [
        # The browser's credential subprotocol, and the same token in the query.
        (f"&t={FAKE_TOKEN}", {}, ["realtime", f"openai-insecure-api-key.{FAKE_TOKEN}"]),
        # The header slot, and the token again in another header: dropped, not refused.
        ("", {"authorization": f"Bearer {FAKE_TOKEN}", "x-auth-token": FAKE_TOKEN}, ["realtime"]),
        # The header slot, and the token again in another subprotocol (offered upstream
        # apart from the headers): dropped, as the header would be.
        ("", {"authorization": f"Bearer {FAKE_TOKEN}"}, ["realtime", f"x-note.{FAKE_TOKEN}"]),
        ("", {"authorization": f"Bearer {FAKE_TOKEN}"}, ["realtime", FAKE_TOKEN]),
    ],
)
async def test_a_sessions_credential_reaches_no_upstream_wherever_it_rides(
    start_proxy: ProxyFactory,
    upstream: FakeRealtime,
    query: str,
    headers: dict[str, str],
    offered: list[str],
) -> None:
    with start_proxy() as proxy:
        url = ws_url(proxy.url) + "/v1/realtime?model=gpt-realtime" + query
        try:
            async with websockets.connect(
                url,
                subprotocols=offered,  # type: ignore[arg-type]
                additional_headers=headers,
            ) as socket:
                await socket.recv()  # session.created
        except websockets.InvalidStatus as refused:
            # The token in the URL: refused at the handshake, in the route's shape.
            assert query
            assert refused.response.status_code == 400
            assert b"credential" in refused.response.body
        else:
            assert not query
    assert FAKE_TOKEN not in json.dumps(upstream.sessions)


async def test_a_caller_hanging_up_mid_response_is_charged_its_reservation(
    start_proxy: ProxyFactory, upstream: FakeRealtime
) -> None:
    prices = json.dumps({"gpt-realtime*": {"input": 32, "output": 64}})
    with start_proxy(
        BUDGET_PER_CALLER_USD="5", MODEL_PRICES=prices, REALTIME_RESERVE_TOKENS="10000"
    ) as proxy:
        url = ws_url(proxy.url) + "/v1/realtime?model=gpt-realtime"

        def spent() -> float:
            reply = httpx.get(f"{proxy.url}/proxy/usage", headers=AUTH)
            return float(reply.json()["spent_usd"])

        async with websockets.connect(url, additional_headers=AUTH) as socket:
            await socket.recv()  # session.created
            await socket.send(json.dumps({"type": "test.slow_response", "seconds": 3}))
            created = json.loads(await asyncio.wait_for(socket.recv(), 5))
            assert created["type"] == "response.created"
        # Gone before the response's usage: charged as an HTTP stream cut short is, its
        # whole reservation (10,000 output tokens at $64 per million), not nothing.
        await eventually(lambda: spent() > 0)
        assert spent() == pytest.approx(0.64)
        # A session whose responses all finished is charged what they reported.
        async with websockets.connect(url, additional_headers=AUTH) as socket:
            await socket.recv()
            await socket.send(json.dumps({"type": "response.create"}))
            await socket.recv()  # response.created
            await socket.recv()  # response.done
        await eventually(lambda: spent() > 0.641)
        assert spent() == pytest.approx(0.64 + (50 * 32 + 20 * 64) / 1e6, abs=1e-6)


# ---- a transcription model runs beside the session's: the same rules hold to it ----------


@pytest.mark.parametrize(
    "session",
    [
        {"audio": {"input": {"transcription": {"model": "gpt-4o-transcribe"}}}},
        {"input_audio_transcription": {"model": "gpt-4o-transcribe"}},
    ],
)
async def test_a_mint_naming_a_transcription_model_the_rules_refuse_is_refused(
    start_proxy: ProxyFactory, upstream: FakeRealtime, session: dict[str, object]
) -> None:
    with start_proxy(
        ALLOW_EPHEMERAL_KEYS="true", ALLOWED_MODELS="gpt-realtime*,gpt-4o-mini-transcribe"
    ) as proxy:
        url = f"{proxy.url}/v1/realtime/client_secrets"
        body = {"session": {"type": "realtime", "model": "gpt-realtime", **session}}
        refused = httpx.post(url, headers=AUTH, json=body)
        assert refused.status_code == 403, refused.text
        assert "gpt-4o-transcribe" in refused.json()["error"]["message"]
        assert upstream.minted == []
        allowed = json.loads(
            json.dumps(body).replace("gpt-4o-transcribe", "gpt-4o-mini-transcribe")
        )
        assert httpx.post(url, headers=AUTH, json=allowed).status_code == 200


@pytest.mark.parametrize("kind", ["session.update", "transcription_session.update"])
async def test_a_session_update_setting_a_transcription_model_out_of_scope_ends_the_session(
    start_proxy: ProxyFactory, upstream: FakeRealtime, tmp_path: Path, kind: str
) -> None:
    store_url, token = scoped_token(tmp_path, "gpt-realtime*", "gpt-4o-mini-transcribe")
    with start_proxy(TOKEN_STORE=store_url) as proxy:
        url = ws_url(proxy.url) + "/v1/realtime?model=gpt-realtime"
        headers = {"Authorization": f"Bearer {token}"}
        async with websockets.connect(url, additional_headers=headers) as socket:
            await socket.recv()  # session.created
            allowed = {"input_audio_transcription": {"model": "gpt-4o-mini-transcribe"}}
            await socket.send(json.dumps({"type": "session.update", "session": allowed}))
            assert "session.update" in await asyncio.wait_for(socket.recv(), 5)  # echoed
            dearer = {"audio": {"input": {"transcription": {"model": "gpt-4o-transcribe"}}}}
            await socket.send(json.dumps({"type": kind, "session": dearer}))
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(socket.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    assert "gpt-4o-transcribe" in closed.value.rcvd.reason
    assert all("gpt-4o-transcribe" not in str(f) for f in upstream.sessions[-1]["received"])


# ---- tools billed apart from tokens: a dollar budget reads a session's as a body's --------

PRICED = json.dumps(
    {"gemini-*": {"input": 1, "output": 1}, "gpt-realtime*": {"input": 1, "output": 1}}
)


@pytest.mark.parametrize("tools", [[{"googleSearch": {}}], [{"google_search_retrieval": {}}]])
async def test_a_dollar_budget_refuses_a_live_setup_that_turns_on_grounding(
    start_proxy: ProxyFactory, upstream: FakeRealtime, tools: list[object]
) -> None:
    """generateContent with Google Search was refused under a dollar budget (a grounded
    prompt bills per call, apart from the tokens); the same tool in a Live session's setup
    went through, and every turn's search was billed past the budget."""
    with start_proxy(BUDGET_PER_CALLER_USD="1", MODEL_PRICES=PRICED) as proxy:
        url = f"ws://127.0.0.1:{proxy.port}/gemini{LIVE_PATH}?key={FAKE_TOKEN}"
        model = "models/gemini-live-2.5-flash-preview"
        async with websockets.connect(url) as socket:
            await socket.send(json.dumps({"setup": {"model": model, "tools": tools}}))
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(socket.recv(), 5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
        assert next(iter(tools[0])) in closed.value.rcvd.reason  # type: ignore[call-overload]
        assert upstream.sessions == []
        # Function declarations (the caller runs them) cost tokens only: set up as before.
        functions = [{"functionDeclarations": [{"name": "f"}]}]
        async with websockets.connect(url) as socket:
            await socket.send(json.dumps({"setup": {"model": model, "tools": functions}}))
            assert json.loads(await asyncio.wait_for(socket.recv(), 5)) == {"setupComplete": {}}


@pytest.mark.parametrize(
    "frame",
    [
        # A tool type the list of token-billed ones does not hold (a later hosted tool).
        {"type": "session.update", "session": {"tools": [{"type": "web_search"}]}},
        # A stored prompt brings the tools set for it on the platform, unseen here.
        {"type": "session.update", "session": {"prompt": {"id": "pmpt_1"}}},
        # A response's own tools hold over the session's for that response.
        {"type": "response.create", "response": {"tools": [{"type": "web_search"}]}},
    ],
)
async def test_a_dollar_budget_ends_a_session_whose_frames_turn_on_priced_tools(
    start_proxy: ProxyFactory, upstream: FakeRealtime, frame: dict[str, object]
) -> None:
    with start_proxy(BUDGET_PER_CALLER_USD="5", MODEL_PRICES=PRICED) as proxy:
        url = ws_url(proxy.url) + "/v1/realtime?model=gpt-realtime"
        async with websockets.connect(url, additional_headers=AUTH) as socket:
            await socket.recv()  # session.created
            function = {"type": "function", "name": "f", "parameters": {}}
            allowed = {"type": "session.update", "session": {"tools": [function]}}
            await socket.send(json.dumps(allowed))
            assert "session.update" in await asyncio.wait_for(socket.recv(), 5)  # echoed
            await socket.send(json.dumps(frame))
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(socket.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    assert "caps spending in dollars" in closed.value.rcvd.reason
    received = [str(f) for f in upstream.sessions[-1]["received"]]
    assert all("web_search" not in f and "pmpt_1" not in f for f in received)


async def test_a_session_on_a_route_that_only_routes_by_model_is_a_404(
    fake: tuple[FakeRealtime, RunningServer], upstream: FakeRealtime
) -> None:
    """MODEL_ROUTES without UPSTREAM_BASE_URL: /v1 routes HTTP requests by their body's
    model and has no upstream of its own. A realtime session there was a 502 (a connect to
    no host), which SDKs retry; it is a 404 naming the routes that hold sessions."""
    from core.app import create_app
    from core.config import load_settings
    from tests.support.servers import serve_in_thread

    env = proxy_env(fake[1].url, OPENAI_API_KEY=FAKE_UPSTREAM_KEY, OPENAI_UPSTREAM=fake[1].url)
    env.pop("UPSTREAM_BASE_URL", None)
    env.pop("UPSTREAM_API_KEY", None)
    env["MODEL_ROUTES"] = "gpt-*=openai"
    with serve_in_thread(create_app(load_settings(env))) as proxy:
        url = ws_url(proxy.url) + "/v1/realtime?model=gpt-realtime"
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(url, additional_headers=AUTH)
    reply = refused.value.response
    assert reply.status_code == 404, reply.body
    assert "/openai/v1/realtime" in json.loads(reply.body)["error"]["message"]
    assert upstream.sessions == []


async def test_a_gemini_live_session_on_a_route_not_switched_on_is_gemini_s_404(
    fake: tuple[FakeRealtime, RunningServer], upstream: FakeRealtime
) -> None:
    """Without GEMINI_API_KEY, an HTTP request under /gemini is a 404 in Gemini's shape that
    names the setting; a Live session's handshake there was the same 404 in OpenAI's shape
    (the realtime endpoint kept its own default, not the shape the route lookup chose)."""
    from core.app import create_app
    from core.config import load_settings
    from tests.support.servers import serve_in_thread

    env = proxy_env(fake[1].url, OPENAI_API_KEY=FAKE_UPSTREAM_KEY, OPENAI_UPSTREAM=fake[1].url)
    with serve_in_thread(create_app(load_settings(env))) as proxy:
        url = ws_url(proxy.url) + "/gemini" + LIVE_PATH
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(url, additional_headers={"x-goog-api-key": FAKE_TOKEN})
        http = httpx.get(
            proxy.url + "/gemini/v1beta/models", headers={"x-goog-api-key": FAKE_TOKEN}
        )
    reply = refused.value.response
    assert reply.status_code == http.status_code == 404, reply.body
    error = json.loads(reply.body)["error"]
    assert error["status"] == "NOT_FOUND" and error["code"] == 404  # main: OpenAI's shape
    assert "GEMINI_API_KEY" in error["message"]
    assert json.loads(reply.body) == http.json()
    assert upstream.sessions == []


# ---- the provider's answer is the answer: no redirect followed --------------------------


class _Redirecting:
    """A provider host that answers every WebSocket handshake with a redirect to `to` (the
    fake provider, which records any session that reaches it)."""

    def __init__(self, to: str) -> None:
        self.to = to
        self.handshakes = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "websocket":
            return
        await receive()  # websocket.connect
        self.handshakes += 1
        query = scope["query_string"].decode()
        location = self.to + scope["path"] + (f"?{query}" if query else "")
        await send(
            {
                "type": "websocket.http.response.start",
                "status": 307,
                "headers": [(b"location", location.encode())],
            }
        )
        await send({"type": "websocket.http.response.body", "body": b""})


async def test_a_redirect_at_the_handshake_is_not_followed(
    start_proxy: ProxyFactory, upstream: FakeRealtime, fake: tuple[FakeRealtime, RunningServer]
) -> None:
    """On HTTP the proxy never follows a redirect; aiohttp's ws_connect follows up to ten,
    keeping `api-key` and `x-goog-api-key` on another origin: a provider URL that
    redirects (the caller chooses the path's end and the query) sent the session and the
    real key wherever the Location said. The handshake is the provider's answer: a 502."""
    redirecting = _Redirecting(fake[1].url)
    with (
        serve_in_thread(redirecting) as redirector,
        start_proxy(OPENAI_UPSTREAM=redirector.url, GEMINI_UPSTREAM=redirector.url) as proxy,
    ):
        url = ws_url(proxy.url) + "/openai/v1/realtime?model=gpt-realtime"
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(url, additional_headers=AUTH)
        assert refused.value.response.status_code == 502
        body = json.loads(refused.value.response.body)["error"]
        assert body["code"] == "upstream_refused_session"
        url = ws_url(proxy.url) + "/gemini" + LIVE_PATH + f"?key={FAKE_TOKEN}"
        async with websockets.connect(url) as socket:
            await socket.send('{"setup": {"model": "models/gemini-live-2.5-flash-preview"}}')
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(socket.recv(), 5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code != 1000
    assert redirecting.handshakes == 2  # both asked the provider's host...
    assert upstream.sessions == []  # ...and neither went where it pointed
