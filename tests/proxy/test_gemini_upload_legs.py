"""Gemini's resumable upload legs through the proxy, over real sockets (memory-kept
sessions, no token store): which upload legs get in, where the bytes go, and what the
upload URL handed back says."""

from __future__ import annotations

import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from core.app import create_app
from core.config import load_settings
from core.errors import BadRequest
from core.headers import client_response_headers
from core.providers import CATALOGUE
from core.proxy import uploads
from core.proxy.scrub import Scrubber
from core.proxy.uploads import proxy_upload_url, public_origin, upload_id_of
from core.records import replace
from core.stores import open_store
from tests.support.gemini import START, upload
from tests.support.gemini import UPLOAD_KEY as GEMINI_KEY
from tests.support.servers import (
    FAKE_TOKEN,
    RunningServer,
    proxy_env,
    reset_upstream,
    serve_in_thread,
    upstream_requests,
)


@pytest.fixture(scope="module")
def gemini_proxy(mock_upstream: RunningServer) -> Iterator[RunningServer]:
    env = proxy_env(mock_upstream.url, GEMINI_API_KEY=GEMINI_KEY, GEMINI_UPSTREAM=mock_upstream.url)
    with serve_in_thread(create_app(load_settings(env))) as server:
        yield server


def start(proxy: RunningServer, **headers: str) -> httpx.Response:
    reply = httpx.post(
        f"{proxy.url}/gemini/upload/v1beta/files",
        headers={**START, "x-goog-api-key": FAKE_TOKEN, **headers},
        json={"file": {"display_name": "notes"}},
    )
    assert reply.status_code == 200, reply.text
    return reply


def test_the_upload_url_names_the_proxy_and_the_leg_needs_no_credential(
    gemini_proxy: RunningServer, mock_upstream: RunningServer
) -> None:
    reset_upstream(mock_upstream)
    reply = start(gemini_proxy)
    url = reply.headers["x-goog-upload-url"]
    assert url.startswith(f"{gemini_proxy.url}/gemini/upload/v1beta/files?upload_id=")
    assert reply.headers["x-goog-upload-control-url"] == url
    assert str(mock_upstream.port) not in str(reply.headers)
    done = upload(url)  # no credential at all, as google-genai (Python) sends it
    assert done.status_code == 200, done.text
    assert done.headers["x-goog-upload-status"] == "final"
    assert done.json()["file"]["sizeBytes"] == "11"
    legs = upstream_requests(mock_upstream)
    assert [leg["headers"]["x-goog-api-key"] for leg in legs] == [GEMINI_KEY, GEMINI_KEY]
    assert legs[1]["body_length"] == 11


def test_an_upload_id_the_proxy_did_not_hand_out_is_refused(
    gemini_proxy: RunningServer, mock_upstream: RunningServer
) -> None:
    reset_upstream(mock_upstream)
    for query in ("upload_id=made-up&upload_protocol=resumable", "upload_id=x&UPLOAD_ID=y"):
        refused = upload(f"{gemini_proxy.url}/gemini/upload/v1beta/files?{query}")
        assert refused.status_code in (400, 401)
        assert refused.json()["error"]["status"] in ("INVALID_ARGUMENT", "UNAUTHENTICATED")
    # A valid proxy token does not stand in for the session either.
    refused = upload(
        f"{gemini_proxy.url}/gemini/upload/v1beta/files?upload_id=made-up",
        **{"x-goog-api-key": FAKE_TOKEN},
    )
    assert refused.status_code == 401
    # The SDKs retry a chunk whose reply has no upload status: this one is final.
    assert refused.headers["x-goog-upload-status"] == "final"
    # Without an upload_id, the upload path is an ordinary route: a credential is needed.
    assert upload(f"{gemini_proxy.url}/gemini/upload/v1beta/files").status_code == 401
    assert upstream_requests(mock_upstream) == []


