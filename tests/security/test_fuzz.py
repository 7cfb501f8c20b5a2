"""Property-based fuzzing of every route: paths, methods, query strings, headers, bodies
(issue 11).

Whatever a caller sends:
- the proxy answers (no exception escapes, nothing hangs) and keeps serving;
- the status is one the README documents (or the upstream's 200, or a preflight's 204);
- an error the proxy makes is JSON in the caller's protocol shape (OpenAI, Anthropic, Gemini);
- no provider key or caller token appears in any reply or log line;
- the upstream is contacted only at its configured origin, under the route's base path,
  and never with the caller's credential.

Most examples drive the ASGI app in-process (a request as bytes in an ASGI scope, the
upstream a recording ASGI app behind httpx's ASGITransport); a smaller run goes over real
sockets through the production server protocol (core/server/). The runs are
derandomized and bounded, so the suite is stable and adds well under a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import string
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import core.upstream.client as upstream_client
from core.app import HEALTH_BODY, create_app
from core.config import load_settings
from core.server.runner import http_protocol
from core.types import Message, Receive, Scope, Send
from tests.support.servers import FAKE_TOKEN, serve_in_thread

OPENAI_KEY = "sk-fake-openai-key-0123456789"
ANTHROPIC_KEY = "sk-fake-anthropic-key-0123456789"
GEMINI_KEY = "sk-fake-gemini-key-0123456789"
WRONG_TOKEN = "sk-fake-wrong-caller-token-0000"
SECRETS = (OPENAI_KEY, ANTHROPIC_KEY, GEMINI_KEY, FAKE_TOKEN)
CALLER_SECRETS = (FAKE_TOKEN, WRONG_TOKEN)
MAX_BODY = 4096

# route prefix -> (upstream origin, base path the upstream URL must start with, error shape)
ROUTES: dict[str, tuple[str, str, str]] = {
    "/v1": ("https://openai.fuzz.test", "/v1", "openai"),
    "/anthropic": ("https://anthropic.fuzz.test", "/", "anthropic"),
    "/gemini": ("https://gemini.fuzz.test", "/", "gemini"),
    "/gemini/v1beta/openai": ("https://gemini.fuzz.test", "/", "openai"),
}
ORIGINS = {origin for origin, _, _ in ROUTES.values()}
DOCUMENTED = {400, 401, 403, 404, 405, 413, 429, 502, 503, 504}
UPSTREAM_BODY = b'{"id":"fuzz-upstream-reply","object":"fuzz"}'
CREDENTIAL_SLOTS = (b"authorization", b"x-api-key", b"x-goog-api-key", b"api-key")


def proxy_environment() -> dict[str, str]:
    return {
        "UPSTREAM_BASE_URL": "https://openai.fuzz.test/v1",
        "UPSTREAM_API_KEY": OPENAI_KEY,
        "ANTHROPIC_API_KEY": ANTHROPIC_KEY,
        "ANTHROPIC_UPSTREAM": "https://anthropic.fuzz.test",
        "GEMINI_API_KEY": GEMINI_KEY,
        "GEMINI_UPSTREAM": "https://gemini.fuzz.test",
        "PROXY_ACCESS_TOKEN": FAKE_TOKEN,
        "ALLOWED_ORIGINS": "https://app.fuzz.test",
        "UPSTREAM_TRANSPORT": "httpx",
        "ACCESS_LOG": "true",
        "MAX_BODY_BYTES": str(MAX_BODY),
        # The guard on, so policy and limits are fuzzed too (limits high enough not to bite).
        "ALLOWED_MODELS": "fuzz-*,gpt-4o-mini",
        "MAX_TOKENS_CAP": "1000",
        "MAX_MESSAGES": "20",
        "RATE_LIMIT_REQUESTS": "1000000",
        "RATE_LIMIT_TOKENS": "1000000000",
    }


# ---- the recording upstream ---------------------------------------------------------


@dataclass
class Recorder:
    urls: list[httpx.URL] = field(default_factory=list)
    headers: list[list[tuple[bytes, bytes]]] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        more = True
        while more:
            more = (await receive()).get("more_body", False)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(UPSTREAM_BODY)).encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": UPSTREAM_BODY})


class RecordingTransport(httpx.ASGITransport):
    def __init__(self, recorder: Recorder) -> None:
        super().__init__(app=recorder)
        self.recorder = recorder

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.recorder.urls.append(request.url)
        self.recorder.headers.append(list(request.headers.raw))
        return await super().handle_async_request(request)


class LogLines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


# ---- what a caller can send ---------------------------------------------------------

SEGMENTS = st.one_of(
    st.sampled_from(
        [
            "chat",
            "completions",
            "chat/completions",
            "messages",
            "models",
            "embeddings",
            "models/gemini-2.0-flash:generateContent",
            "models/fuzz-1:streamGenerateContent",
            "tunedModels/x:generateContent",
            "..",
            ".",
            "%2e%2e",
            "%2E",
            "..;x",
            ".%2e",
            "%2F",
            "%5C",
            "%00",
            "%0d%0a",
            "a%3Fb",
            "a%23b",
            "%25",
            "%",
            "@evil.test",
            "http:",
            "//evil.test",
            "~",
            "",
        ]
    ),
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12),
)
PREFIXES = st.sampled_from([*ROUTES, "", "/v2", "/anthropicx", "/GEMINI", "/health", "//v1"])
METHODS = st.one_of(
    st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE"]),
    st.text(alphabet=string.ascii_uppercase, min_size=1, max_size=8),
)
TOKEN_CHARS = string.ascii_lowercase + string.digits + "-_"
HEADER_NAMES = st.one_of(
    st.sampled_from(
        [
            b"content-type",
            b"content-length",
            b"transfer-encoding",
            b"connection",
            b"host",
            b"origin",
            b"access-control-request-method",
            b"cookie",
            b"x-forwarded-for",
            b"x-forwarded-host",
            b"forwarded",
            b"accept-encoding",
            b"anthropic-version",
            b"x-proxy-request-id",
            b"te",
            b"upgrade",
            b"expect",
            b"keep-alive",
            b"openai-organization",
        ]
    ),
    st.text(alphabet=TOKEN_CHARS, min_size=1, max_size=16).map(str.encode),
)
HEADER_VALUES = st.one_of(
    st.sampled_from(
        [
            b"application/json",
            b"text/plain",
            b"multipart/form-data; boundary=b",
            b"chunked",
            b"close, authorization",
            b"keep-alive, x-api-key",
            b"https://app.fuzz.test",
            b"https://evil.fuzz.test",
            b"-1",
            b"99999999999999999999",
            b"0",
            b"gzip",
        ]
    ),
    st.binary(max_size=40),
    st.text(max_size=40).map(lambda text: text.encode("utf-8")),
)
JSON_KEYS = st.one_of(
    st.sampled_from(
        [
            "model",
            "messages",
            "max_tokens",
            "max_completion_tokens",
            "max_output_tokens",
            "stream",
            "stream_options",
            "contents",
            "input",
            "generationConfig",
            "maxOutputTokens",
            "role",
            "content",
            "Model",
            "MODEL",
        ]
    ),
    st.text(max_size=8),
)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(["fuzz-1", "gpt-4o-mini", "expensive-model", "fuzz-*"])
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(JSON_KEYS, children, max_size=5)
    ),
    max_leaves=25,
)
CHAT = st.fixed_dictionaries(
    {"model": JSON_VALUES, "messages": JSON_VALUES},
    optional={"max_tokens": JSON_VALUES, "stream": JSON_VALUES, "stream_options": JSON_VALUES},
)
BODIES = st.one_of(
    st.just(b""),
    CHAT.map(lambda doc: json.dumps(doc).encode()),
    JSON_VALUES.map(lambda doc: json.dumps(doc).encode()),
    st.binary(max_size=120),
    st.sampled_from(
        [
            b'{"model":"expensive-model","model":"fuzz-1","messages":[]}',
            b'{"model":"fuzz-1","max_tokens":10,"max_tokens":100000}',
            b'{"model":"fuzz-1","messages":[{"content":"\xff"}]}',
            b"[" * 2000,
            b'{"model":"fuzz-1","messages":[]}' + b" " * (MAX_BODY + 1),
            b'{"a":' * 500 + b"1" + b"}" * 500,
        ]
    ),
)
QUERY_PARTS = st.one_of(
    st.sampled_from(
        [
            "alt=sse",
            f"key={FAKE_TOKEN}",
            f"KEY={WRONG_TOKEN}",
            f"%6Bey={FAKE_TOKEN}",
            "key=",
            "key",
            "a=%ZZ",
            "=",
            "&&",
        ]
    ),
    st.text(alphabet=string.ascii_letters + string.digits + "%=+;-._~", max_size=16),
)


@dataclass
class Call:
    method: str
    raw_path: bytes
    query: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    chunks: int

    @property
    def path(self) -> str:
        return unquote(self.raw_path.decode("ascii"))

    def route(self) -> str | None:
        """The prefix of the route serving this path, longest first; None if none does."""
        path = self.path
        for prefix in sorted(ROUTES, key=len, reverse=True):
            if path == prefix or path.startswith(prefix + "/"):
                return prefix
        return None

    def shape(self) -> str:
        """The error shape the caller's route speaks (OpenAI's where no route matches)."""
        prefix = self.route()
        return "openai" if prefix is None else ROUTES[prefix][2]

    def is_preflight(self) -> bool:
        names = {name for name, _ in self.headers}
        return (
            self.method == "OPTIONS"
            and b"origin" in names
            and b"access-control-request-method" in names
        )


def _raw_path(prefix: str, segments: list[str]) -> bytes:
    path = prefix + "".join("/" + segment for segment in segments)
    # As a client puts it on the request line: printable ASCII kept, the rest %-encoded.
    return quote(path or "/", safe="".join(chr(c) for c in range(0x21, 0x7F))).encode()


@st.composite
def calls(draw: st.DrawFn) -> Call:
    raw_path = _raw_path(draw(PREFIXES), draw(st.lists(SEGMENTS, max_size=4)))
    query = "&".join(draw(st.lists(QUERY_PARTS, max_size=3))).encode()
    headers = draw(st.lists(st.tuples(HEADER_NAMES, HEADER_VALUES), max_size=6))
    credential = draw(st.sampled_from([None, FAKE_TOKEN, WRONG_TOKEN, "", " "]))
    if credential is not None:
        slot = draw(st.sampled_from(CREDENTIAL_SLOTS))
        scheme = draw(st.sampled_from(["Bearer ", "bearer ", "Basic ", ""]))
        value = (scheme if slot == b"authorization" else "") + credential
        headers.insert(draw(st.integers(0, len(headers))), (slot, value.encode()))
    body = draw(BODIES)
    if draw(st.booleans()):
        headers.append((b"content-type", b"application/json"))
    return Call(draw(METHODS), raw_path, query, headers, body, draw(st.integers(1, 3)))


# ---- running one call in-process ----------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


async def call_app(app: Any, call: Call) -> Reply:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": call.method,
        "scheme": "https",
        "path": call.path,
        "raw_path": call.raw_path,
        "root_path": "",
        "query_string": call.query,
        "headers": call.headers,
        "client": ("203.0.113.7", 40000),
        "server": ("proxy.fuzz.test", 443),
    }
    size = -(-len(call.body) // call.chunks) or 1
    pieces = [call.body[i : i + size] for i in range(0, len(call.body), size)] or [b""]
    messages: list[Message] = [
        {"type": "http.request", "body": piece, "more_body": i < len(pieces) - 1}
        for i, piece in enumerate(pieces)
    ]
    finished = asyncio.Event()
    sent: list[Message] = []

    async def receive() -> Message:
        if messages:
            return messages.pop(0)
        await finished.wait()  # as a server does: a disconnect only once the reply is done
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            finished.set()

    await asyncio.wait_for(app(scope, receive, send), timeout=10)
    starts = [m for m in sent if m["type"] == "http.response.start"]
    assert len(starts) == 1, f"{len(starts)} response starts"
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert finished.is_set(), "the reply never ended"
    return Reply(starts[0]["status"], list(starts[0].get("headers", [])), body)


# ---- the invariants -----------------------------------------------------------------


def check_reply(call: Call, reply: Reply, logs: list[str], recorder: Recorder) -> None:
    allowed = DOCUMENTED | {200} | ({204} if call.is_preflight() else set())
    assert reply.status in allowed, f"status {reply.status}: {reply.body[:300]!r}"
    text = reply.body.decode("latin-1") + repr(reply.headers)
    for secret in SECRETS:
        assert secret not in text, "a secret in the reply"
        for line in logs:
            assert secret not in line, f"a secret in a log line: {line[:200]}"
    ids = [v for n, v in reply.headers if n.lower() == b"x-proxy-request-id"]
    assert len(ids) == 1, f"x-proxy-request-id: {ids}"
    if call.path == "/health" and call.method in ("GET", "HEAD"):
        assert reply.status == 200 and reply.body == HEALTH_BODY
    elif reply.status == 200 and not call.is_preflight():
        assert recorder.urls, "a 200 the upstream never gave"
        assert reply.body == UPSTREAM_BODY or call.method == "HEAD"
    if reply.status not in (200, 204) and not call.is_preflight():
        check_shape(call.shape(), reply)
    prefix = call.route()
    if prefix is None:
        assert not recorder.urls, "the upstream contacted for a path no route serves"
    for url, headers in zip(recorder.urls, recorder.headers, strict=True):
        origin, base, _ = ROUTES[prefix or ""]
        assert f"{url.scheme}://{url.netloc.decode()}" == origin, f"upstream contacted at {url}"
        path = url.raw_path.split(b"?")[0]
        assert path == base.encode() or path.startswith(base.rstrip("/").encode() + b"/"), path
        for secret in CALLER_SECRETS:
            assert secret not in str(url), "the caller's credential in the upstream URL"
            for name, value in headers:
                if name.lower() in CREDENTIAL_SLOTS:
                    assert secret.encode() not in value, "the caller's credential sent upstream"


def check_shape(shape: str, reply: Reply) -> None:
    try:
        document = json.loads(reply.body)
    except ValueError:
        raise AssertionError(f"{reply.status} is not JSON: {reply.body[:200]!r}") from None
    assert isinstance(document, dict), document
    error = document.get("error")
    assert isinstance(error, dict), document
    assert isinstance(error.get("message"), str) and error["message"], document
    if shape == "anthropic":
        assert document.get("type") == "error" and isinstance(error.get("type"), str), document
    elif shape == "gemini":
        assert error.get("code") == reply.status and isinstance(error.get("status"), str), document
    else:
        assert "type" in error and "code" in error, document


# ---- the runs -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def harness() -> Iterator[tuple[Any, Recorder, LogLines, asyncio.AbstractEventLoop]]:
    recorder = Recorder()
    loop = asyncio.new_event_loop()
    logs = LogLines()
    logger = logging.getLogger("llm_proxy")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            upstream_client, "build_transport", lambda *args: RecordingTransport(recorder)
        )
        app = create_app(load_settings(proxy_environment()))
        logger.addHandler(logs)
        try:
            yield app, recorder, logs, loop
        finally:
            logger.removeHandler(logs)
            loop.close()


FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "1000")),
    deadline=None,
    # FUZZ_RANDOM=1 explores new examples (a longer hunt: FUZZ_EXAMPLES=20000).
    derandomize=not os.environ.get("FUZZ_RANDOM"),
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@FUZZ
@given(call=calls())
def test_fuzz_in_process(
    harness: tuple[Any, Recorder, LogLines, asyncio.AbstractEventLoop], call: Call
) -> None:
    app, recorder, logs, loop = harness
    recorder.urls.clear()
    recorder.headers.clear()
    logs.lines.clear()
    reply = loop.run_until_complete(call_app(app, call))
    event(f"status {reply.status}")
    check_reply(call, reply, logs.lines, recorder)


# ---- over real sockets, through the production server protocol ----------------------


def wire_request(call: Call) -> bytes:
    target = call.raw_path + (b"?" + call.query if call.query else b"")
    lines = [call.method.encode() + b" " + target + b" HTTP/1.1", b"host: proxy.fuzz.test"]
    for name, value in call.headers:
        if name in (b"content-length", b"transfer-encoding", b"host", b"connection", b"expect"):
            continue  # framing is the client's job here; the fuzz is of what the app sees
        lines.append(name + b": " + value)
    lines += [b"content-length: " + str(len(call.body)).encode(), b"connection: close"]
    return b"\r\n".join(lines) + b"\r\n\r\n" + call.body


def read_reply(sock: socket.socket) -> tuple[int, bytes, bytes]:
    data = b""
    with contextlib.suppress(OSError):
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head, "no reply"
    return int(head.split(b" ", 2)[1]), head, body


@pytest.fixture(scope="module")
def socket_proxy() -> Iterator[tuple[int, LogLines]]:
    recorder = Recorder()
    logs = LogLines()
    env = proxy_environment()
    with serve_in_thread(recorder) as upstream:
        for name, origin in (
            ("UPSTREAM_BASE_URL", upstream.url + "/v1"),
            ("ANTHROPIC_UPSTREAM", upstream.url),
            ("GEMINI_UPSTREAM", upstream.url),
        ):
            env[name] = origin
        app = create_app(load_settings(env))
        logging.getLogger("llm_proxy").addHandler(logs)
        try:
            with serve_in_thread(app, http=http_protocol()) as proxy:
                yield proxy.port, logs
        finally:
            logging.getLogger("llm_proxy").removeHandler(logs)


@settings(FUZZ, max_examples=int(os.environ.get("FUZZ_SOCKET_EXAMPLES", "150")))
@given(call=calls())
def test_fuzz_over_sockets(socket_proxy: tuple[int, LogLines], call: Call) -> None:
    port, logs = socket_proxy
    logs.lines.clear()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(wire_request(call))
        status, head, body = read_reply(sock)
    allowed = DOCUMENTED | {200} | ({204} if call.is_preflight() else set())
    assert status in allowed, f"status {status}: {body[:300]!r}"
    if status >= 400 and call.method != "HEAD":
        reply = Reply(status, [], body)
        if b"not valid HTTP" in body and call.shape() != "openai":
            # Refused by the server: in the shape of the route its request line names when
            # the line could be read (a header with a NUL), OpenAI's when it could not (an
            # unknown method): core/server/bounds.py.
            try:
                check_shape(call.shape(), reply)
            except AssertionError:
                check_shape("openai", reply)
        else:
            check_shape(call.shape(), reply)
    for secret in SECRETS:
        assert secret.encode() not in head + body
        for line in logs.lines:
            assert secret not in line, f"a secret in a log line: {line[:200]}"
    # The server is still up and serving.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        assert read_reply(sock)[0] == 200


# ---- what the fuzz found --------------------------------------------------------------


async def test_deeply_nested_json_is_a_400() -> None:
    """Found by the fuzz: POST /v1/chat/completions, `Authorization: Bearer <token>`,
    `content-type: application/json`, body `[` * 2000 -> 500 "The proxy failed
    unexpectedly" (log: `unexpected error: RecursionError`). Without content-type the same
    body is a 500 too as soon as the guard reads JSON (ALLOWED_MODELS, MAX_TOKENS_CAP,
    RATE_LIMIT_TOKENS)."""
    env = proxy_environment()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(load_settings(env))),
        base_url="http://proxy.test",
    ) as proxy:
        response = await proxy.post(
            "/v1/chat/completions",
            content=b"[" * 2000,
            headers={"authorization": f"Bearer {FAKE_TOKEN}", "content-type": "application/json"},
        )
    assert response.status_code == 400, response.text
