"""How the dashboard knows its operator: ADMIN_TOKEN, a signed session cookie, CSRF.

- Sign-in and `Authorization: Bearer` compare SHA-256 digests of ADMIN_TOKEN in constant
  time. A proxy token is never an admin credential (different secret, different check).
- The session cookie is `<payload>.<mac>`: payload = base64url JSON {exp, csrf, sid}, mac =
  HMAC-SHA256 under a key derived from ADMIN_TOKEN (rotating the token signs everyone out).
  Signing out revokes the session on the server (its sid, kept in the store until the
  cookie would have expired): a copy of the cookie stops working too.
  HttpOnly, SameSite=Strict, Path=/admin. Secure unless the request plainly came over http
  to a loopback host: `X-Forwarded-Proto: https` (or `Forwarded: proto=https`) from a TLS
  front end adds Secure whatever the Host. Such a header is trusted without knowing who
  sent it because it can only add Secure, never remove it: a forged one only keeps the
  forger's own cookie off plain http.
- A state-changing request from a browser session must carry the session's CSRF token in
  `X-CSRF-Token`; every request whose Origin or Sec-Fetch-Site says cross-site is refused.
- Failed credentials count per client IP in the store's counters (shared by every
  instance): after MAX_FAILURES in FAILURE_WINDOW seconds, 429 until the window ends. Each
  attempt reserves its place in the count before the credential is checked, and a right
  one gives it back: however many arrive at once, at most MAX_FAILURES are checked.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from core.stores import Store

COOKIE_NAME = "llmp_admin"
SESSION_SECONDS = 12 * 3600
MAX_FAILURES = 5
FAILURE_WINDOW = 300
CSRF_HEADER = "x-csrf-token"

# Sent on every dashboard response, page or JSON.
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
}


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Session:
    expires_at: float
    csrf: str
    # Names the session for revocation at sign-out.
    sid: str = ""


class AdminAuth:
    """Checks ADMIN_TOKEN and issues / verifies session cookies."""

    def __init__(self, admin_token: str) -> None:
        self._digest = hashlib.sha256(admin_token.encode()).digest()
        # A key of its own: the cookie MAC never uses the token itself.
        self._key = hmac.new(admin_token.encode(), b"llm-proxy admin session v1", "sha256").digest()

    def token_matches(self, candidate: str | bytes) -> bool:
        raw = candidate.encode() if isinstance(candidate, str) else candidate
        return hmac.compare_digest(hashlib.sha256(raw).digest(), self._digest)

    def _mac(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), "sha256").digest())

    def issue(self, now: float | None = None) -> tuple[str, Session]:
        """A new session and its cookie value."""
        session = Session(
            expires_at=(time.time() if now is None else now) + SESSION_SECONDS,
            csrf=secrets.token_urlsafe(24),
            sid=secrets.token_urlsafe(18),
        )
        payload = _b64(
            json.dumps(
                {"exp": session.expires_at, "csrf": session.csrf, "sid": session.sid}
            ).encode()
        )
        return f"{payload}.{self._mac(payload)}", session

    def verify(self, cookie: str | None, now: float | None = None) -> Session | None:
        """The session a cookie proves, or None if it is missing, forged or expired."""
        if not cookie or cookie.count(".") != 1 or len(cookie) > 1024:
            return None
        payload, mac = cookie.split(".")
        if not hmac.compare_digest(mac.encode(), self._mac(payload).encode()):
            return None
        try:
            data = json.loads(_unb64(payload))
            session = Session(
                expires_at=float(data["exp"]), csrf=str(data["csrf"]), sid=str(data["sid"])
            )
        except (ValueError, KeyError, TypeError):
            return None  # a cookie from before sessions could be revoked included
        if session.expires_at <= (time.time() if now is None else now):
            return None
        return session


def csrf_matches(session: Session, header: str | None) -> bool:
    return header is not None and hmac.compare_digest(header.encode(), session.csrf.encode())


class SignedOutSessions:
    """Sessions ended by sign-out, by a digest of their sid, in the store (every instance
    sees them) until the cookie would have expired anyway."""

    def __init__(self, store: Store) -> None:
        self.store = store

    @staticmethod
    def _key(session: Session) -> str:
        return "adminsession:" + hashlib.sha256(session.sid.encode()).hexdigest()[:32]

    def revoke(self, session: Session) -> None:
        self.store.put(self._key(session), {"signed_out": True}, expires_at=session.expires_at)

    def is_revoked(self, session: Session) -> bool:
        return self.store.get(self._key(session)) is not None


def reached_over_tls(scheme: str, headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether the browser's side of the request was https: the server's own scheme, or a
    TLS front end's X-Forwarded-Proto / Forwarded proto (any hop saying https)."""
    if scheme in ("https", "wss"):
        return True
    for name, value in headers:
        if name == b"x-forwarded-proto":
            protos = value.decode("latin-1").lower().split(",")
            if any(proto.strip() == "https" for proto in protos):
                return True
        elif name == b"forwarded":
            for element in value.decode("latin-1").lower().replace(",", ";").split(";"):
                key, _, proto = element.strip().partition("=")
                if key == "proto" and proto.strip().strip('"') == "https":
                    return True
    return False