def test_the_upload_leg_at_the_root_without_the_prefix(
    gemini_proxy: RunningServer, mock_upstream: RunningServer
) -> None:
    """@google/genai (Node) swaps the proxy's host into the upload URL; one that lost the
    /gemini prefix still reaches the Gemini route, only with an upload_id."""
    reset_upstream(mock_upstream)
    url = start(gemini_proxy).headers["x-goog-upload-url"]
    root = url.replace(f"{gemini_proxy.url}/gemini/", f"{gemini_proxy.url}/", 1)
    done = upload(root, **{"x-goog-api-key": FAKE_TOKEN})
    assert done.status_code == 200, done.text
    assert upstream_requests(mock_upstream)[1]["path"] == "/upload/v1beta/files"
    # The upload_id opens the path it was issued for, and no other.
    url = start(gemini_proxy).headers["x-goog-upload-url"]
    elsewhere = url.replace("/upload/v1beta/files?", "/upload/v1beta/models/m:generateContent?")
    assert upload(elsewhere).status_code == 401
    assert upload(url).status_code == 200
    # At the root, nothing else is routed.
    assert httpx.post(f"{gemini_proxy.url}/upload/v1beta/files").status_code == 404


def test_a_caller_chosen_host_shapes_only_its_own_url(
    gemini_proxy: RunningServer, mock_upstream: RunningServer
) -> None:
    reset_upstream(mock_upstream)
    reply = start(gemini_proxy, host="proxy.example.com", **{"x-forwarded-proto": "https"})
    url = reply.headers["x-goog-upload-url"]
    assert url.startswith("https://proxy.example.com/gemini/upload/v1beta/files?upload_id=")
    # The bytes still go to the configured upstream, whatever host the leg names.
    path_and_query = url.removeprefix("https://proxy.example.com")
    done = upload(gemini_proxy.url + path_and_query, host="elsewhere.example.net")
    assert done.status_code == 200
    assert len(upstream_requests(mock_upstream)) == 2
    # A Host that is not a plain host[:port] gets no upload URL at all (never the upstream's).
    odd = start(gemini_proxy, host="evil.example/path?x=")
    assert "x-goog-upload-url" not in odd.headers


def test_raw_upload_bytes_skip_the_json_check_only_on_the_upload_leg(
    gemini_proxy: RunningServer,
) -> None:
    refused = httpx.post(
        f"{gemini_proxy.url}/gemini/v1beta/models/m:generateContent",
        content=b"\x00not json",
        headers={"content-type": "application/json", "x-goog-api-key": FAKE_TOKEN},
    )
    assert refused.status_code == 400
    url = start(gemini_proxy).headers["x-goog-upload-url"]
    assert upload(url, b"\x00not json{{").status_code == 200


# ---- units --------------------------------------------------------------------------------


def gemini() -> Any:
    record = next(p for p in CATALOGUE if p.prefix == "/gemini")
    return replace(record, upstream="https://private.internal:8443/google")


def test_proxy_upload_url_keeps_the_upload_id_and_drops_any_key() -> None:
    url = "https://private.internal:8443/google/upload/v1beta/files?upload_id=AB-c_9&key=fake-gemini-key-123&upload_protocol=resumable"
    rewritten = proxy_upload_url(url, gemini(), "https://p.example")
    assert rewritten == (
        "https://p.example/gemini/upload/v1beta/files?upload_id=AB-c_9&upload_protocol=resumable",
        "/upload/v1beta/files",
    )
    # Outside the configured base path: not routable back, so not handed out.
    assert (
        proxy_upload_url("https://x/upload/v1beta/files?upload_id=1", gemini(), "https://p") is None
    )


def test_the_scrubber_leaves_the_rewritten_url_whole() -> None:
    key = "fake-gemini-key-123"
    found = proxy_upload_url(
        f"https://private.internal:8443/google/upload/v1beta/files?key={key}&upload_id=1",
        gemini(),
        "https://p.example",
    )
    assert found is not None
    headers, _ = client_response_headers(
        [(b"x-goog-upload-url", found[0].encode())], Scrubber([key])
    )
    assert headers[0] == (
        b"x-goog-upload-url",
        b"https://p.example/gemini/upload/v1beta/files?upload_id=1",
    )


