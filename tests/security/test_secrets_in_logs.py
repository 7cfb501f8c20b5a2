"""Over real sockets: neither the real key nor the caller's token shows up in any log
line the proxy process writes (access log, warnings, uvicorn's own lines: a traceback
when a stream breaks after it began, unless `llm-proxy serve`'s log filter dropped it as
an abort on purpose), nor in any reply."""

from __future__ import annotations

import httpx
import pytest

from core.app import create_app
from core.config import load_settings
from core.types import Receive, Scope, Send
from tests.support.servers import (
    FAKE_TOKEN,
    FAKE_UPSTREAM_KEY,
    free_port,
    proxy_env,
    serve_in_thread,
)


class BreaksMidStream:
    """An upstream that starts a stream, sends one event and dies; or answers 401."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["path"].endswith("/broken"):
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")],
                }
            )
            await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
            raise RuntimeError("upstream died")
        # The provider is trusted not to echo the key back; a scrubber for that would cost
        # every response a scan of its body.
        await send({"type": "http.response.start", "status": 401, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


def test_no_secret_in_logs_or_replies(
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    with serve_in_thread(BreaksMidStream()) as upstream:
        env = proxy_env(upstream.url, ACCESS_LOG="true", UPSTREAM_TRANSPORT="httpx")
        app = create_app(load_settings(env))
        with serve_in_thread(app) as proxy:
            replies: list[httpx.Response] = []
            with httpx.Client(base_url=proxy.url, timeout=10) as c:
                auth = {"authorization": f"Bearer {FAKE_TOKEN}"}
                with pytest.raises(httpx.HTTPError):
                    c.get("/v1/broken", headers=auth).read()
                replies.append(c.get("/v1/echo", headers=auth))
                replies.append(c.get(f"/v1/echo?key={FAKE_TOKEN}&KEY={FAKE_TOKEN}"))
                replies.append(
                    c.get("/v1/echo", headers={"authorization": "Bearer wrong-token-0000000000"})
                )
                replies.append(c.get("/v1/echo", headers={"x-api-key": FAKE_TOKEN[:-1]}))
        closed = free_port()
        dead = create_app(load_settings(proxy_env(f"http://127.0.0.1:{closed}", ACCESS_LOG="true")))
        with serve_in_thread(dead) as proxy, httpx.Client(base_url=proxy.url, timeout=10) as c:
            replies.append(c.get("/v1/models", headers={"x-goog-api-key": FAKE_TOKEN}))
    assert replies[-1].status_code == 502
    out, err = capfd.readouterr()
    # Every line written, and every record (the relay's warning goes to the llm_proxy
    # logger; uvicorn's traceback of the abort is gone once a served app installed the
    # server's log filter in this process: core/server/log_filter.py).
    logs = out + err + caplog.text
    assert "upstream stream broke after 9 bytes" in logs
    for secret in (FAKE_UPSTREAM_KEY, FAKE_TOKEN, FAKE_TOKEN[:-1]):
        assert secret not in logs
        for reply in replies:
            assert secret not in reply.text
            assert secret not in str(reply.headers)
