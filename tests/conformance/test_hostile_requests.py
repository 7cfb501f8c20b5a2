"""Requests a hostile caller can send, on every platform (each adapter in adapters.py).

The platforms differ in the step before the app: a server's HTTP parser, Vercel's
bootstrap, functions-framework's, Mangum's reading of an API Gateway or ALB event, the
streaming runtime's. Whatever that step is, a request that reaches the function is
answered, never failed: a documented status, an error body the caller's SDK can read
(JSON), and no stack trace (a failed invocation is the platform's own bare 502).
"""

from __future__ import annotations

import json

import pytest

from tests.conformance.adapters import Adapter, Request
from tests.support.servers import FAKE_TOKEN

DOCUMENTED = {400, 401, 403, 404, 405, 413, 429, 502, 503, 504}
BEARER = {"authorization": f"Bearer {FAKE_TOKEN}"}

HOSTILE = {
    "percent-nul-in-path": Request("GET", "/v1/models%00", BEARER),
    "bad-percent-in-path": Request("GET", "/v1/mo%zzdels", BEARER),
    "encoded-slash-and-dots": Request("GET", "/v1/%2e%2e/%2e%2e/admin", BEARER),
    "bad-percent-in-query": Request("GET", "/v1/models?a=%zz&b=%", BEARER),
    "host-with-named-port": Request("GET", "/v1/models", {**BEARER, "host": "proxy.test:https"}),
    "forwarded-port-twice": Request("GET", "/v1/models", {**BEARER, "x-forwarded-port": "1, 2"}),
    "forwarded-for-junk": Request("GET", "/v1/models", {**BEARER, "x-forwarded-for": "::::, x"}),
    "bad-content-length-body": Request(
        "POST", "/v1/chat/completions", {**BEARER, "content-type": "application/json"}, b"{"
    ),
    "gzip-claimed-not-gzip": Request(
        "POST",
        "/v1/chat/completions",
        {**BEARER, "content-type": "application/json", "content-encoding": "gzip"},
        b'{"model":"m"}',
    ),
    "unknown-method": Request("PATCH", "/v1/chat/completions", BEARER),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_request_is_answered(adapter: Adapter, case: str) -> None:
    reply = adapter.send(HOSTILE[case])
    assert reply.status in DOCUMENTED | {200}, (reply.status, reply.body[:300])
    if reply.status >= 400:
        document = json.loads(reply.body)
        assert isinstance(document, dict) and document, document
    assert b"Traceback" not in reply.body
