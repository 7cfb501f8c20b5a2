"""What lasts after the rule that admitted it changes: a rule that holds on one surface
holds on all of them, for as long as what it guards stays open. A hostile caller keeps
something open or usable (a stream, an account read, an upload, a cached reply, a
continuation, a realtime session) while its token is narrowed, revoked or expires, or the
proxy is switched off or scheduled offline. Over real sockets, against the mock upstream
(TOKEN_CACHE_SECONDS=0: its documented window aside)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import replace  # noqa: TID251  # a token record is a dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from core.access.status import ServiceStatus
from core.access.tokens import create_token, revoke_token, set_disabled, store_key
from core.app import create_app
from core.config import load_settings
from core.stores import Store, open_store
from core.types import Receive, Scope, Send
from tests.support.fake_realtime import FakeRealtime
from tests.support.gemini import UPLOAD_KEY as GEMINI_KEY
from tests.support.gemini import start_upload, upload
from tests.support.realtime import ProxyFactory
from tests.support.servers import (
    RunningServer,
    proxy_env,
    reset_upstream,
    serve_in_thread,
    upstream_requests,
)

ADMIN_TOKEN = "admin-token-for-tests-only-0123456789abcdef"
CHAT = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
# A generation far longer than any test waits: 600 events 50 ms apart (the mock upstream).
ENDLESS = {"x-mock-chunks": "600", "x-mock-delay-ms": "50"}


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/tokens.db"


def serve(upstream: RunningServer, store_url: str, **extra: str) -> Any:
    env = proxy_env(
        upstream.url,
        TOKEN_STORE=store_url,
        TOKEN_CACHE_SECONDS="0",
        REALTIME_RECHECK_SECONDS="0.2",
        **extra,
    )
    return serve_in_thread(create_app(load_settings(env)))


def narrow(store: Store, record: Any, **scopes: tuple[str, ...]) -> None:
    """The token's owner narrows its scopes (as the dashboard's edit would)."""
    store.put(store_key(record.token_hash), replace(record, **scopes).to_doc())


def cut_after_change(url: str, path: str, token: str, change: Any, **request: Any) -> float:
    """Reads a stream, calling `change` at its first line; the seconds from then until the
    stream is cut (the test fails if it runs to its end)."""
    started = 0.0
    method = request.pop("method", "POST")
    with httpx.stream(
        method,
        url + path,
        headers={"authorization": f"Bearer {token}", **ENDLESS},
        timeout=20,
        **request,
    ) as reply:
        assert reply.status_code == 200, reply.read()
        with pytest.raises(httpx.RemoteProtocolError):
            for index, _ in enumerate(reply.iter_lines()):
                if index == 0:
                    change()
                    started = time.monotonic()
    return time.monotonic() - started


# ---- a stream being relayed ---------------------------------------------------------------


@pytest.mark.parametrize("scope", ["models", "providers"])
def test_a_stream_stops_when_its_token_is_narrowed_past_it(
    store_url: str, mock_upstream: RunningServer, scope: str
) -> None:
    store = open_store(store_url)
    token, record = create_token(store, "narrowed-while-streaming", models=("m",))
    other = {"models": ("other-*",)} if scope == "models" else {"providers": ("anthropic",)}
    reset_upstream(mock_upstream)
    with serve(mock_upstream, store_url) as proxy:
        seconds = cut_after_change(
            proxy.url,
            "/v1/chat/completions",
            token,
            lambda: narrow(store, record, **other),
            json=CHAT,
        )
    assert seconds < 3, seconds


def test_a_stream_stops_when_its_token_expires(
    store_url: str, mock_upstream: RunningServer
) -> None:
    store = open_store(store_url)
    token, _ = create_token(store, "expiring-while-streaming", expires_at=time.time() + 1.5)
    with serve(mock_upstream, store_url) as proxy:
        seconds = cut_after_change(
            proxy.url, "/v1/chat/completions", token, lambda: None, json=CHAT
        )
    assert seconds < 4, seconds


async def stored_objects(scope: Scope, receive: Receive, send: Send) -> None:
    """An upstream whose stored objects stream slowly: a background response's events
    (`GET /v1/responses/{id}?stream=true`), a large file's content."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    gone = asyncio.Event()

    async def hang_up() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        gone.set()

    watching = asyncio.create_task(hang_up())
    headers = [(b"content-type", b"text/event-stream")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    for index in range(120):  # six seconds: far past the check
        if gone.is_set():  # the proxy hung up: nothing more is generated
            return
        event = b'data: {"type":"response.output_text.delta","n":%d}\n\n' % index
        await send({"type": "http.response.body", "body": event, "more_body": True})
        await asyncio.sleep(0.05)
    await send({"type": "http.response.body", "body": b""})
    watching.cancel()


@pytest.mark.parametrize(
    "path", ["/v1/responses/resp_0123?stream=true", "/v1/files/file-0123/content"]
)
def test_an_account_route_read_stops_when_its_token_becomes_scoped(
    store_url: str, path: str
) -> None:
    """A token limited to some models may not read objects stored in the shared account
    (ACCOUNT_ROUTES): an unscoped token's read still streaming when its owner narrows it is
    ended as its next request would be refused."""
    store = open_store(store_url)
    token, record = create_token(store, "narrowed-while-reading")
    with serve_in_thread(stored_objects) as up, serve(up, store_url) as proxy:
        seconds = cut_after_change(
            proxy.url, path, token, lambda: narrow(store, record, models=("m",)), method="GET"
        )
    assert seconds < 3, seconds


# ---- an upload session --------------------------------------------------------------------


def gemini_proxy(mock: RunningServer, store_url: str, **extra: str) -> Any:
    return serve(
        mock,
        store_url,
        GEMINI_API_KEY=GEMINI_KEY,
        GEMINI_UPSTREAM=mock.url,
        ADMIN_TOKEN=ADMIN_TOKEN,
        **extra,
    )


@pytest.mark.parametrize("how", ["switch", "schedule"])
def test_an_upload_leg_is_refused_while_the_proxy_is_off(
    store_url: str, mock_upstream: RunningServer, how: str
) -> None:
    store = open_store(store_url)
    token, _ = create_token(store, "uploader")
    with gemini_proxy(mock_upstream, store_url) as proxy:
        url = start_upload(proxy, token)
        admin = {"authorization": f"Bearer {ADMIN_TOKEN}"}
        if how == "switch":
            changed = httpx.put(
                f"{proxy.url}/admin/api/status", json={"online": False}, headers=admin
            )
        else:
            now = time.time()
            window = {
                "from": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 60)),
                "to": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + 3600)),
            }
            changed = httpx.put(
                f"{proxy.url}/admin/api/schedule", json={"windows": [window]}, headers=admin
            )
        assert changed.status_code == 200, changed.text
        reset_upstream(mock_upstream)
        refused = upload(url)
        assert upstream_requests(mock_upstream) == []
    assert refused.status_code == 503, refused.text
    assert refused.headers["x-goog-upload-status"] == "final"


