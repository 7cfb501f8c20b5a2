"""Issue findings 1-5 and 7: what a hostile caller or a careless upstream sent, over real
sockets, and what the proxy must answer instead."""

from __future__ import annotations

import gzip
import json
import socket
import time
from typing import Any

import httpx

from tests.support.metered import AUTH, JSON, metered, models_or
from tests.support.scripted_upstream import ScriptedUpstream
from tests.support.servers import FAKE_TOKEN, FAKE_UPSTREAM_KEY

GEMINI_KEY = "sk-fake-gemini-key-for-tests"


def _echoing(request: dict[str, Any]) -> Any:
    """A careless upstream: refuses the call and quotes the key everywhere it can."""
    key = request["headers"].get("authorization", "").removeprefix("Bearer ") or request[
        "headers"
    ].get("x-goog-api-key", "")
    body = json.dumps(
        {"error": {"message": f"Incorrect API key provided: {key}", "echo": request["headers"]}}
    )
    headers = [
        *JSON,
        ("www-authenticate", f'Bearer realm="api", error="invalid_token", key="{key}"'),
        ("location", f"https://upstream.example/v1/retry?key={key}"),
        ("x-goog-upload-url", f"https://upstream.example/upload?key={key}&upload_id=1"),
        ("access-control-allow-origin", "*"),
        ("access-control-allow-credentials", "true"),
        ("x-proxy-request-id", "upstream-made-this-up"),
    ]
    pieces = [body.encode()[i : i + 7] for i in range(0, len(body), 7)]  # a key split across chunks
    return 401, headers, [(0, piece) for piece in pieces]


def test_1_keys_echoed_by_the_upstream_never_reach_the_caller() -> None:
    with metered(ScriptedUpstream(_echoing)) as proxy:
        for path, headers in (
            ("/v1/chat/completions", AUTH),
            ("/gemini/v1beta/models/g:generateContent", {"x-goog-api-key": FAKE_TOKEN}),
        ):
            reply = httpx.post(f"{proxy.url}{path}", json={"model": "m"}, headers=headers)
            assert reply.status_code == 401
            raw = reply.text + json.dumps(dict(reply.headers))
            assert FAKE_UPSTREAM_KEY not in raw and GEMINI_KEY not in raw
            assert "[redacted]" in reply.text
            assert "[redacted]" in reply.headers["www-authenticate"]
            if path.startswith("/gemini"):
                # Gemini's upload URL is pointed at the proxy, with any key left out.
                assert (
                    reply.headers["x-goog-upload-url"] == f"{proxy.url}/gemini/upload?upload_id=1"
                )
            else:
                assert "[redacted]" in reply.headers["x-goog-upload-url"]


def test_2_the_proxy_alone_decides_cors() -> None:
    with metered(ScriptedUpstream(_echoing)) as proxy:
        stranger = httpx.post(
            f"{proxy.url}/v1/chat/completions",
            json={},
            headers={**AUTH, "Origin": "https://evil.example"},
        )
        assert "access-control-allow-origin" not in stranger.headers
        assert "access-control-allow-credentials" not in stranger.headers
        listed = httpx.post(
            f"{proxy.url}/v1/chat/completions",
            json={},
            headers={**AUTH, "Origin": "http://app.example.test"},
        )
        assert listed.headers.get_list("access-control-allow-origin") == ["http://app.example.test"]
        assert listed.headers.get_list("x-proxy-request-id") != ["upstream-made-this-up"]
        assert len(listed.headers.get_list("x-proxy-request-id")) == 1


def _ok(request: dict[str, Any]) -> Any:
    return 200, JSON, [(0, b'{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1}}')]


def test_3_a_policed_field_in_two_spellings_is_refused() -> None:
    upstream = ScriptedUpstream(models_or(_ok))
    with metered(upstream, MAX_TOKENS_CAP="100", ALLOWED_MODELS="small-*") as proxy:
        for body in (
            '{"model":"small-1","MODEL":"huge-405b","max_tokens":10,"messages":[]}',
            '{"model":"small-1","max_tokens":10,"MAX_TOKENS":100000,"messages":[]}',
            '{"model":"small-1","max_tokens":10,"maxTokens":100000,"messages":[]}',
        ):
            reply = httpx.post(
                f"{proxy.url}/v1/chat/completions",
                content=body,
                headers={**AUTH, "content-type": "application/json"},
            )
            assert reply.status_code == 400, body
            assert reply.json()["error"]["code"] == "repeated_field"
        gemini = (
            '{"contents":[],"generationConfig":{"maxOutputTokens":10},'
            '"generation_config":{"maxOutputTokens":100000}}'
        )
        reply = httpx.post(
            f"{proxy.url}/gemini/v1beta/models/small-1:generateContent",
            content=gemini,
            headers={"x-goog-api-key": FAKE_TOKEN, "content-type": "application/json"},
        )
        assert reply.status_code == 400
        assert reply.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert upstream.seen == []


def test_3b_a_fallback_list_of_other_models_is_refused_where_models_are_checked() -> None:
    # OpenRouter reads `models` (fallbacks tried in turn): the allowed model checked, another
    # run. Where a rule reads the model, the body must name one.
    upstream = ScriptedUpstream(models_or(_ok))
    with metered(upstream, ALLOWED_MODELS="small-*") as proxy:
        for listed in (["huge-405b"], ["small-1", "huge-405b"], "huge-405b"):
            body = {"model": "small-1", "models": listed, "max_tokens": 10, "messages": []}
            reply = httpx.post(f"{proxy.url}/v1/chat/completions", json=body, headers=AUTH)
            assert reply.status_code == 400, listed
            assert reply.json()["error"]["code"] == "repeated_field"
        assert upstream.seen == []
        same = {"model": "small-1", "models": ["small-1"], "max_tokens": 10, "messages": []}
        assert httpx.post(f"{proxy.url}/v1/chat/completions", json=same, headers=AUTH).is_success


