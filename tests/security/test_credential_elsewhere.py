"""The caller's credential reaches no upstream and no log line, wherever in the request the
caller puts it besides its slot: another header, the path (`;key=`, an escaped `?key=`),
another query parameter. Over loopback sockets, against an upstream that records what it
was sent."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
import websockets

from tests.support.metered import metered
from tests.support.scripted_upstream import ScriptedUpstream
from tests.support.servers import FAKE_TOKEN, RunningServer

JSON = [("content-type", "application/json")]


def _ok(request: dict[str, Any]) -> Any:
    return 200, JSON, [(0, b'{"object": "list", "data": []}')]


@pytest.fixture(scope="module")
def upstream() -> ScriptedUpstream:
    return ScriptedUpstream(_ok)


@pytest.fixture(scope="module")
def proxy(upstream: ScriptedUpstream) -> Iterator[RunningServer]:
    with metered(upstream, ACCESS_LOG="true") as running:
        yield running


def _sent_upstream(upstream: ScriptedUpstream) -> str:
    return "\n".join(str(seen) for seen in upstream.seen)


@pytest.mark.parametrize(
    "header",
    ["x-auth-token", "x-access-token", "openai-api-key", "x-original-authorization", "token"],
)
@pytest.mark.parametrize(
    ("path", "slot"),
    [
        ("/v1/models", {"authorization": f"Bearer {FAKE_TOKEN}"}),
        ("/anthropic/v1/models", {"x-api-key": FAKE_TOKEN}),
        ("/gemini/v1beta/models", {"x-goog-api-key": FAKE_TOKEN}),
        (f"/gemini/v1beta/models?key={FAKE_TOKEN}", {}),
    ],
)
def test_a_credential_in_another_header_is_not_forwarded(
    proxy: RunningServer, upstream: ScriptedUpstream, header: str, path: str, slot: dict[str, str]
) -> None:
    upstream.seen.clear()
    headers = {**slot, header: FAKE_TOKEN, "x-kept": "kept"}
    reply = httpx.get(proxy.url + path, headers=headers, timeout=10)
    assert reply.status_code == 200, reply.text
    assert len(upstream.seen) == 1
    assert upstream.seen[0].headers.get("x-kept") == "kept"  # the other headers still go
    assert header not in upstream.seen[0].headers
    assert FAKE_TOKEN not in _sent_upstream(upstream)


@pytest.mark.parametrize(
    ("path", "shape"),
    [
        (f"/gemini/v1beta/models;key={FAKE_TOKEN}", "gemini"),
        (f"/gemini/v1beta/models/x:generateContent%3Fkey%3D{FAKE_TOKEN}", "gemini"),
        # Escaped, so the raw path does not show it and the decoded one does.
        ("/v1/models/" + FAKE_TOKEN.replace("-", "%2D"), "openai"),
        # Escaped twice: what a router that decodes twice (as the proxy's own checks
        # assume one may, core/request.py check_path) reads as the credential.
        ("/v1/models/" + FAKE_TOKEN.replace("-", "%252D"), "openai"),
        ("/v1/models?x=" + FAKE_TOKEN.replace("-", "%252D"), "openai"),
        # Escaped three and four times: a router may decode in a loop, and the token is
        # the caller's whatever the depth (before: forwarded from three up).
        ("/v1/models/" + FAKE_TOKEN.replace("-", "%25252D"), "openai"),
        ("/v1/models?x=" + FAKE_TOKEN.replace("-", "%2525252D"), "openai"),
        ("/anthropic/v1/models/" + FAKE_TOKEN.replace("-", "%25252d"), "anthropic"),
        (f"/v1/models?api_key={FAKE_TOKEN}", "openai"),
        ("/anthropic/v1/models?token=" + FAKE_TOKEN.replace("-", "%2d"), "anthropic"),
    ],
)
def test_a_credential_in_the_url_is_refused_and_not_logged(
    proxy: RunningServer,
    upstream: ScriptedUpstream,
    caplog: pytest.LogCaptureFixture,
    path: str,
    shape: str,
) -> None:
    upstream.seen.clear()
    headers = {
        "openai": {"authorization": f"Bearer {FAKE_TOKEN}"},
        "anthropic": {"x-api-key": FAKE_TOKEN},
        "gemini": {"x-goog-api-key": FAKE_TOKEN},
    }[shape]
    logger = logging.getLogger("llm_proxy")
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger="llm_proxy"):
            reply = httpx.get(proxy.url + path, headers=headers, timeout=10)
            deadline = time.monotonic() + 5
            while not _access_lines(caplog) and time.monotonic() < deadline:
                time.sleep(0.01)
    finally:
        logger.removeHandler(caplog.handler)
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert "credential" in error["message"]
    if shape == "gemini":
        assert error["status"] == "INVALID_ARGUMENT"
    elif shape == "anthropic":
        assert reply.json()["type"] == "error"
    assert upstream.seen == []
    lines = _access_lines(caplog)
    assert lines, "no access-log line"
    assert FAKE_TOKEN not in _every_escape_decoded(caplog.text)  # nor escaped


def _every_escape_decoded(text: str) -> str:
    for _ in range(20):
        once = unquote(text)
        if once == text:
            return text
        text = once
    raise AssertionError("still escaped after 20 rounds")


def _access_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "llm_proxy.access"]


STORED_SHAPE = "llmp_" + "A1b2C3d4" * 5  # a stored token's shape (core/access/tokens.py)
JWT_SHAPE = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1c2VyLTEifQ.c2lnbmF0dXJlLW5vdC1yZWFs"


@pytest.mark.parametrize(
    ("path", "secret", "status"),
    [
        # A client that put its token in its base URL: no route, so no credential read.
        (f"/{FAKE_TOKEN}/v1/chat/completions", FAKE_TOKEN, 404),
        (f"/v2/{FAKE_TOKEN}", FAKE_TOKEN, 404),
        (f"/v2/x;key={FAKE_TOKEN}", FAKE_TOKEN, 404),
        # Routed, but with no credential in a slot: refused at identify.
        (f"/v1/models/{FAKE_TOKEN}", FAKE_TOKEN, 401),
        (f"/v2/{STORED_SHAPE}", STORED_SHAPE, 404),
        (f"/x/{JWT_SHAPE}/v1/models", JWT_SHAPE, 404),
        # Escaped twice: the log's path is decoded once, so it showed `test%2Dcaller%2D...`,
        # which a router that decodes twice reads as the token.
        ("/v2/" + FAKE_TOKEN.replace("-", "%252D"), FAKE_TOKEN, 404),
        ("/v1/models/" + FAKE_TOKEN.replace("-", "%252D"), FAKE_TOKEN, 401),
        ("/v2/" + STORED_SHAPE.replace("_", "%255F"), STORED_SHAPE, 404),
        # Escaped three times (before: logged as `test%252Dcaller...`).
        ("/v2/" + FAKE_TOKEN.replace("-", "%25252D"), FAKE_TOKEN, 404),
        ("/v1/models/" + FAKE_TOKEN.replace("-", "%25252D"), FAKE_TOKEN, 401),
    ],
)
def test_a_credential_in_a_path_no_caller_was_identified_by_is_not_logged(
    proxy: RunningServer,
    upstream: ScriptedUpstream,
    caplog: pytest.LogCaptureFixture,
    path: str,
    secret: str,
    status: int,
) -> None:
    """Before: the access log wrote such a path as sent, the caller's token in it (the
    proxy identified no caller, so it knew of no credential to take out)."""
    upstream.seen.clear()
    logger = logging.getLogger("llm_proxy")
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger="llm_proxy"):
            reply = httpx.get(proxy.url + path, timeout=10)
            deadline = time.monotonic() + 5
            while not _access_lines(caplog) and time.monotonic() < deadline:
                time.sleep(0.01)
    finally:
        logger.removeHandler(caplog.handler)
    assert reply.status_code == status, reply.text
    assert upstream.seen == []
    lines = _access_lines(caplog)
    assert lines, "no access-log line"
    assert secret not in _every_escape_decoded(caplog.text)
    assert "[redacted]" in lines[-1]


@pytest.mark.parametrize(
    ("path", "secret", "status"),
    [
        (f"/{FAKE_TOKEN}/v1/realtime?model=gpt-realtime", FAKE_TOKEN, 404),
        (f"/v1/realtime/{FAKE_TOKEN}?model=gpt-realtime", FAKE_TOKEN, None),
        (f"/gemini/ws/x;key={STORED_SHAPE}", STORED_SHAPE, None),
        (f"/x/{JWT_SHAPE}/v1/realtime", JWT_SHAPE, 404),
    ],
)
def test_a_credential_in_a_websocket_path_no_caller_was_identified_by_is_not_logged(
    proxy: RunningServer,
    upstream: ScriptedUpstream,
    caplog: pytest.LogCaptureFixture,
    path: str,
    secret: str,
    status: int | None,
) -> None:
    """The same path as a WebSocket handshake (a realtime client's base URL): before, the
    realtime endpoint wrote its own access-log line with the path as sent."""
    upstream.seen.clear()

    async def handshake() -> int | None:
        try:
            async with websockets.connect(
                proxy.url.replace("http", "ws", 1) + path, open_timeout=5
            ):
                return 101
        except websockets.InvalidStatus as refused:
            return refused.response.status_code

    logger = logging.getLogger("llm_proxy")
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger="llm_proxy"):
            answered = asyncio.run(handshake())
            deadline = time.monotonic() + 5
            while not _access_lines(caplog) and time.monotonic() < deadline:
                time.sleep(0.01)
    finally:
        logger.removeHandler(caplog.handler)
    assert answered is not None and answered >= 400
    if status is not None:
        assert answered == status
    assert upstream.seen == []
    lines = _access_lines(caplog)
    assert lines, "no access-log line"
    assert secret not in _every_escape_decoded(caplog.text)
    assert "[redacted]" in lines[-1]


@pytest.mark.parametrize(
    ("path", "says"),
    [
        # `..` escaped three times: a router that decodes in a loop climbs out of the route.
        ("/v1/models/%25252e%25252e/%25252e%25252e/admin", "'..'"),
        # Escaped past any client's habit (nine rounds): refused, not guessed at.
        ("/v1/models/x%" + "25" * 9 + "2D", "escaped"),
    ],
)
def test_a_path_escaped_deeper_than_the_checks_read_is_refused(
    proxy: RunningServer, upstream: ScriptedUpstream, path: str, says: str
) -> None:
    upstream.seen.clear()
    reply = httpx.get(proxy.url + path, headers={"authorization": f"Bearer {FAKE_TOKEN}"})
    assert reply.status_code == 400, reply.text
    assert says in reply.json()["error"]["message"]
    assert upstream.seen == []
