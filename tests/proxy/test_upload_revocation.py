"""An upload_id lives no longer than the token that started it (issue 19, class 2): each
upload leg checks that token again, over real sockets against the mock upstream."""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.access.tokens import create_token, revoke_token, set_disabled
from core.app import create_app
from core.config import load_settings
from core.stores import open_store
from tests.support.gemini import START, start_upload, upload
from tests.support.gemini import UPLOAD_KEY as GEMINI_KEY
from tests.support.servers import (
    FAKE_TOKEN,
    RunningServer,
    proxy_env,
    reset_upstream,
    serve_in_thread,
    upstream_requests,
)


def gemini_on_token_store(
    mock_upstream: RunningServer, store_url: str, cache_seconds: str = "0"
) -> AbstractContextManager[RunningServer]:
    """The proxy in front of the mock's Gemini, its tokens in `store_url`."""
    env = proxy_env(
        mock_upstream.url,
        GEMINI_API_KEY=GEMINI_KEY,
        GEMINI_UPSTREAM=mock_upstream.url,
        TOKEN_STORE=store_url,
        TOKEN_CACHE_SECONDS=cache_seconds,
    )
    return serve_in_thread(create_app(load_settings(env)))


@pytest.mark.parametrize("how", ["revoked", "disabled"])
def test_an_upload_id_stops_working_when_its_token_is_revoked(
    mock_upstream: RunningServer, tmp_path: Path, how: str
) -> None:
    store_url = f"sqlite:///{tmp_path}/tokens.db"
    store = open_store(store_url)
    token, record = create_token(store, "uploader")
    with gemini_on_token_store(mock_upstream, store_url) as proxy:
        reset_upstream(mock_upstream)
        kept = start_upload(proxy, token)
        assert upload(kept).status_code == 200  # a good token's upload goes through
        url = start_upload(proxy, token)
        if how == "revoked":
            revoke_token(store, record.id)
        else:
            set_disabled(store, record.id, True)
        refused = upload(url)
    assert refused.status_code == 401
    # Final: the SDKs stop instead of retrying the refused chunk.
    assert refused.headers["x-goog-upload-status"] == "final"
    assert "no longer valid" in refused.text


@pytest.mark.parametrize("second", ["uploadId", "UPLOAD_ID", "%75pload_id"])
def test_an_upload_id_named_twice_in_any_spelling_is_refused(
    mock_upstream: RunningServer, second: str
) -> None:
    env = proxy_env(mock_upstream.url, GEMINI_API_KEY=GEMINI_KEY, GEMINI_UPSTREAM=mock_upstream.url)
    with serve_in_thread(create_app(load_settings(env))) as proxy:
        url = start_upload(proxy, FAKE_TOKEN)
        reset_upstream(mock_upstream)
        refused = upload(f"{url}&{second}=another-upload")
    assert refused.status_code == 400
    assert "more than once" in refused.text
    assert upstream_requests(mock_upstream) == []  # the leg never reached the provider


def test_an_upload_url_handed_out_on_a_leg_stops_with_the_same_token(
    mock_upstream: RunningServer, tmp_path: Path
) -> None:
    """An upload leg carries no token of its own: an upload URL its reply hands out (a
    `start` sent down the leg) belongs to the token that started the first session. Issued
    as tokenless, it would outlive that token's revocation, and each leg could mint the
    next: an upload capability without end."""
    store_url = f"sqlite:///{tmp_path}/tokens.db"
    store = open_store(store_url)
    token, record = create_token(store, "uploader")
    with gemini_on_token_store(mock_upstream, store_url) as proxy:
        reset_upstream(mock_upstream)
        first = start_upload(proxy, token)
        # The start command again, down the upload leg: no credential, the upload_id only.
        again = httpx.post(first, headers=START, json={"file": {"display_name": "notes"}})
        assert again.status_code == 200, again.text
        second = again.headers.get("x-goog-upload-url")
        assert second and second != first
        revoke_token(store, record.id)
        refused = upload(second)
    assert refused.status_code == 401
    assert refused.headers["x-goog-upload-status"] == "final"


def test_an_upload_id_stops_when_its_token_expires(
    mock_upstream: RunningServer, tmp_path: Path
) -> None:
    """Expiry is checked on every leg, cached record or not (TOKEN_CACHE_SECONDS=5 here)."""
    import time

    store_url = f"sqlite:///{tmp_path}/tokens.db"
    store = open_store(store_url)
    token, _ = create_token(store, "short-lived", expires_at=time.time() + 1.5)
    with gemini_on_token_store(mock_upstream, store_url, cache_seconds="5") as proxy:
        reset_upstream(mock_upstream)
        url = start_upload(proxy, token)
        time.sleep(1.6)
        refused = upload(url)
    assert refused.status_code == 401
    assert refused.headers["x-goog-upload-status"] == "final"