# ---- a cached reply, the usage report, a model list ----------------------------------------


def ask(proxy: RunningServer, token: str) -> httpx.Response:
    body = {"model": "m", "temperature": 0, "messages": [{"role": "user", "content": "hi"}]}
    return httpx.post(
        f"{proxy.url}/v1/chat/completions", json=body, headers={"authorization": f"Bearer {token}"}
    )


@pytest.mark.parametrize("how", ["narrowed", "revoked", "disabled", "switched off"])
def test_a_cached_reply_is_not_replayed_past_a_changed_rule(
    store_url: str, mock_upstream: RunningServer, how: str
) -> None:
    store = open_store(store_url)
    token, record = create_token(store, "cached", models=("m",))
    with serve(mock_upstream, store_url, CACHE_URL="memory://", ADMIN_TOKEN=ADMIN_TOKEN) as proxy:
        assert ask(proxy, token).headers["x-proxy-cache"] == "miss"
        assert ask(proxy, token).headers["x-proxy-cache"] == "hit"
        if how == "narrowed":
            narrow(store, record, models=("other",))
        elif how == "revoked":
            revoke_token(store, record.id)
        elif how == "disabled":
            set_disabled(store, record.id, True)
        else:
            ServiceStatus(store).set_online(False)
        refused = ask(proxy, token)
    assert refused.status_code in (401, 403, 503), refused.text
    assert "x-proxy-cache" not in refused.headers or refused.headers["x-proxy-cache"] != "hit"