def test_4_deeply_nested_json_is_a_400_not_a_500() -> None:
    with metered(ScriptedUpstream(models_or(_ok))) as proxy:
        body = "[" * 100_000 + "]" * 100_000
        reply = httpx.post(
            f"{proxy.url}/v1/chat/completions",
            content=body,
            headers={**AUTH, "content-type": "application/json"},
        )
        assert reply.status_code == 400
        assert "nested" in reply.json()["error"]["message"]


def test_5_a_huge_json_body_is_refused_and_an_over_limit_caller_sends_none() -> None:
    upstream = ScriptedUpstream(models_or(_ok))
    with metered(upstream, RATE_LIMIT_REQUESTS="1", MAX_JSON_BYTES="1048576") as proxy:
        big = b'{"model":"m","messages":[{"role":"user","content":"' + b"x" * 2_000_000 + b'"}]}'
        reply = httpx.post(
            f"{proxy.url}/v1/chat/completions",
            content=big,
            headers={**AUTH, "content-type": "application/json"},
        )
        assert reply.status_code == 413
        assert "MAX_JSON_BYTES" in reply.text
        # Over its limit now: refused on the head alone, before a byte of the body is sent.
        with socket.create_connection(("127.0.0.1", proxy.port)) as sock:
            sock.settimeout(5)
            sock.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                + f"Authorization: Bearer {FAKE_TOKEN}\r\n".encode()
                + b"Content-Type: application/json\r\nContent-Length: 30000000\r\n\r\n"
            )
            started = time.monotonic()
            head = sock.recv(4096)
            assert head.startswith(b"HTTP/1.1 429")
            assert time.monotonic() - started < 2


def _post(proxy: Any, path: str, body: Any, **headers: str) -> httpx.Response:
    return httpx.post(f"{proxy.url}{path}", json=body, headers={**AUTH, **headers})


def test_7_the_policy_reads_every_generating_route_and_refuses_what_it_cannot() -> None:
    upstream = ScriptedUpstream(models_or(_ok))
    with metered(upstream, MAX_TOKENS_CAP="1000", MAX_MESSAGES="10") as proxy:
        gemini = {"x-goog-api-key": FAKE_TOKEN}
        refused = [
            _post(
                proxy,
                "/gemini/v1beta/models/g:batchGenerateContent",
                {
                    "requests": [{"contents": [], "generationConfig": {"maxOutputTokens": 65536}}]
                    * 50
                },
                **gemini,
            ),
            _post(
                proxy, "/v1/completions", {"model": "m", "prompt": ["p"] * 1000, "max_tokens": 100}
            ),
            _post(proxy, "/v1/responses", {"model": "m", "instructions": "write a novel"}),
            _post(
                proxy,
                "/v1/chat/completions",
                {"model": "m", "messages": [], "max_tokens": 100, "n": 128},
            ),
            _post(
                proxy,
                "/gemini/v1beta/models/g:generateContent",
                {
                    "contents": [],
                    "generationConfig": {"maxOutputTokens": 100, "candidateCount": 20},
                },
                **gemini,
            ),
        ]
        for reply in refused:
            assert reply.status_code == 400, reply.text
        compressed = httpx.post(
            f"{proxy.url}/v1/chat/completions",
            content=gzip.compress(b'{"model":"m","messages":[],"max_tokens":100000}'),
            headers={**AUTH, "content-type": "application/json", "content-encoding": "gzip"},
        )
        assert compressed.status_code == 400
        assert upstream.seen == []
        # Routes that generate no text need no max_tokens.
        assert _post(proxy, "/v1/embeddings", {"model": "e", "input": "hi"}).status_code == 200
        assert (
            _post(
                proxy, "/v1/audio/speech", {"model": "tts", "input": "hi", "voice": "x"}
            ).status_code
            == 200
        )


def _gzipped_echo(request: dict[str, Any]) -> Any:
    key = request["headers"]["authorization"].removeprefix("Bearer ")
    body = gzip.compress(json.dumps({"error": {"message": f"bad key {key}"}}).encode())
    headers = [*JSON, ("content-encoding", "gzip"), ("content-length", str(len(body)))]
    return 401, headers, [(0, body[:9]), (0, body[9:])]


def test_1_a_compressed_error_body_is_scrubbed_too() -> None:
    """A key inside a gzipped refusal is as readable to the caller as a plain one: the
    proxy inflates a compressed body to scrub it, and asks upstreams for identity (br or
    zstd would carry the key past it)."""
    upstream = ScriptedUpstream(_gzipped_echo)
    with metered(upstream) as proxy:
        reply = httpx.post(
            f"{proxy.url}/v1/chat/completions",
            json={"model": "m"},
            headers={**AUTH, "Accept-Encoding": "br, zstd, gzip;q=0.8"},
        )
    assert reply.status_code == 401
    assert FAKE_UPSTREAM_KEY not in reply.text
    assert "[redacted]" in reply.json()["error"]["message"]
    # Every reply is read (scrubbed) by the proxy, so it asks for identity (issue 19).
    assert upstream.seen[0].headers["accept-encoding"] == "identity"
