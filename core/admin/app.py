"""The dashboard: a small Starlette app at /admin, beside the proxy, on when ADMIN_TOKEN is.

ProxyApp (core/app.py) hands it every path under /admin and builds it on the first such
request, so a cold start that serves only the proxy never imports it. It is plain ASGI
inside the proxy's app, so every platform adapter serves it as it serves the proxy. It takes
the few parts of the proxy it uses (`AdminParts`), never the proxy's app itself.

What is public: the sign-in page, its form POST (rate limited per client IP) and the
static CSS/JS (no data in them). Everything else needs the session cookie (pages; the
JSON API also wants the CSRF header on changes) or `Authorization: Bearer <ADMIN_TOKEN>`
(the JSON API, for scripts). A page without a session redirects to sign-in.
"""

from __future__ import annotations

import functools
import html
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from core.access.client_ip import client_ip_rule
from core.admin.api import AdminAPI, APIError, error_response, off_loop
from core.admin.security import (
    COOKIE_NAME,
    CSRF_HEADER,
    SECURITY_HEADERS,
    AdminAuth,
    FailureLimiter,
    Session,
    SignedOutSessions,
    cookie_is_secure,
    cross_site_reason,
    csrf_matches,
    session_cookie,
)
from core.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from core.access.status import ServiceStatus
    from core.providers import Provider
    from core.stores import Store
    from core.usage.ledger import UsageLedger

logger = logging.getLogger("llm_proxy")

PAGES = ("tokens", "usage", "requests", "providers", "status", "routes")
STATIC_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
SAFE_METHODS = ("GET", "HEAD")
Handler = Callable[[Request], Awaitable[Response]]
MAX_FORM_BODY = 4096


def _static(name: str) -> bytes:
    return (resources.files("core.admin") / "static" / name).read_bytes()


@functools.cache
def _served_files() -> frozenset[str]:
    """The files /admin/static/ serves, by name. A name from the URL is only ever looked up
    here, never handed to the file system: a NUL byte or an over-long name raised there
    (a 500 for anyone), and no path trick can reach beyond the list."""
    folder = resources.files("core.admin") / "static"
    return frozenset(
        entry.name
        for entry in folder.iterdir()
        if entry.is_file() and entry.name[entry.name.rfind(".") :] in STATIC_TYPES
    )