@pytest.mark.parametrize("how", ["revoked", "disabled", "expired", "switched off"])
def test_the_usage_report_follows_the_token(
    store_url: str, mock_upstream: RunningServer, how: str
) -> None:
    store = open_store(store_url)
    token, record = create_token(store, "reporting", expires_at=time.time() + 3600)
    with serve(mock_upstream, store_url, ADMIN_TOKEN=ADMIN_TOKEN) as proxy:
        auth = {"authorization": f"Bearer {token}"}
        assert httpx.get(f"{proxy.url}/proxy/usage", headers=auth).status_code == 200
        if how == "revoked":
            revoke_token(store, record.id)
        elif how == "disabled":
            set_disabled(store, record.id, True)
        elif how == "expired":
            store.put(
                store_key(record.token_hash), replace(record, expires_at=time.time() - 1).to_doc()
            )
        else:
            ServiceStatus(store).set_online(False)
        refused = httpx.get(f"{proxy.url}/proxy/usage", headers=auth)
    assert refused.status_code == (503 if how == "switched off" else 401), refused.text


def test_a_model_list_follows_a_narrowed_token(
    store_url: str, mock_upstream: RunningServer
) -> None:
    store = open_store(store_url)
    token, record = create_token(store, "listing")
    with serve(mock_upstream, store_url) as proxy:
        auth = {"authorization": f"Bearer {token}", "x-mock-models": "m-1,m-2"}
        before = httpx.get(f"{proxy.url}/v1/models", headers=auth).json()["data"]
        assert len(before) > 1
        kept = before[0]["id"]
        narrow(store, record, models=(kept,))
        after = httpx.get(f"{proxy.url}/v1/models", headers=auth).json()["data"]
        hidden = httpx.get(f"{proxy.url}/v1/models/{before[1]['id']}", headers=auth)
    assert [model["id"] for model in after] == [kept]
    assert hidden.status_code == 404


# ---- a realtime session --------------------------------------------------------


