"""The dashboard's JSON API under /admin/api/: what the pages call, and what scripts call
with `Authorization: Bearer <ADMIN_TOKEN>`.

Every operation is the function `llm-proxy tokens` / `llm-proxy usage` already use
(core/access/tokens.py, core/usage/cli.py) or the kill switch's own setter
(core/access/status.py); this module only turns JSON into their arguments and back.
Store calls are synchronous: they run on a worker thread unless the store is in memory.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse as _StarletteJSON
from starlette.responses import Response

from core.access.status import ScheduleError
from core.access.tokens import (
    LATEST_EXPIRY,
    TokenError,
    create_token,
    list_tokens,
    parse_expiry,
    revoke_token,
    set_disabled,
)
from core.access.tokens_cli import check_provider_names, token_state
from core.stores import Store
from core.token_record import TokenRecord
from core.usage.cli import requests_report, usage_report
from core.usage.ledger import GROUPINGS, REQUEST_LOG_SIZE

if TYPE_CHECKING:
    from core.access.status import ServiceStatus
    from core.providers import Provider
    from core.usage.ledger import UsageLedger

T = TypeVar("T")
MAX_JSON_BODY = 64 * 1024


class APIError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class JSONResponse(_StarletteJSON):
    """Starlette's JSON reply written with ASCII escapes: a record stored before text was
    checked (a label holding a lone surrogate, from an older version or an undecodable
    shell argument) is written as `\\udXXX` instead of failing every token list."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, allow_nan=False, separators=(",", ":")).encode()


def error_response(status: int, code: str, message: str, **headers: str) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )


async def off_loop(store: Store | None, work: Callable[[], T]) -> T:
    """Run a store call on a thread for blocking stores; memory stores stay on the loop
    (the event loop is their only writer)."""
    if store is not None and store.blocking:
        return await asyncio.to_thread(work)
    return work()


