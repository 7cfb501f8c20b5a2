"""Unit checks of the dashboard's rules: cookie signing, CSRF, origins, loopback, limits."""

from __future__ import annotations

import time

import pytest

from core.admin.security import (
    SECURITY_HEADERS,
    AdminAuth,
    FailureLimiter,
    cross_site_reason,
    csrf_matches,
    is_loopback_host,
    session_cookie,
)
from core.config import ConfigError, load_settings
from core.stores import open_store
from tests.support.admin import ADMIN_TOKEN, admin_env


def test_a_short_admin_token_is_a_config_error_naming_it() -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(admin_env(ADMIN_TOKEN="too-short-for-an-admin"))
    [problem] = [p for p in raised.value.problems if "ADMIN_TOKEN" in p]
    assert "32 characters" in problem and "too-short" not in problem


def test_session_cookies_are_signed_and_expire() -> None:
    auth = AdminAuth(ADMIN_TOKEN)
    value, session = auth.issue(now=1000.0)
    assert auth.verify(value, now=1001.0) == session
    assert auth.verify(value, now=session.expires_at + 1) is None
    payload, mac = value.split(".")
    # A payload with a later expiry but the old MAC, another deployment's cookie, junk.
    forged = AdminAuth(ADMIN_TOKEN).issue(now=10**9)[0].split(".")[0] + "." + mac
    assert auth.verify(forged, now=1001.0) is None
    assert AdminAuth("another-admin-token-0123456789abcdef").verify(value, now=1001.0) is None
    for junk in (None, "", "x", "a.b.c", payload + ".", "." + mac):
        assert auth.verify(junk, now=1001.0) is None
    assert ADMIN_TOKEN not in value


def test_admin_token_comparison_and_csrf() -> None:
    auth = AdminAuth(ADMIN_TOKEN)
    assert auth.token_matches(ADMIN_TOKEN)
    assert not auth.token_matches(ADMIN_TOKEN + "x") and not auth.token_matches("")
    _, session = auth.issue()
    assert csrf_matches(session, session.csrf)
    assert not csrf_matches(session, None) and not csrf_matches(session, session.csrf[:-1])


def test_cookie_attributes() -> None:
    local = session_cookie("v", secure=False)
    assert "HttpOnly" in local and "SameSite=Strict" in local and "Path=/admin" in local
    assert "Secure" not in local
    assert session_cookie("v", secure=True).endswith("; Secure")


@pytest.mark.parametrize(
    "host,loopback",
    [
        ("127.0.0.1:8787", True),
        ("127.3.4.5", True),
        ("[::1]:8787", True),
        ("localhost:3000", True),
        ("admin.example.com", False),
        ("10.0.0.1:80", False),
        ("127.0.0.1.evil.com", False),
        ("", False),
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


def test_cross_site_requests_are_named() -> None:
    host = "proxy.example.com"
    assert cross_site_reason(None, None, host) is None  # a script
    assert cross_site_reason("https://proxy.example.com", "same-origin", host) is None
    assert cross_site_reason(None, "none", host) is None  # typed in the address bar
    assert cross_site_reason("https://evil.example", None, host) is not None
    assert cross_site_reason("null", None, host) is not None
    assert cross_site_reason(None, "cross-site", host) is not None
    assert cross_site_reason(None, "same-site", host) is not None  # a sibling subdomain
    # Chromium's same-origin form POST under Referrer-Policy: no-referrer.
    assert cross_site_reason("null", "same-origin", host) is None
    assert cross_site_reason("https://evil.example", "cross-site", host) is not None


def test_csp_is_strict() -> None:
    csp = SECURITY_HEADERS["content-security-policy"]
    for rule in (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "form-action 'self'",
        "base-uri 'none'",
    ):
        assert rule in csp
    assert "unsafe" not in csp


def test_failures_are_limited_per_ip_and_window() -> None:
    limiter = FailureLimiter(open_store("memory://"), max_failures=3, window=300)
    now = time.time() // 300 * 300 + 1  # the start of a window
    for _ in range(3):
        assert limiter.reserve("10.0.0.1", now) is None  # reserved, then failed: kept
    wait = limiter.reserve("10.0.0.1", now)
    assert wait is not None and 0 < wait <= 300
    assert limiter.reserve("10.0.0.2", now) is None
    assert limiter.reserve("10.0.0.1", now + 300) is None  # the next window


def test_a_right_credential_gives_its_reservation_back() -> None:
    limiter = FailureLimiter(open_store("memory://"), max_failures=2, window=300)
    now = time.time() // 300 * 300 + 1
    for _ in range(5):
        assert limiter.reserve("10.0.0.1", now) is None
        limiter.succeeded("10.0.0.1", now)
    assert limiter.reserve("10.0.0.1", now) is None