async def test_a_realtime_session_ends_when_its_token_is_narrowed_past_its_model(
    start_proxy: ProxyFactory, upstream: FakeRealtime, store_url: str
) -> None:
    store = open_store(store_url)
    token, record = create_token(store, "narrowed-mid-session", models=("gpt-realtime",))
    with start_proxy(
        TOKEN_STORE=store_url, TOKEN_CACHE_SECONDS="0", REALTIME_RECHECK_SECONDS="0.3"
    ) as proxy:
        url = "ws" + proxy.url[4:] + "/v1/realtime?model=gpt-realtime"
        headers = {"Authorization": f"Bearer {token}"}
        async with websockets.connect(url, additional_headers=headers) as socket:
            await socket.recv()  # session.created
            narrow(store, record, models=("gpt-realtime-mini",))
            with pytest.raises(websockets.ConnectionClosed) as closed:
                while True:
                    await asyncio.wait_for(socket.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    assert "may not use the model" in closed.value.rcvd.reason


def test_a_stream_stops_when_its_sign_in_expires(mock_upstream: RunningServer) -> None:
    from tests.access.jwt_keys import ISSUER, JWKSServer, jwks_served, mint, rsa_key

    signing_key = rsa_key("stream-1")
    with jwks_served(JWKSServer(keys=[signing_key.jwk()])) as jwks:
        env = proxy_env(
            mock_upstream.url,
            JWT_JWKS_URL=f"{jwks.url}/.well-known/jwks.json",
            JWT_ISSUER=ISSUER,
            JWT_LEEWAY_SECONDS="0",
            REALTIME_RECHECK_SECONDS="0.2",
        )
        with serve_in_thread(create_app(load_settings(env))) as proxy:
            token = mint(signing_key, exp=int(time.time()) + 2)
            seconds = cut_after_change(
                proxy.url, "/v1/chat/completions", token, lambda: None, json=CHAT
            )
    assert seconds < 4, seconds


@pytest.mark.parametrize("how", ["unchanged", "narrowed", "switched off"])
def test_a_gemini_stream_is_not_continued_past_a_changed_rule(
    store_url: str, mock_upstream: RunningServer, how: str
) -> None:
    """GEMINI_STREAM_RECOVERY asks the upstream again for a stream cut short: another call,
    made only while the rules that admitted the first still hold."""
    from tests.support.gemini import STREAM_PATH, gemini_proxy

    store = open_store(store_url)
    token, record = create_token(store, "recovering", models=("gemini-test",))
    cut = {"x-mock-continue": "1", "x-mock-cut-after": "3", "x-mock-chunks": "8"}
    body = {"contents": [{"role": "user", "parts": [{"text": "a story"}]}]}
    with gemini_proxy(
        mock_upstream,
        GEMINI_STREAM_RECOVERY="true",
        TOKEN_STORE=store_url,
        TOKEN_CACHE_SECONDS="0",
        REALTIME_RECHECK_SECONDS="600",  # only the continuation's own check
        ADMIN_TOKEN=ADMIN_TOKEN,
    ) as proxy:
        reset_upstream(mock_upstream)
        with httpx.stream(
            "POST",
            f"{proxy.url}{STREAM_PATH}?alt=sse",
            json=body,
            headers={"x-goog-api-key": token, "x-mock-delay-ms": "300", **cut},
            timeout=20,
        ) as reply:
            assert reply.status_code == 200
            lines = reply.iter_lines()
            next(lines)
            if how == "unchanged":  # continued twice: the whole reply
                assert sum(1 for line in lines if line.startswith("data:")) == 7
                return
            if how == "narrowed":
                narrow(store, record, models=("gemini-other",))
            else:
                ServiceStatus(store).set_online(False)
            # Not continued: the stream ends as the upstream cut it.
            with pytest.raises(httpx.RemoteProtocolError):
                for _ in lines:
                    pass
        asked = [r for r in upstream_requests(mock_upstream) if "GenerateContent" in r["path"]]
    assert len(asked) == 1


# ---- a request whose body is still arriving ---------------------------------------------------


@pytest.mark.parametrize("how", ["revoked", "switched off"])
def test_a_request_whose_body_outlasts_a_changed_rule_is_refused(
    store_url: str, mock_upstream: RunningServer, how: str
) -> None:
    """Identified at its head, a request whose body takes its time (up to BODY_TIMEOUT, a
    minute by default) reached the upstream after its token was revoked, or the proxy
    switched off, meanwhile: a caller could hold many such requests open and have them all
    served after the operator acted. Checked again once its body is in, as anything open."""
    import json

    store = open_store(store_url)
    token, record = create_token(store, "slow-body")
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()

    def trickled() -> Iterator[bytes]:
        yield body[:10]
        time.sleep(0.3)  # the proxy has identified the caller and waits for the rest
        if how == "revoked":
            revoke_token(store, record.id)
        else:
            ServiceStatus(store).set_online(False)
        time.sleep(0.5)  # past the check period (0.2 s)
        yield body[10:]

    with serve(mock_upstream, store_url, ADMIN_TOKEN=ADMIN_TOKEN) as proxy:
        reset_upstream(mock_upstream)
        reply = httpx.post(
            f"{proxy.url}/v1/chat/completions",
            content=trickled(),
            headers={
                "authorization": f"Bearer {token}",
                "content-type": "application/json",
                "content-length": str(len(body)),
            },
        )
        assert upstream_requests(mock_upstream) == []  # main: the request went through
    assert reply.status_code == (401 if how == "revoked" else 503), reply.text


def test_an_upload_leg_whose_body_outlasts_its_sign_in_is_refused(
    mock_upstream: RunningServer,
) -> None:
    """An upload started with a JWT ends at the sign-in's `exp` (each leg's admission
    checks it). A leg admitted just before, whose bytes arrive after, was relayed: the
    leg's caller carried no expiry, so nothing checked it again."""
    from tests.access.jwt_keys import ISSUER, JWKSServer, jwks_served, mint, rsa_key

    signing_key = rsa_key("upload-2")
    data = b"hello world"

    def trickled() -> Iterator[bytes]:
        yield data[:4]
        time.sleep(2.5)  # past the sign-in's exp, and the check period
        yield data[4:]

    with jwks_served(JWKSServer(keys=[signing_key.jwk()])) as jwks:
        env = proxy_env(
            mock_upstream.url,
            GEMINI_API_KEY=GEMINI_KEY,
            GEMINI_UPSTREAM=mock_upstream.url,
            PROXY_ACCESS_TOKEN="",
            JWT_JWKS_URL=f"{jwks.url}/.well-known/jwks.json",
            JWT_ISSUER=ISSUER,
            JWT_LEEWAY_SECONDS="0",
            REALTIME_RECHECK_SECONDS="0.2",
        )
        with serve_in_thread(create_app(load_settings(env))) as proxy:
            signed_in = mint(signing_key, exp=int(time.time()) + 2)
            url = start_upload(proxy, signed_in)
            reset_upstream(mock_upstream)
            refused = httpx.post(
                url,
                content=trickled(),
                headers={
                    "x-goog-upload-command": "upload, finalize",
                    "x-goog-upload-offset": "0",
                    "content-length": str(len(data)),
                },
            )
            assert upstream_requests(mock_upstream) == []  # main: relayed to the provider
    assert refused.status_code == 401, refused.text
    assert refused.headers["x-goog-upload-status"] == "final"
