"""Whatever a caller can put into a Lambda event, the entries answer it (property-based).

tests/security/test_fuzz.py fuzzes the app and the server; this fuzzes the step before the
app on Lambda, where the platform's event becomes an ASGI request: Mangum's for the
buffered entry (API Gateway REST and HTTP APIs, ALB plain and multi-value, Function URLs)
and handlers/aws/events.py's for the streaming one. The caller chooses the method, path,
query and headers (on an ALB even Host and the X-Forwarded-* it sends are passed on), and
the body. For every such request:

- the buffered handler returns a reply Lambda can serialise, with a status the README
  documents (or 200 / 204), never an exception (which the platform turns into its own bare
  502, with a traceback in the log);
- an error the proxy makes is JSON;
- no key or token is in the reply;
- the streaming entry's event sources read the event into a scope and a body, or refuse
  it, without raising.

Derandomized and bounded, as the other fuzz suite.
"""

from __future__ import annotations

import json
import os
import string
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handlers.aws.events import event_source
from tests.support.buffered_lambda import call, import_handler
from tests.support.lambda_events import EVENT_SHAPES, HttpRequest
from tests.support.servers import FAKE_TOKEN, FAKE_UPSTREAM_KEY, RunningServer, proxy_env

DOCUMENTED = {400, 401, 403, 404, 405, 413, 429, 502, 503, 504}
SECRETS = (FAKE_TOKEN, FAKE_UPSTREAM_KEY)

FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EVENT_EXAMPLES", "60")),
    deadline=None,
    derandomize=not os.environ.get("FUZZ_RANDOM"),
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# What a caller can send, biased to what an event's reader parses: ports, percent signs,
# IPv6 literals, commas (repeated headers are comma-joined), non-ASCII.
PRINTABLE = string.ascii_letters + string.digits + " -._~:/?#[]@!$&'()*+,;=%\"<>{}|\\^`"
text = st.text(
    alphabet=st.sampled_from(PRINTABLE) | st.characters(min_codepoint=0xA0, max_codepoint=0x2FFF),
    max_size=40,
)
host = st.one_of(
    st.just("proxy.example.test"),
    st.builds(
        lambda h, p: f"{h}:{p}",
        st.sampled_from(["proxy.example.test", "[::1]", "10.0.0.1", ""]),
        text,
    ),
    st.sampled_from(
        ["[2001:db8::1]:443", "[::1", "a:1:2", ":", "x:", "proxy:-1", "proxy:99999999999"]
    ),
    text,
)
HEADER_NAMES = [
    "X-Forwarded-Port",
    "X-Forwarded-Proto",
    "X-Forwarded-For",
    "Content-Type",
    "Content-Encoding",
    "Origin",
    "Cookie",
    "Accept-Encoding",
    "Authorization",
    "x-api-key",
    "x-goog-api-key",
]
header = st.tuples(st.sampled_from(HEADER_NAMES), text)
path = st.one_of(
    st.sampled_from(
        ["/v1/chat/completions", "/anthropic/v1/messages", "/gemini/v1beta/models", "/health", "/"]
    ),
    st.builds(lambda prefix, rest: prefix + rest, st.sampled_from(["/v1/", "/", "/gemini/"]), text),
)
body = st.one_of(
    st.just(b""),
    st.just(b'{"model":"m","messages":[{"role":"user","content":"hi"}]}'),
    st.binary(max_size=64),
)


@st.composite
def requests(draw: st.DrawFn) -> HttpRequest:
    headers = draw(st.lists(header, max_size=4))
    if draw(st.booleans()):
        headers.append(("Authorization", f"Bearer {FAKE_TOKEN}"))
    headers.append(("Host", draw(host)))
    return HttpRequest(
        draw(st.sampled_from(["GET", "POST", "OPTIONS", "PUT", "DELETE"])),
        draw(path),
        draw(st.lists(st.tuples(text, text), max_size=3)),
        headers,
        draw(body),
    )


@pytest.fixture(scope="module")
def lambda_module(mock_upstream: RunningServer) -> Iterator[ModuleType]:
    yield import_handler(proxy_env(mock_upstream.url, ALLOWED_ORIGINS="*"))
    sys.modules.pop("handlers.aws.buffered", None)


@pytest.mark.parametrize("shape", sorted(EVENT_SHAPES))
@FUZZ
@given(request=requests())
def test_the_buffered_entry_answers_any_event(
    lambda_module: ModuleType, shape: str, request: HttpRequest
) -> None:
    event = EVENT_SHAPES[shape](request)
    status, _, reply, result = call(lambda_module, event)
    allowed = DOCUMENTED | {200, 204}
    assert status in allowed, f"{status}: {reply[:300]!r}"
    if status >= 400 and request.method != "HEAD":
        document = json.loads(reply)
        assert isinstance(document, dict) and document, document
    serialised = json.dumps(result)
    for secret in SECRETS:
        assert secret not in serialised


@pytest.mark.parametrize("shape", ["api_gateway_v1", "function_url"])
@FUZZ
@given(request=requests())
def test_the_streaming_entry_reads_any_event(shape: str, request: HttpRequest) -> None:
    source = event_source(EVENT_SHAPES[shape](request))
    assert source is not None
    scope: dict[str, Any] = source.scope
    assert scope["path"].startswith("/")
    assert all(isinstance(n, bytes) and isinstance(v, bytes) for n, v in scope["headers"])
    assert isinstance(source.body, bytes)
