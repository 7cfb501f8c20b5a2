"""Issue 19, class 4: keys and addresses the caller must never see, over real sockets.

A careless upstream quotes the key masked the way providers do, or echoes the request's
headers in a 200 (streamed or whole, compressed or not); a Gemini upload's start leg names
the upstream in its Location. None of it may reach the caller."""

from __future__ import annotations

import gzip
import json
from typing import Any

import httpx
import pytest

from tests.support.metered import AUTH, EVENTS, JSON, metered, models_or
from tests.support.scripted_upstream import ScriptedUpstream
from tests.support.servers import FAKE_TOKEN, FAKE_UPSTREAM_KEY

KEY = FAKE_UPSTREAM_KEY  # sk-mock-upstream-key-not-real
MASKED = [
    f"{KEY[:8]}{'*' * 24}{KEY[-4:]}",  # OpenAI: sk-proj-****...abcd
    f"sk-...{KEY[-4:]}",
    f"{KEY[:5]}\u2026{KEY[-4:]}",  # an ellipsis character
    f"{KEY[:12]}{'*' * 8}{KEY[-4:]}",  # first N, last four
]


def _masked_refusal(form: str) -> Any:
    def reply(request: dict[str, Any]) -> Any:
        body = json.dumps(
            {"error": {"message": f"Incorrect API key provided: {form}. See the docs."}},
            ensure_ascii=False,
        ).encode()
        return 401, JSON, [(0, body)]

    return reply


@pytest.mark.parametrize("form", MASKED)
def test_a_key_quoted_masked_is_scrubbed(form: str) -> None:
    with metered(ScriptedUpstream(_masked_refusal(form))) as proxy:
        reply = httpx.post(f"{proxy.url}/v1/chat/completions", json={"model": "m"}, headers=AUTH)
    assert reply.status_code == 401
    message = reply.json()["error"]["message"]
    assert KEY[-4:] not in message and form not in message
    assert message == "Incorrect API key provided: [redacted]. See the docs."


def _echo_headers(stream: bool, compressed: bool = False) -> Any:
    """A 200 that echoes the request it got, as httpbin-like debugging upstreams do."""

    def reply(request: dict[str, Any]) -> Any:
        echo = json.dumps({"headers": request["headers"]}).encode()
        if stream:
            event = b"data: " + echo + b"\n\n"
            # Cut inside the key, so it arrives in two chunks.
            cut = event.index(KEY.encode()) + 6
            return 200, EVENTS, [(0, event[:cut]), (0.05, event[cut:])]
        if compressed:
            body = gzip.compress(echo)
            headers = [*JSON, ("content-encoding", "gzip"), ("content-length", str(len(body)))]
            return 200, headers, [(0, body)]
        big = echo + b" " * (100 * 1024)  # past the small-reply path: streamed with its length
        return 200, [*JSON, ("content-length", str(len(big)))], [(0, big[:70]), (0, big[70:])]

    return models_or(reply)


@pytest.mark.parametrize(
    ("stream", "compressed"),
    [(True, False), (False, False), (False, True)],
    ids=["event-stream", "whole-with-length", "gzip"],
)
def test_a_200_that_echoes_the_key_is_scrubbed(stream: bool, compressed: bool) -> None:
    upstream = ScriptedUpstream(_echo_headers(stream, compressed))
    with metered(upstream) as proxy:
        reply = httpx.post(
            f"{proxy.url}/v1/chat/completions",
            json={"model": "m"},
            headers={**AUTH, "Accept-Encoding": "gzip"},
        )
    assert reply.status_code == 200
    assert KEY not in reply.text and KEY[8:] not in reply.text
    assert "[redacted]" in reply.text
    if not stream and not compressed:
        # A body of declared length keeps it: the key is replaced by as many bytes.
        assert int(reply.headers["content-length"]) == len(reply.content)
    # Every reply is read by the proxy, so the upstream is asked for it uncompressed.
    assert upstream.seen[-1].headers["accept-encoding"] == "identity"


def _upload_start(request: dict[str, Any]) -> Any:
    host = request["headers"]["host"]
    url = f"http://{host}/upload/v1beta/files?upload_id=abc123"
    headers = [
        *JSON,
        ("x-goog-upload-status", "active"),
        ("x-goog-upload-url", url),
        ("location", url),
        ("content-location", f"http://{host}/private/elsewhere"),
    ]
    return 200, headers, [(0, b"{}")]


def test_the_upload_start_leg_location_names_the_proxy_not_the_upstream() -> None:
    upstream = ScriptedUpstream(_upload_start)
    with metered(upstream) as proxy:
        reply = httpx.post(
            f"{proxy.url}/gemini/upload/v1beta/files",
            headers={
                "x-goog-api-key": FAKE_TOKEN,
                "x-goog-upload-protocol": "resumable",
                "x-goog-upload-command": "start",
            },
            json={"file": {"display_name": "notes"}},
        )
        upstream_host = upstream.seen[-1].headers["host"]
    assert reply.status_code == 200
    expected = f"{proxy.url}/gemini/upload/v1beta/files?upload_id=abc123"
    assert reply.headers["x-goog-upload-url"] == expected
    assert reply.headers["location"] == expected
    assert reply.headers["content-location"] == f"{proxy.url}/gemini/private/elsewhere"
    assert upstream_host not in json.dumps(dict(reply.headers))