def test_upload_id_and_origin_parsing() -> None:
    assert upload_id_of(b"upload_id=abc&upload_protocol=resumable") == "abc"
    assert upload_id_of(b"alt=sse") is None
    for bad in (b"upload_id=a&upload%5Fid=b", b"upload_id=", b"upload_id=a%0Ab"):
        with pytest.raises(BadRequest):
            upload_id_of(bad)
    scope: dict[str, Any] = {"scheme": "http", "headers": [(b"host", b"127.0.0.1:8787")]}
    assert public_origin(scope) == "http://127.0.0.1:8787"
    scope["headers"].append((b"x-forwarded-proto", b"https, http"))
    assert public_origin(scope) == "https://127.0.0.1:8787"
    scope["headers"] = [(b"host", b"a@b.example")]
    assert public_origin(scope) is None


SESSION = uploads.UploadSession("caller", "shared", 0, "/upload/v1beta/files")


async def test_issued_upload_ids_are_bounded_and_expire(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(uploads, "MEMORY_SESSIONS", 3)
    sessions = uploads.UploadSessions(None)
    for number in range(5):
        await sessions.issue(f"id-{number}", SESSION)
    assert await sessions.find("id-0") is None  # the oldest went first
    assert await sessions.find("id-4") == SESSION
    later = time.time() + uploads.SESSION_SECONDS + 1
    monkeypatch.setattr(uploads, "time", SimpleNamespace(time=lambda: later))
    assert await sessions.find("id-4") is None


async def test_issued_upload_ids_live_in_the_token_store_by_digest(tmp_path: Any) -> None:
    store = open_store(f"sqlite:///{tmp_path}/tokens.db")
    sessions = uploads.UploadSessions(store)
    session = uploads.UploadSession("token:abc", "token:abc", 1, "/upload/v1beta/files")
    await sessions.issue("secret-upload-id", session)
    assert await uploads.UploadSessions(store).find("secret-upload-id") == session
    [item] = store.scan("upload:")
    assert "secret-upload-id" not in item.key and item.expires_at


@pytest.mark.parametrize(
    ("in_path", "in_query"),
    [
        (f";key={FAKE_TOKEN}", ""),
        ("", f"&x={FAKE_TOKEN}"),
        ("", "&x=" + FAKE_TOKEN.replace("-", "%252D")),
        (";x=" + FAKE_TOKEN.replace("-", "%2D"), ""),
    ],
)
def test_a_leg_that_holds_the_token_that_started_it_is_refused(
    gemini_proxy: RunningServer, mock_upstream: RunningServer, in_path: str, in_query: str
) -> None:
    """A leg carries no credential, so the refusal of a credential in a URL (core/request.py)
    had nothing to compare: the token that started the upload went upstream in the leg's
    path or query (and into the access log)."""
    url = start(gemini_proxy).headers["x-goog-upload-url"]
    base, _, query = url.partition("?")
    reset_upstream(mock_upstream)
    done = upload(f"{base}{in_path}?{query}{in_query}")
    assert done.status_code == 400, done.text
    assert "proxy credential" in done.json()["error"]["message"]
    assert done.headers["x-goog-upload-status"] == "final"
    assert upstream_requests(mock_upstream) == []
    # The same leg without it still goes through.
    assert upload(url).status_code == 200


@pytest.mark.parametrize(
    "header",
    [
        {"x-auth-token": FAKE_TOKEN},
        {"x-client-note": f"Bearer {FAKE_TOKEN}"},
        {"x-client-note": FAKE_TOKEN.replace("-", "%2D")},
    ],
)
def test_a_leg_header_that_holds_the_token_that_started_it_is_not_forwarded(
    gemini_proxy: RunningServer, mock_upstream: RunningServer, header: dict[str, str]
) -> None:
    """As a request's own credential is dropped from its other headers (core/headers.py):
    a leg, which carries none, sent the starting token upstream in X-Auth-Token."""
    url = start(gemini_proxy).headers["x-goog-upload-url"]
    reset_upstream(mock_upstream)
    done = upload(url, **header, **{"x-kept": "kept"})
    assert done.status_code == 200, done.text
    (leg,) = upstream_requests(mock_upstream)
    headers: dict[str, str] = leg["headers"]  # type: ignore[assignment]
    assert headers.get("x-kept") == "kept"
    assert not [name for name in header if name in headers]
    assert FAKE_TOKEN not in str(headers)
