"""Header hygiene as units, both directions: what the upstream is sent and what the caller
gets. The proxy-level tests (tests/access/test_credential_slots.py, tests/proxy/test_endpoint_in_process.py)
show the sets are applied; these pin the rules around them: names listed in Connection,
prefixes, case, repeated headers, the event-stream marks and the declared length."""

from __future__ import annotations

from core.headers import (
    EVENT_STREAM_HEADERS,
    NOT_A_PAGE,
    upstream_request_headers,
)
from core.headers import (
    client_response_headers as with_page_guard,
)
from core.proxy.scrub import Scrubber
from tests.support.servers import FAKE_UPSTREAM_KEY

UPSTREAM_KEY = FAKE_UPSTREAM_KEY  # the suite's obviously fake key


def names(headers: list[tuple[bytes, bytes]]) -> list[bytes]:
    return [name for name, _ in headers]


def client_response_headers(
    headers: list[tuple[bytes, bytes]], scrubber: Scrubber | None = None
) -> tuple[list[tuple[bytes, bytes]], int | None]:
    """What the caller gets, less the two headers every relayed reply ends with (their
    own test below)."""
    kept, length = with_page_guard(headers, scrubber)
    assert kept[-len(NOT_A_PAGE) :] == NOT_A_PAGE
    return kept[: -len(NOT_A_PAGE)], length


# ---- to the upstream ---------------------------------------------------------------------


def test_names_the_caller_lists_in_connection_are_dropped_whatever_their_spacing_or_case() -> None:
    sent = upstream_request_headers(
        [
            (b"connection", b"keep-alive, X-Tenant ,x-user-id"),
            (b"x-tenant", b"acme"),
            (b"x-user-id", b"alice"),
            (b"x-kept", b"1"),
        ]
    )
    assert names(sent) == [b"x-kept", b"accept-encoding"]


def test_identifying_prefixes_are_dropped_and_lookalike_names_kept() -> None:
    sent = upstream_request_headers(
        [
            (b"x-forwarded-for", b"203.0.113.9"),
            (b"cf-connecting-ip", b"203.0.113.9"),
            (b"sec-fetch-site", b"cross-site"),
            (b"x-amzn-trace-id", b"Root=1"),
            (b"x-request-ids", b"kept: not the x-request-id header"),
            (b"anthropic-version", b"2023-06-01"),
        ]
    )
    assert names(sent) == [b"x-request-ids", b"anthropic-version", b"accept-encoding"]


def test_the_upstream_is_asked_for_identity_once_whatever_the_caller_accepts() -> None:
    sent = upstream_request_headers(
        [(b"accept-encoding", b"gzip, br"), (b"accept", b"*/*"), (b"accept-encoding", b"zstd")]
    )
    assert sent == [(b"accept", b"*/*"), (b"accept-encoding", b"identity")]


def test_repeated_headers_the_upstream_may_see_keep_their_order() -> None:
    sent = upstream_request_headers(
        [(b"x-tag", b"a"), (b"api-key", b"proxy-token"), (b"x-tag", b"b")]
    )
    assert sent == [(b"x-tag", b"a"), (b"x-tag", b"b"), (b"accept-encoding", b"identity")]


# ---- to the caller -----------------------------------------------------------------------


def test_account_and_hop_by_hop_headers_are_dropped_in_any_case() -> None:
    kept, _ = client_response_headers(
        [
            (b"Set-Cookie", b"session=1"),
            (b"OpenAI-Organization", b"org-owner"),
            (b"Transfer-Encoding", b"chunked"),
            (b"Server", b"upstream"),
            (b"Access-Control-Allow-Origin", b"*"),
            (b"X-Proxy-Request-Id", b"spoofed"),
            (b"X-Request-Id", b"req-1"),
        ]
    )
    assert kept == [(b"x-request-id", b"req-1")]


def test_names_the_upstream_lists_in_connection_are_dropped() -> None:
    kept, _ = client_response_headers(
        [
            (b"Connection", b"close, X-Backend-Host"),
            (b"X-Backend-Host", b"10.0.0.7"),
            (b"content-type", b"application/json"),
        ]
    )
    assert kept == [(b"content-type", b"application/json")]


def test_the_declared_length_is_read_only_when_it_is_a_number() -> None:
    kept, length = client_response_headers([(b"Content-Length", b"42")])
    assert length == 42
    assert kept == [(b"content-length", b"42")]
    # A length that is not a number is not sent on either (uvicorn would fail the head):
    # the reply goes out chunked, and a Content-Length kept is always the one reported.
    for odd in (b"4 2", b"9" * 5000):
        kept, length = client_response_headers([(b"content-length", odd)])
        assert length is None
        assert not any(name == b"content-length" for name, _ in kept)
    assert client_response_headers([(b"content-type", b"text/plain")])[1] is None


def test_an_event_stream_is_marked_unbuffered_once_whatever_the_upstream_said() -> None:
    for content_type in (b"text/event-stream", b"Text/Event-Stream; charset=utf-8"):
        kept, _ = client_response_headers(
            [
                # Before the content type and after it: both are replaced.
                (b"cache-control", b"max-age=600"),
                (b"x-accel-buffering", b"yes"),
                (b"content-type", content_type),
                (b"x-accel-buffering", b"yes"),
                (b"cache-control", b"public"),
                (b"x-request-id", b"req-1"),
            ]
        )
        assert kept == [
            (b"content-type", content_type),
            (b"x-request-id", b"req-1"),
            *EVENT_STREAM_HEADERS,
        ]


def test_a_reply_that_is_not_an_event_stream_keeps_its_cache_headers() -> None:
    upstream = [(b"content-type", b"application/json"), (b"cache-control", b"max-age=60")]
    kept, _ = client_response_headers(upstream)
    assert kept == upstream


def test_a_relayed_reply_is_never_a_page_that_shares_the_dashboards_origin() -> None:
    # An upstream's HTML (or a caller's file read back) would render on the proxy's
    # origin, beside /admin: sandboxed, it runs no script and has an origin of its own.
    kept, _ = with_page_guard(
        [
            (b"Content-Type", b"text/html"),
            (b"Content-Security-Policy", b"default-src *; script-src 'unsafe-inline'"),
            (b"X-Content-Type-Options", b"sniff-away"),
        ]
    )
    assert kept == [
        (b"content-type", b"text/html"),
        (b"content-security-policy", b"sandbox"),
        (b"x-content-type-options", b"nosniff"),
    ]


def test_a_key_in_a_header_value_is_redacted() -> None:
    kept, _ = client_response_headers(
        [(b"x-debug", f"used key {UPSTREAM_KEY}".encode())], Scrubber([UPSTREAM_KEY])
    )
    assert UPSTREAM_KEY.encode() not in kept[0][1]
    assert kept[0][0] == b"x-debug"