class FileUpstream:
    """A private Gemini upstream whose File resources name its own address, as Google's
    name generativelanguage.googleapis.com."""

    def __init__(self) -> None:
        self.scripted = ScriptedUpstream(self.reply)
        self.file_uris: list[str] = []

    def reply(self, request: dict[str, Any]) -> Any:
        host = request["headers"]["host"]
        path = request["path"]
        if path.startswith("/upload/") and "start" in request["headers"].get(
            "x-goog-upload-command", ""
        ):
            url = f"http://{host}/upload/v1beta/files?upload_id=u1"
            return 200, [*JSON, ("x-goog-upload-url", url), ("location", url)], [(0, b"{}")]
        file = {"name": "files/abc", "uri": f"http://{host}/v1beta/files/abc", "state": "ACTIVE"}
        if path.startswith("/upload/"):
            body = json.dumps({"file": file}).encode()
            return 200, [*JSON, ("x-goog-upload-status", "final")], [(0, body[:30]), (0, body[30:])]
        if path.endswith("/files"):
            listed = json.dumps({"files": [file] * 3}).replace("/", "\\/").encode()  # escaped
            return 200, JSON, [(0, listed)]
        if path.endswith(":generateContent"):
            sent = json.loads(request["body"])
            self.file_uris.append(sent["contents"][0]["parts"][0]["fileData"]["fileUri"])
            answer = {"candidates": [{"content": {"parts": [{"text": "a cat"}]}}]}
            return 200, JSON, [(0, json.dumps(answer).encode())]
        return 404, JSON, [(0, b"{}")]


def test_a_file_resource_names_the_proxy_and_its_uri_still_works() -> None:
    upstream = FileUpstream()
    key = {"x-goog-api-key": FAKE_TOKEN}
    with metered(upstream.scripted) as proxy:
        start = httpx.post(
            f"{proxy.url}/gemini/upload/v1beta/files",
            headers={
                **key,
                "x-goog-upload-protocol": "resumable",
                "x-goog-upload-command": "start",
            },
            json={"file": {"display_name": "cat"}},
        )
        finished = httpx.post(
            start.headers["x-goog-upload-url"],
            content=b"meow",
            headers={"x-goog-upload-command": "upload, finalize", "x-goog-upload-offset": "0"},
        )
        listed = httpx.get(f"{proxy.url}/gemini/v1beta/files", headers=key)
        upstream_host = upstream.scripted.seen[0].headers["host"]
        uri = finished.json()["file"]["uri"]
        assert uri == f"{proxy.url}/gemini/v1beta/files/abc"
        assert upstream_host not in finished.text and upstream_host not in listed.text
        assert [f["uri"] for f in listed.json()["files"]] == [uri] * 3
        # The uri handed out still names the file for the model: the upstream gets its own.
        answer = httpx.post(
            f"{proxy.url}/gemini/v1beta/models/g:generateContent",
            headers=key,
            json={"contents": [{"parts": [{"fileData": {"fileUri": uri}}, {"text": "what?"}]}]},
        )
        assert answer.status_code == 200
        assert upstream.file_uris == [f"http://{upstream_host}/v1beta/files/abc"]


def _redirect(spelling: str) -> Any:
    def reply(request: dict[str, Any]) -> Any:
        upstream = spelling.format(host=request["headers"]["host"])
        headers = [
            *JSON,
            ("location", f"{upstream}/v1/chat/completions/elsewhere"),
            ("link", f'<{upstream}/v1/docs>; rel="help"'),
            ("x-kept", "nothing of the upstream here"),
        ]
        return 307, headers, [(0, b"{}")]

    return reply


# The upstream's address as configured, in another case, and relative to the scheme.
@pytest.mark.parametrize("spelling", ["http://{host}", "HTTP://{host}", "//{host}"])
def test_no_reply_header_names_the_upstream(spelling: str) -> None:
    """Redirects are not followed; one passed on would send the caller (and its token)
    around the proxy, straight to the upstream's address."""
    upstream = ScriptedUpstream(_redirect(spelling))
    with metered(upstream) as proxy:
        reply = httpx.post(f"{proxy.url}/v1/chat/completions", json={"model": "m"}, headers=AUTH)
        upstream_host = upstream.seen[-1].headers["host"]
    assert reply.status_code == 307
    assert upstream_host not in json.dumps(dict(reply.headers))
    assert "location" not in reply.headers and "link" not in reply.headers
    assert reply.headers["x-kept"] == "nothing of the upstream here"


def test_an_upstream_page_is_sandboxed_off_the_dashboards_origin() -> None:
    # An upstream (or a caller's file read back) answering text/html with a script: on the
    # proxy's origin, beside /admin, it would run with the dashboard's cookies in reach.
    page = b"<html><script>fetch('/admin/api/tokens')</script></html>"

    def reply(request: dict[str, Any]) -> Any:
        return 200, [("content-type", "text/html"), ("x-content-type-options", "off")], [(0, page)]

    with metered(ScriptedUpstream(reply)) as proxy:
        got = httpx.get(f"{proxy.url}/v1/files/file-1/content", headers=AUTH)
    assert got.status_code == 200 and got.content == page
    assert got.headers.get_list("content-security-policy") == ["sandbox"]
    assert got.headers.get_list("x-content-type-options") == ["nosniff"]