def cookie_is_secure(scheme: str, headers: list[tuple[bytes, bytes]], host: str) -> bool:
    """Secure unless the request plainly came over http to a loopback host (local use)."""
    return reached_over_tls(scheme, headers) or not is_loopback_host(host)


def is_loopback_host(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost: the only places a cookie may go unsecured."""
    name = host.strip().lower()
    if name.startswith("["):
        name = name[1:].split("]", 1)[0]
    elif name.count(":") == 1:
        name = name.split(":", 1)[0]
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def session_cookie(value: str, *, secure: bool, max_age: int = SESSION_SECONDS) -> str:
    parts = [
        f"{COOKIE_NAME}={value}",
        "Path=/admin",
        f"Max-Age={max_age}",
        "HttpOnly",
        "SameSite=Strict",
    ]
    if secure:
        parts.append("Secure")
    return "; ".join(parts)


def cross_site_reason(origin: str | None, fetch_site: str | None, host: str | None) -> str | None:
    """Why a request is refused as cross-origin, or None when it is same-origin (or from a
    script that sends no Origin at all). Browsers without Sec-Fetch-Site are judged by
    Origin, where an opaque `null` is refused."""
    if fetch_site is not None:
        # A browser sets it and no page can: the most precise answer there is. (Origin
        # alone cannot decide: under Referrer-Policy no-referrer, Chromium sends
        # `Origin: null` on a same-origin form POST.)
        if fetch_site.lower() in ("same-origin", "none"):
            return None
        return f"Sec-Fetch-Site is {fetch_site[:40]!r}"
    if origin is not None:
        if origin == "null" or host is None:
            return "the Origin is opaque"
        # The scheme may be rewritten by a TLS front end; the host a browser names is not.
        origin_host = origin.split("://", 1)[-1].rstrip("/").lower()
        if origin_host != host.lower():
            return "the Origin is another site"
    return None


class FailureLimiter:
    """Counts failed admin credentials per client IP in the store's atomic counters."""

    def __init__(
        self, store: Store, max_failures: int = MAX_FAILURES, window: int = FAILURE_WINDOW
    ):
        self.store = store
        self.max_failures = max_failures
        self.window = window
        self._one_at_a_time = threading.Lock()

    def _key(self, ip: str, now: float) -> tuple[str, float]:
        slot = int(now // self.window)
        # Hashed: a counter key should not spell out who tried.
        digest = hashlib.sha256(ip.encode()).hexdigest()[:32]
        return f"adminfail:{slot}:{digest}", (slot + 1) * self.window

    def reserve(self, ip: str, now: float | None = None) -> int | None:
        """Reserve this attempt's place in the count of failures, before the credential is
        checked: None if reserved (the caller may check), else the seconds until this IP
        may try again. Reading the count and recording the failure later let 37 of 40
        concurrent wrong sign-ins be checked against a limit of 5."""
        now = time.time() if now is None else now
        key, ends = self._key(ip, now)
        if self.store.reserve(key, "failures", 1, self.max_failures, expires_at=ends):
            return None
        return max(1, int(ends - now))

    def succeeded(self, ip: str, now: float | None = None) -> None:
        """A right credential: its reserved place is given back."""
        now = time.time() if now is None else now
        key, ends = self._key(ip, now)
        self.store.increment(key, {"failures": -1}, expires_at=ends)

    def attempt(self, ip: str, matches: Callable[[], bool]) -> tuple[bool, int | None]:
        """One credential check under the limit, in one step (one thread for a blocking
        store, so a script's concurrent right calls hold a place only for that moment):
        (False, seconds to wait) with no attempt left, else (whether it matched, None)."""
        # One attempt at a time in this process: a right call's place is given back before
        # the next is reserved (other instances share only the count).
        with self._one_at_a_time:
            now = time.time()
            wait = self.reserve(ip, now)
            if wait is not None:
                return False, wait
            if not matches():
                return False, None
            self.succeeded(ip, now)
            return True, None
