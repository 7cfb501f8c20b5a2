"""Gemini Live through the proxy with google-genai's `client.aio.live.connect`. The SDK
always opens `wss://` when given a key, so the proxy serves TLS here with a throwaway CA."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from core.access.tokens import create_token
from core.app import create_app
from core.config import load_settings
from core.stores import open_store
from tests.support.certificates import make_certificates
from tests.support.fake_realtime import GEMINI_KEY, LIVE_PATH, FakeRealtime
from tests.support.realtime import eventually
from tests.support.servers import FAKE_TOKEN, RunningServer, proxy_env, serve_in_thread

MODEL = "gemini-live-2.5-flash-preview"


@contextlib.contextmanager
def tls_proxy(
    fake: tuple[FakeRealtime, RunningServer], directory: Path, **extra: str
) -> Iterator[tuple[str, ssl.SSLContext]]:
    ca, cert, key = make_certificates(directory)
    env = proxy_env(fake[1].url, GEMINI_API_KEY=GEMINI_KEY, GEMINI_UPSTREAM=fake[1].url)
    env.update(extra)
    app = create_app(load_settings(env))
    with serve_in_thread(app, ssl_certfile=str(cert), ssl_keyfile=str(key)) as proxy:
        yield f"https://127.0.0.1:{proxy.port}", ssl.create_default_context(cafile=str(ca))


def live_client(base_url: str, context: ssl.SSLContext, token: str = FAKE_TOKEN) -> genai.Client:
    options = genai_types.HttpOptions(
        base_url=f"{base_url}/gemini", async_client_args={"ssl": context}
    )
    return genai.Client(api_key=token, http_options=options)


async def one_turn(client: genai.Client) -> list[str]:
    config: Any = {"response_modalities": ["TEXT"]}
    texts = []
    async with client.aio.live.connect(model=MODEL, config=config) as session:
        await session.send_client_content(
            turns={"role": "user", "parts": [{"text": "hello"}]}, turn_complete=True
        )
        async for message in session.receive():
            if message.text:
                texts.append(message.text)
    return texts


async def test_live_session_through_the_proxy_is_metered(
    fake: tuple[FakeRealtime, RunningServer], upstream: FakeRealtime, tmp_path: Path
) -> None:
    with tls_proxy(fake, tmp_path, RATE_LIMIT_TOKENS="100000") as (url, context):
        assert await one_turn(live_client(url, context)) == ["Hello from Live"]
        # The session settles once both sides have closed.
        await eventually(lambda: remaining(url, context) == str(100_000 - 39))
        figures = httpx.get(
            f"{url}/gemini/v1beta/models", headers={"x-goog-api-key": FAKE_TOKEN}, verify=context
        ).headers
    # One turn: the largest snapshot of the turn (30 in, 9 out), counted once.
    assert figures["x-ratelimit-remaining-tokens"] == str(100_000 - 39)
    seen = upstream.sessions[-1]
    # The version is the SDK's choice (v1 with a custom base URL); the path passes as sent.
    assert seen["path"].endswith(".GenerativeService.BidiGenerateContent")
    assert seen["headers"]["x-goog-api-key"] == GEMINI_KEY
    assert "key" not in seen["query"]
    assert FAKE_TOKEN not in str(seen)
    setup = seen["received"][0]
    assert f"models/{MODEL}" in (setup if isinstance(setup, str) else setup.decode())


async def test_key_in_the_query_is_stripped_and_a_wrong_model_closes_with_1008(
    fake: tuple[FakeRealtime, RunningServer], upstream: FakeRealtime, tmp_path: Path
) -> None:
    import json

    import websockets

    store_url = f"sqlite:///{tmp_path}/tokens.db"
    token, _ = create_token(open_store(store_url), "live-only", models=("gemini-live-*",))
    with tls_proxy(fake, tmp_path, TOKEN_STORE=store_url) as (url, context):
        client = live_client(url, context, token)
        with pytest.raises(genai_errors.APIError) as refused:
            async with client.aio.live.connect(model="gemini-2.5-pro", config={}):
                pass
        assert refused.value.code == 1008
        assert "gemini-2.5-pro" in str(refused.value)
        # A raw client with Gemini's `?key=` slot: accepted, and the key goes no further.
        socket_url = "wss" + url[5:] + "/gemini" + LIVE_PATH + f"?key={token}&alt=x"
        async with websockets.connect(socket_url, ssl=context) as socket:
            await socket.send(json.dumps({"setup": {"model": f"models/{MODEL}"}}))
            assert json.loads(await socket.recv()) == {"setupComplete": {}}
    seen = upstream.sessions[-1]
    assert seen["query"] == {"alt": ["x"]}
    assert len(upstream.sessions) == 1  # the refused model never reached the upstream


async def test_the_access_log_line_names_the_session_and_no_secret(
    start_proxy: Any, upstream: FakeRealtime, caplog: pytest.LogCaptureFixture
) -> None:
    import json

    import websockets

    caplog.set_level("INFO", logger="llm_proxy.access")
    with start_proxy(ACCESS_LOG="true") as proxy:
        url = f"ws://127.0.0.1:{proxy.port}/gemini{LIVE_PATH}?key={FAKE_TOKEN}"
        async with websockets.connect(url) as socket:
            await socket.send(json.dumps({"setup": {"model": f"models/{MODEL}"}}))
            await socket.recv()
            await socket.send(json.dumps({"clientContent": {"turnComplete": True}}))
            await socket.recv()
            await socket.recv()
        await eventually(
            lambda: any(
                "BidiGenerateContent" in r.getMessage()
                for r in caplog.records
                if r.name == "llm_proxy.access"
            )
        )
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "llm_proxy.access"]
    (line,) = [entry for entry in lines if entry.get("path", "").endswith("BidiGenerateContent")]
    assert (line["route"], line["status"], line["model"]) == ("gemini", 101, MODEL)
    assert (line["input_tokens"], line["output_tokens"]) == (30, 9)
    assert FAKE_TOKEN not in caplog.text and GEMINI_KEY not in caplog.text


def remaining(url: str, context: Any) -> str:
    reply = httpx.get(
        f"{url}/gemini/v1beta/models", headers={"x-goog-api-key": FAKE_TOKEN}, verify=context
    )
    return reply.headers["x-ratelimit-remaining-tokens"]