def test_an_upload_id_stops_when_its_token_is_narrowed_past_the_provider(
    mock_upstream: RunningServer, tmp_path: Path
) -> None:
    """A rule holds for as long as what it guards stays open: a token scoped to Gemini
    starts an upload, then its owner narrows it to OpenAI. The next leg is refused as the
    token's own request to Gemini would be, not let through for the upload's 24 hours."""
    from dataclasses import replace  # noqa: TID251  # a token record is a dataclass

    from core.access.tokens import store_key

    store_url = f"sqlite:///{tmp_path}/tokens.db"
    store = open_store(store_url)
    token, record = create_token(store, "uploader", providers=("gemini",))
    with gemini_on_token_store(mock_upstream, store_url) as proxy:
        url = start_upload(proxy, token)
        narrowed = replace(record, providers=("openai",))
        store.put(store_key(record.token_hash), narrowed.to_doc())
        reset_upstream(mock_upstream)
        refused = upload(url)
        assert upstream_requests(mock_upstream) == []  # the bytes never reached Gemini
    assert refused.status_code == 403, refused.text
    assert "may not use the provider 'gemini'" in refused.text
    # Final: google-genai stops at once instead of sending the chunk three more times.
    assert refused.headers["x-goog-upload-status"] == "final"


def test_an_upload_leg_refused_by_any_rule_is_final(mock_upstream: RunningServer) -> None:
    """A leg refused by a limit (here the caller's requests per hour) says the upload is
    over: without `x-goog-upload-status` google-genai sends the chunk again three times,
    seven seconds, before failing."""
    env = proxy_env(
        mock_upstream.url,
        GEMINI_API_KEY=GEMINI_KEY,
        GEMINI_UPSTREAM=mock_upstream.url,
        RATE_LIMIT_REQUESTS="1",
        RATE_LIMIT_WINDOW="3600",
    )
    with serve_in_thread(create_app(load_settings(env))) as proxy:
        url = start_upload(proxy, FAKE_TOKEN)
        refused = upload(url)
    assert refused.status_code == 429, refused.text
    assert refused.headers["x-goog-upload-status"] == "final"


@pytest.mark.parametrize("query", ["upload_id=a&uploadId=b", "upload_id=%00", "upload_id="])
def test_an_upload_leg_with_an_upload_id_that_is_not_one_is_final(
    mock_upstream: RunningServer, query: str
) -> None:
    """A leg whose URL names its upload_id twice or names a value that cannot be one: the
    400 in Gemini's shape, final, so google-genai raises it at once."""
    env = proxy_env(mock_upstream.url, GEMINI_API_KEY=GEMINI_KEY, GEMINI_UPSTREAM=mock_upstream.url)
    with serve_in_thread(create_app(load_settings(env))) as proxy:
        refused = upload(f"{proxy.url}/gemini/upload/v1beta/files?{query}")
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert refused.headers["x-goog-upload-status"] == "final"


def test_an_upload_leg_whose_session_store_fails_is_a_503_worth_a_retry(
    mock_upstream: RunningServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The sessions live in the token store: when it fails, a leg is the store's 503 (not
    final: google-genai sends the chunk again, as a passing fault deserves), never the
    proxy's 500, and the log names the failure's type, never its text."""
    store_url = f"sqlite:///{tmp_path}/tokens.db"
    token, _ = create_token(open_store(store_url), "uploader")
    env = proxy_env(
        mock_upstream.url,
        GEMINI_API_KEY=GEMINI_KEY,
        GEMINI_UPSTREAM=mock_upstream.url,
        TOKEN_STORE=store_url,
        TOKEN_CACHE_SECONDS="0",
    )
    app = create_app(load_settings(env))
    with serve_in_thread(app) as proxy:
        url = start_upload(proxy, token)

        def broken(key: str) -> None:
            raise OSError("redis://:hunter2@store.invalid refused")

        app.proxy.endpoint.uploads.store.get = broken  # type: ignore[attr-defined]
        reset_upstream(mock_upstream)
        refused = upload(url)
        assert upstream_requests(mock_upstream) == []
    assert refused.status_code == 503, refused.text
    assert "token store is unavailable" in refused.json()["error"]["message"]  # Gemini's shape
    assert "x-goog-upload-status" not in refused.headers
    assert "hunter2" not in caplog.text and "OSError" in caplog.text


@pytest.mark.parametrize(
    ("change", "status"),
    [
        # The proxy credential in the leg's URL: refused while the request is read (with
        # `key=` it is the leg's own credential, and a second copy is the refusal), or
        # when the leg is matched to the token that started it.
        (lambda url: (url + f"&key={FAKE_TOKEN}&x={FAKE_TOKEN}", b"hello"), 400),
        (lambda url: (url + f"&x={FAKE_TOKEN}", b"hello"), 400),
        # A chunk over MAX_BODY_BYTES.
        (lambda url: (url, b"x" * 1_100_000), 413),
    ],
)
def test_an_upload_leg_refused_before_it_is_recognised_is_final(
    mock_upstream: RunningServer, change: Any, status: int
) -> None:
    """However early a leg is refused (while its URL and headers are read, before its
    upload_id is looked up), the refusal says the upload is over: google-genai otherwise
    sends the chunk again three times and then fails with "Upload status is not
    finalized", not the proxy's reason."""
    env = proxy_env(
        mock_upstream.url,
        GEMINI_API_KEY=GEMINI_KEY,
        GEMINI_UPSTREAM=mock_upstream.url,
        MAX_BODY_BYTES="1000000",
    )
    with serve_in_thread(create_app(load_settings(env))) as proxy:
        url, chunk = change(start_upload(proxy, FAKE_TOKEN))
        refused = upload(url, chunk)
    assert refused.status_code == status, refused.text
    assert refused.headers["x-goog-upload-status"] == "final"