async def read_json(request: Request) -> dict[str, Any]:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_JSON_BODY:
            raise APIError(413, "too_large", f"The body is over {MAX_JSON_BODY} bytes.")
    try:
        document = json.loads(body or b"{}")
    except ValueError:
        raise APIError(400, "bad_json", "The body is not valid JSON.") from None
    if not isinstance(document, dict):
        raise APIError(400, "bad_json", "The body must be a JSON object.")
    try:
        # A lone surrogate (`"\\ud800"`) is valid JSON yet no UTF-8 text: a label kept with
        # one made every later token list fail, and an error quoting one failed itself.
        json.dumps(document, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise APIError(
            400, "bad_json", "The body holds an escape that is not Unicode text (\\ud800)."
        ) from None
    return document


def _strings(value: Any, name: str) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise APIError(400, "bad_field", f"{name} must be a list of strings")
    return tuple(v.strip() for v in value if v.strip())


def month_start(now: float) -> datetime.date:
    """The tokens page's usage window: the current calendar month, UTC."""
    return datetime.datetime.fromtimestamp(now, datetime.UTC).date().replace(day=1)


def token_json(record: TokenRecord, now: float, usage: dict[str, object] | None) -> dict[str, Any]:
    return {
        "id": record.id,
        "label": record.label,
        "providers": list(record.providers),
        "models": list(record.models),
        "created_at": record.created_at,
        "expires_at": record.expires_at,
        "last_used": record.last_used,
        "budget_usd": record.budget_usd,
        "status": token_state(record, now),
        "usage": usage,
    }


def key_fingerprint(key: str) -> str:
    """The last four characters only, and none of a key too short to spare them."""
    return "…" + key[-4:] if len(key) >= 16 else "…"


def sdk_base_path(provider: Provider) -> tuple[str, str]:
    """Which SDK a route suits and the base path (after the proxy's origin) it takes."""
    return provider.sdk, provider.prefix + provider.sdk_path


class AdminAPI:
    def __init__(
        self,
        token_store: Store | None,
        ledger: UsageLedger,
        status: ServiceStatus,
        providers: tuple[Provider, ...],
    ) -> None:
        self.token_store = token_store
        self.ledger = ledger
        self.status = status
        self.providers = providers

    def _tokens_store(self) -> Store:
        if self.token_store is None:
            raise APIError(
                409,
                "no_token_store",
                "Per-caller tokens need TOKEN_STORE (for example sqlite:///tokens.db); "
                "only PROXY_ACCESS_TOKEN is configured.",
            )
        return self.token_store

    # ---- tokens --------------------------------------------------------------------------

    async def list_tokens(self, request: Request) -> Response:
        store = self._tokens_store()
        now = time.time()
        since = _since(request.query_params.get("since")) or month_start(now)

        def work() -> list[dict[str, Any]]:
            records = list_tokens(store)
            usage = self.ledger.callers_window(since)
            empty: dict[str, object] = {"requests": 0, "total_tokens": 0, "cost_usd": 0.0}
            return [
                token_json(
                    r,
                    now,
                    usage["token:" + r.id].to_json() if "token:" + r.id in usage else empty,
                )
                for r in records
            ]

        tokens = await off_loop(store, work)
        return JSONResponse({"since": since.isoformat(), "tokens": tokens})

    async def create_token(self, request: Request) -> Response:
        store = self._tokens_store()
        body = await read_json(request)
        label = body.get("label")
        if not isinstance(label, str):
            raise APIError(400, "bad_field", "label is required")
        budget = body.get("budget_usd")
        if budget is not None and (
            isinstance(budget, bool)
            or not isinstance(budget, int | float)
            # Compared before float(): JSON's NaN, 1e400 (inf) and a 400-digit integer
            # (float() raises) are no amounts; create_token keeps its own bound too.
            or not 0 <= budget < 1e9
        ):
            raise APIError(400, "bad_field", "budget_usd must be a number of dollars")
        expires = body.get("expires_at")
        now = time.time()
        try:
            if isinstance(expires, int | float) and not isinstance(expires, bool):
                if not expires > now:  # NaN too: it compares false, and never expires
                    raise TokenError("expires_at is in the past")
                if not expires < LATEST_EXPIRY:
                    raise TokenError("expires_at is past the year 9999")
                expires_at: float | None = float(expires)
            elif expires is None or isinstance(expires, str):
                expires_at = parse_expiry(expires, now)
            else:
                raise TokenError("expires_at must be 30d, a date, an ISO time or epoch seconds")
            providers = check_provider_names(_strings(body.get("providers"), "providers"))
            models = _strings(body.get("models"), "models")

            def work() -> tuple[str, TokenRecord]:
                return create_token(
                    store,
                    label,
                    providers=providers,
                    models=models,
                    expires_at=expires_at,
                    now=now,
                    budget_usd=None if budget is None else float(budget),
                )

            token, record = await off_loop(store, work)
        except TokenError as exc:
            raise APIError(400, "bad_token_request", str(exc).replace("--", "")) from None
        # The only response that ever holds the token itself.
        return JSONResponse({**token_json(record, now, None), "token": token}, status_code=201)

    async def _record(self, store: Store, token_id: str) -> TokenRecord:
        records = await off_loop(store, lambda: list_tokens(store))
        for record in records:
            if record.id == token_id:
                return record
        raise APIError(404, "no_such_token", f"No token has the id {token_id[:60]!r}.")

    async def revoke_token(self, request: Request) -> Response:
        store = self._tokens_store()
        record = await self._record(store, request.path_params["token_id"])
        await off_loop(store, lambda: revoke_token(store, record.id))
        return JSONResponse({"id": record.id, "label": record.label, "status": "revoked"})

    async def set_disabled(self, request: Request) -> Response:
        store = self._tokens_store()
        record = await self._record(store, request.path_params["token_id"])
        disabled = request.path_params["action"] == "disable"
        try:
            updated = await off_loop(store, lambda: set_disabled(store, record.id, disabled))
        except TokenError:  # revoked since it was read: a revoke is never undone here
            raise APIError(
                404, "no_such_token", f"No token has the id {record.id!r}: it was revoked."
            ) from None
        return JSONResponse(token_json(updated, time.time(), None))

    # ---- kill switch and schedule ----------------------------------------------------------

    async def get_status(self, request: Request) -> Response:
        doc = await off_loop(self.status.store, self.status.read)
        return JSONResponse(doc.to_json(time.time()))

    async def put_status(self, request: Request) -> Response:
        body = await read_json(request)
        online = body.get("online")
        if not isinstance(online, bool):
            raise APIError(400, "bad_field", 'send {"online": true} or {"online": false}')
        doc = await off_loop(self.status.store, lambda: self.status.set_online(online))
        return JSONResponse(doc.to_json(time.time()))

    async def get_schedule(self, request: Request) -> Response:
        doc = await off_loop(self.status.store, self.status.read)
        return JSONResponse({"windows": doc.to_json(time.time())["windows"]})

    async def put_schedule(self, request: Request) -> Response:
        body = await read_json(request)
        try:
            doc = await off_loop(
                self.status.store, lambda: self.status.set_windows(body.get("windows"))
            )
        except ScheduleError as exc:
            raise APIError(400, "bad_schedule", str(exc)) from None
        return JSONResponse(doc.to_json(time.time()))

    # ---- usage, providers, routes ------------------------------------------------------

    async def usage(self, request: Request) -> Response:
        by = request.query_params.get("by", "day")
        if by not in GROUPINGS:
            raise APIError(400, "bad_field", f"by must be one of {', '.join(GROUPINGS)}")
        since = _since(request.query_params.get("since"))
        report = await off_loop(self.ledger.store, lambda: usage_report(self.ledger, by, since))
        return JSONResponse(report)

    async def requests(self, request: Request) -> Response:
        """The latest requests from the ledger's request log, filtered by caller, model and
        status (a code like 429, a class like 5xx, or a refusal code), with the latency and
        time-to-first-byte percentiles of those shown."""
        query = request.query_params
        try:
            limit = min(max(int(query.get("limit", "200")), 1), REQUEST_LOG_SIZE)
        except ValueError:
            raise APIError(400, "bad_field", "limit must be a number") from None
        filters = {name: query.get(name, "")[:200] for name in ("caller", "model", "status")}
        report = await off_loop(
            self.ledger.store, lambda: requests_report(self.ledger, limit=limit, **filters)
        )
        return JSONResponse(report, headers={"cache-control": "no-store"})

    async def providers_info(self, request: Request) -> Response:
        today = datetime.datetime.now(datetime.UTC).date()
        rows = await off_loop(
            self.ledger.store, lambda: self.ledger.rows(by="provider", since=today)
        )
        served = {row.key: row.requests for row in rows}
        listed = []
        for provider in sorted(self.providers, key=lambda p: p.prefix):
            listed.append(
                {
                    "name": provider.name,
                    "prefix": provider.prefix,
                    # Every configured target (a comma list spreads requests over them).
                    "upstream": ", ".join(provider.targets.origins),
                    "key_header": provider.key_header,
                    "keys": [key_fingerprint(k) for k in provider.api_keys],
                    # Metered replies today (from the ledger): a cheap "answered recently".
                    "requests_today": served.get(provider.name, 0),
                }
            )
        return JSONResponse({"providers": listed})

    async def routes(self, request: Request) -> Response:
        listed = []
        for provider in sorted(self.providers, key=lambda p: p.prefix):
            sdk, base_path = sdk_base_path(provider)
            listed.append(
                {
                    "name": provider.name,
                    "prefix": provider.prefix,
                    "sdk": sdk,
                    "base_path": base_path,
                }
            )
        return JSONResponse({"routes": listed})


def _since(raw: str | None) -> datetime.date | None:
    if not raw:
        return None
    try:
        return datetime.date.fromisoformat(raw)
    except ValueError:
        raise APIError(400, "bad_field", "since must be a day like 2026-11-01") from None