class SecurityHeaders:
    """Puts the CSP and the other hardening headers on every dashboard response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.headers = [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_hardened(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name.lower() for name, _ in message.get("headers", ())}
                extra = [(n, v) for n, v in self.headers if n not in names]
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        await self.app(scope, receive, send_hardened)


@dataclass(frozen=True)
class AdminParts:
    """What the dashboard uses of the running proxy (core/app.py gathers them)."""

    admin_token: str = field(repr=False)
    client_ip_source: str  # CLIENT_IP_SOURCE: whose address a failed sign-in counts against
    token_store: Store | None  # the callers' tokens; None with PROXY_ACCESS_TOKEN only
    failure_store: Store  # failed sign-ins: the token store, else the process's memory
    ledger: UsageLedger
    status: ServiceStatus  # the kill switch and schedule
    providers: tuple[Provider, ...]


class Admin:
    def __init__(self, parts: AdminParts) -> None:
        self.auth = AdminAuth(parts.admin_token)
        self.failures = FailureLimiter(parts.failure_store)
        # Sessions signed out before their cookie expires (kept where the failures are).
        self.signed_out = SignedOutSessions(parts.failure_store)
        self.client_ip = client_ip_rule(parts.client_ip_source)
        self.api = AdminAPI(parts.token_store, parts.ledger, parts.status, parts.providers)

    # ---- who is asking -----------------------------------------------------------------

    def _refusal(self, request: Request) -> Response | None:
        reason = cross_site_reason(
            request.headers.get("origin"),
            request.headers.get("sec-fetch-site"),
            request.headers.get("host"),
        )
        if reason is None:
            return None
        return error_response(
            403, "cross_origin", f"The dashboard takes no cross-origin requests ({reason})."
        )

    async def _check_token(self, ip: str, candidate: str) -> tuple[bool, Response | None]:
        """Whether `candidate` is the admin token, or the 429 to send when this address has
        no attempts left. Each attempt reserves its place in the failure count before the
        comparison (a right token gives it back), so concurrent guesses cannot all be
        compared while the count is read."""
        failures, auth = self.failures, self.auth
        matched, wait = await off_loop(
            failures.store, lambda: failures.attempt(ip, lambda: auth.token_matches(candidate))
        )
        if wait is None:
            return matched, None
        return False, error_response(
            429,
            "too_many_failures",
            f"Too many wrong admin tokens from this address; try again in {wait} s.",
            **{"retry-after": str(wait)},
        )

    async def session(self, request: Request) -> Session | None:
        """The session the cookie proves, unless it was signed out (on any instance)."""
        session = self.auth.verify(request.cookies.get(COOKIE_NAME))
        if session is None:
            return None
        signed_out = self.signed_out
        if await off_loop(signed_out.store, lambda: signed_out.is_revoked(session)):
            return None
        return session

    @staticmethod
    def _secure(request: Request) -> bool:
        return cookie_is_secure(
            request.scope.get("scheme", "http"),
            request.scope.get("headers", []),
            request.headers.get("host", ""),
        )

    async def authenticate(self, request: Request) -> Response | None:
        """None if the request may go on, else the refusal to send."""
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        authorization = request.headers.get("authorization")
        if authorization is not None:
            scheme, _, credential = authorization.partition(" ")
            if scheme.lower() != "bearer":
                credential = ""  # counted as a wrong token
            matched, limited = await self._check_token(
                self.client_ip(request.scope), credential.strip()
            )
            if limited is not None:
                return limited
            if matched:
                return None  # a script: no cookie, so no CSRF to guard against
            return error_response(
                401, "not_admin", "Send 'Authorization: Bearer <ADMIN_TOKEN>' or sign in."
            )
        session = await self.session(request)
        if session is None:
            return error_response(401, "not_signed_in", "Sign in at /admin/sign-in.")
        if request.method not in SAFE_METHODS and not csrf_matches(
            session, request.headers.get(CSRF_HEADER)
        ):
            return error_response(
                403, "csrf", "This change needs the session's X-CSRF-Token header."
            )
        return None

    # ---- pages ---------------------------------------------------------------------------

    async def page(self, request: Request) -> Response:
        name = request.path_params.get("page", "tokens")
        if name not in PAGES:
            return error_response(404, "not_found", "No such dashboard page.")
        if self._refusal(request) is not None or await self.session(request) is None:
            return RedirectResponse("/admin/sign-in", status_code=303)
        return Response(_static("app.html"), media_type="text/html; charset=utf-8")

    async def home(self, request: Request) -> Response:
        signed_in = await self.session(request) is not None
        return RedirectResponse("/admin/tokens" if signed_in else "/admin/sign-in", 303)

    def _sign_in_page(self, message: str = "", status: int = 200) -> Response:
        text = _static("signin.html").decode()
        if message:
            text = text.replace(
                "<!--message-->", f'<p class="error" role="alert">{html.escape(message)}</p>'
            )
        return Response(text, status_code=status, media_type="text/html; charset=utf-8")

    async def sign_in_form(self, request: Request) -> Response:
        if await self.session(request) is not None:
            return RedirectResponse("/admin/tokens", status_code=303)
        return self._sign_in_page()

    async def sign_in(self, request: Request) -> Response:
        if self._refusal(request) is not None:
            return self._sign_in_page("Sign-in from another site is refused.", 403)
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM_BODY:
                return self._sign_in_page("That form is too large.", 413)
        try:
            fields = parse_qs(body.decode("utf-8", "replace"), max_num_fields=5)
        except ValueError:  # more fields than the form has: parse_qs raises
            return self._sign_in_page("That form is not the sign-in form.", 400)
        candidate = (fields.get("token") or [""])[0].strip()
        matched, limited = await self._check_token(self.client_ip(request.scope), candidate)
        if limited is not None:
            page = self._sign_in_page("Too many wrong tokens: wait a few minutes.", 429)
            page.headers["retry-after"] = limited.headers["retry-after"]
            return page
        if not matched:
            logger.warning("admin sign-in refused")
            return self._sign_in_page("That is not the admin token.", 401)
        value, _ = self.auth.issue()
        response = RedirectResponse("/admin/tokens", status_code=303)
        response.headers.append("set-cookie", session_cookie(value, secure=self._secure(request)))
        return response

    async def sign_out(self, request: Request) -> Response:
        refusal = await self.authenticate(request)
        if refusal is not None:
            return refusal
        # Revoked on the server: a copy of the cookie (another tab, a stolen one) is
        # refused from now on, not only this browser's deleted.
        session = await self.session(request)
        if session is not None:
            signed_out = self.signed_out
            await off_loop(signed_out.store, lambda: signed_out.revoke(session))
        response = JSONResponse({"signed_out": True})
        response.headers.append(
            "set-cookie", session_cookie("", secure=self._secure(request), max_age=0)
        )
        return response

    async def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in _served_files():
            return error_response(404, "not_found", "No such file.")
        return Response(_static(name), media_type=STATIC_TYPES[name[name.rfind(".") :]])

    # ---- the JSON API --------------------------------------------------------------------

    async def session_info(self, request: Request) -> Response:
        refusal = self._refusal(request)
        session = await self.session(request)
        if refusal is not None or session is None:
            return refusal or error_response(401, "not_signed_in", "Sign in at /admin/sign-in.")
        return JSONResponse({"csrf": session.csrf, "expires_at": session.expires_at})

    def guarded(self, handler: Handler) -> Handler:
        async def endpoint(request: Request) -> Response:
            refusal = await self.authenticate(request)
            if refusal is not None:
                return refusal
            try:
                return await handler(request)
            except APIError as exc:
                return error_response(exc.status, exc.code, exc.message)

        return endpoint

    def routes(self) -> list[Route]:
        api, guarded = self.api, self.guarded
        return [
            Route("/admin", self.home, methods=["GET"]),
            Route("/admin/", self.home, methods=["GET"]),
            Route("/admin/sign-in", self.sign_in_form, methods=["GET"]),
            Route("/admin/sign-in", self.sign_in, methods=["POST"]),
            Route("/admin/sign-out", self.sign_out, methods=["POST"]),
            Route("/admin/static/{name}", self.static, methods=["GET"]),
            Route("/admin/api/session", self.session_info, methods=["GET"]),
            Route("/admin/api/tokens", guarded(api.list_tokens), methods=["GET"]),
            Route("/admin/api/tokens", guarded(api.create_token), methods=["POST"]),
            Route("/admin/api/tokens/{token_id}", guarded(api.revoke_token), methods=["DELETE"]),
            Route(
                "/admin/api/tokens/{token_id}/{action:str}",
                guarded(self._disable_or_enable),
                methods=["POST"],
            ),
            Route("/admin/api/status", guarded(api.get_status), methods=["GET"]),
            Route("/admin/api/status", guarded(api.put_status), methods=["PUT"]),
            Route("/admin/api/schedule", guarded(api.get_schedule), methods=["GET"]),
            Route("/admin/api/schedule", guarded(api.put_schedule), methods=["PUT"]),
            Route("/admin/api/usage", guarded(api.usage), methods=["GET"]),
            Route("/admin/api/providers", guarded(api.providers_info), methods=["GET"]),
            Route("/admin/api/requests", guarded(api.requests), methods=["GET"]),
            Route("/admin/api/routes", guarded(api.routes), methods=["GET"]),
            Route("/admin/{page}", self.page, methods=["GET"]),
        ]

    async def _disable_or_enable(self, request: Request) -> Response:
        if request.path_params["action"] not in ("disable", "enable"):
            raise APIError(404, "not_found", "Use .../disable or .../enable.")
        return await self.api.set_disabled(request)


async def _refused_by_router(request: Request, exc: Exception) -> Response:
    """A path no route serves, or a method it does not take: JSON, as every error of the
    dashboard and the proxy is, not Starlette's plain-text default."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        headers = dict(exc.headers or {})
        return error_response(
            405, "method_not_allowed", "This method is not allowed here.", **headers
        )
    return error_response(exc.status_code, "not_found", "No such dashboard path.")


def build_admin_app(parts: AdminParts) -> ASGIApp:
    admin = Admin(parts)
    handlers = {HTTPException: _refused_by_router}
    return SecurityHeaders(Starlette(routes=admin.routes(), exception_handlers=handlers))
