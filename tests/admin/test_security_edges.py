"""The dashboard's guards at their edges: cross-site judgement by Origin when a browser sends
no Sec-Fetch-Site (lookalike hosts, case, an opaque origin), loopback hosts (lookalikes of
localhost and 127.0.0.1), and session expiry to the second."""

from __future__ import annotations

import pytest

from core.admin.security import AdminAuth, cross_site_reason, is_loopback_host
from tests.support.lookalikes import origin_lookalikes

HOST = "proxy.example.test"


@pytest.mark.parametrize(
    "origin",
    [f"https://{HOST}", f"http://{HOST}", f"https://{HOST}/", f"https://{HOST.upper()}"],
)
def test_the_same_host_by_origin_is_same_site(origin: str) -> None:
    assert cross_site_reason(origin, None, HOST) is None
    assert cross_site_reason(origin, None, HOST.upper()) is None


LOOKALIKES = [
    (c, o)
    for c, o in origin_lookalikes(f"https://{HOST}")
    if c not in ("upper case", "upper-case host", "trailing slash", "other scheme", "opaque origin")
]


@pytest.mark.parametrize(("change", "origin"), LOOKALIKES, ids=[c for c, _ in LOOKALIKES])
def test_a_lookalike_origin_is_another_site(change: str, origin: str) -> None:
    assert cross_site_reason(origin, None, HOST) == "the Origin is another site", change


def test_an_opaque_origin_or_no_host_is_refused() -> None:
    assert cross_site_reason("null", None, HOST) == "the Origin is opaque"
    assert cross_site_reason(f"https://{HOST}", None, None) == "the Origin is opaque"


def test_no_origin_and_no_fetch_metadata_is_a_script() -> None:
    assert cross_site_reason(None, None, HOST) is None


def test_fetch_metadata_decides_before_the_origin() -> None:
    assert cross_site_reason("null", "same-origin", HOST) is None
    assert cross_site_reason(None, "NONE", HOST) is None
    assert cross_site_reason(f"https://{HOST}", "cross-site", HOST) == (
        "Sec-Fetch-Site is 'cross-site'"
    )
    assert cross_site_reason(None, "x" * 100, HOST) == f"Sec-Fetch-Site is {'x' * 40!r}"


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        "LOCALHOST:8080",
        "app.localhost",
        "127.0.0.1",
        "127.0.0.1:8000",
        "127.9.9.9",
        "[::1]",
        "[::1]:8080",
        "::1",
    ],
)
def test_loopback_hosts(host: str) -> None:
    assert is_loopback_host(host)


@pytest.mark.parametrize(
    "host",
    [
        "localhost.evil.test",
        "evillocalhost",
        "localhostx",
        "127.0.0.1.evil.test",
        "128.0.0.1",
        "[::2]",
        "example.test:80:80",
        "proxy.example.test",
        "",
    ],
)
def test_lookalikes_of_loopback_hosts(host: str) -> None:
    assert not is_loopback_host(host)


def test_a_session_ends_at_its_expiry_to_the_second() -> None:
    auth = AdminAuth("fake-admin-token-for-tests")
    cookie, session = auth.issue(now=1_000_000.0)
    assert auth.verify(cookie, now=session.expires_at - 0.001) is not None
    assert auth.verify(cookie, now=session.expires_at) is None
    assert auth.verify(cookie + "x", now=1_000_000.0) is None
    assert auth.verify(cookie.replace(".", ".x", 1), now=1_000_000.0) is None


def test_a_session_key_depends_on_the_admin_token() -> None:
    cookie, _ = AdminAuth("fake-admin-token-one").issue(now=1_000_000.0)
    assert AdminAuth("fake-admin-token-two").verify(cookie, now=1_000_000.0) is None
    assert AdminAuth("fake-admin-token-one").verify(cookie, now=1_000_000.0) is not None


def test_an_overlong_cookie_is_refused_unread() -> None:
    auth = AdminAuth("fake-admin-token-for-tests")
    cookie, _ = auth.issue(now=1_000_000.0)
    assert len(cookie) < 1024
    padded = cookie + "A" * (1025 - len(cookie))
    assert auth.verify(padded, now=1_000_000.0) is None
