"""The ASGI endpoint behind every provider route: one request's life, stage by stage.

    route -> request object -> identify -> checks on the head -> read body -> checks on
    the body (scopes, policy, limits, budget) -> forward -> relay -> settle

The request body is read whole (bounded by MAX_BODY_BYTES, and MAX_JSON_BYTES for JSON):
LLM requests are small, and a known length is what every provider expects. The response
is never read whole: its raw bytes go to the caller as they arrive, and the usage meter
reads a copy when some rule needs the figures.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx

from core.errors import (
    BadRequest,
    ErrorShape,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    ProxyError,
    UpstreamTimeout,
    UpstreamUnreachable,
    send_error,
)
from core.providers import Provider, match_provider, next_attempt
from core.proxy.access_log import BODY_SEND
from core.proxy.headers import client_response_headers, upstream_request_headers
from core.proxy.request import ALLOWED_METHODS, ProxyRequest, build_request
from core.proxy.stages import Outcome, reply_ticket
from core.types import send_response

if TYPE_CHECKING:
    from core.access.identify import Identify
    from core.config import Settings
    from core.proxy.model_routes import ModelRouter
    from core.proxy.scrub import Scrubber
    from core.proxy.stages import Check, ReplyTicket, StoredReply, Ticket
    from core.proxy.uploads import UploadSessions
    from core.types import Receive, RequestLog, Scope, Send
    from core.upstream.client import UpstreamClient, UpstreamReply
    from core.usage.budget import Budget
    from core.usage.meter import UsageMeter

logger = logging.getLogger("llm_proxy")

ALLOW_HEADER = ", ".join(sorted(ALLOWED_METHODS)).encode()
# RFC 3986 pchar minus unreserved (always safe for `quote`): what a path keeps literally.
_PATH_SAFE = "/:@!$&'()*+,;="
# A response this small with a known length goes out in one piece.
_SMALL_BODY = 64 * 1024


class CallerLeft(Exception):
    """The caller disconnected before the reply ended: raised in the disconnect listener,
    it ends the task group and so cancels the relay."""


class UpstreamStreamBroken(Exception):
    """The upstream failed after the response began; the only honest signal left is to
    abort the connection, so the client sees a truncated body instead of a clean end."""


@dataclass
class Pipeline:
    """The stages a deployment runs, decided once at start (core/app.py)."""

    identify: Identify
    # Admission rules that decide on the head alone, then those that need the body.
    before_body: tuple[Check, ...] = ()
    after_body: tuple[Check, ...] = ()
    # Extra usage readers at settlement (the usage ledger): every reply is metered.
    settlers: tuple[Any, ...] = ()
    # Some rule decides on the body (scopes, policy, limits, budgets): JSON is parsed with
    # the repeated-field checks. Otherwise it is only checked to be JSON, by the C decoder.
    strict_json: bool = True


@dataclass
class _Exchange:
    """What the relay and the disconnect listener share."""

    outcome: Outcome = field(default_factory=Outcome)
    # Set before the last body message: some servers answer receive() with a disconnect
    # as soon as the response is complete, which is not the caller leaving.
    response_done: bool = False
    settled: bool = False
    error: BaseException | None = None
    meter: UsageMeter | None = None
    # The response cache's copy of the reply (core/cache), fed what the caller gets.
    copy: ReplyTicket | None = None


def _request_log(scope: Scope) -> RequestLog | None:
    return scope.get("llm_proxy.log")  # type: ignore[return-value]


def map_transport_error(exc: BaseException, settings: Settings) -> ProxyError:
    """Transport failures before any response byte, as the 502/504 a caller can act on."""
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        return UpstreamTimeout(
            "The upstream provider did not answer in time "
            f"(connect {settings.connect_timeout:g}s, first byte {settings.read_timeout:g}s)."
        )
    return UpstreamUnreachable("The upstream provider could not be reached.")


class ProxyEndpoint:
    # MODEL_ROUTES / MODEL_FALLBACKS (core/proxy/model_routes.py), set by the app when on.
    model_router: ModelRouter | None = None

    def __init__(
        self,
        settings: Settings,
        providers: tuple[Provider, ...],
        client: UpstreamClient,
        pipeline: Pipeline,
        scrubber: Scrubber,
        uploads: UploadSessions | None = None,
    ) -> None:
        self.settings = settings
        self.providers = providers
        self.client = client
        self.pipeline = pipeline
        self.scrubber = scrubber
        # Gemini's resumable uploads: upload URLs rewritten, upload legs let in by upload_id.
        self.uploads = uploads
        self.recovery = None
        if settings.gemini_stream_recovery:
            from core.proxy.recovery import StreamRecovery

            self.recovery = StreamRecovery(
                settings.gemini_stream_recovery_attempts, settings.access_log
            )
        self.always_meter = bool(pipeline.settlers)
        self.drain = settings.on_disconnect == "drain"

    def route(self, scope: Scope) -> tuple[Provider, str]:
        raw_path = scope.get("raw_path")
        # Without raw_path (Mangum) `path` is percent-decoded: encode it again, or a
        # caller's `%3F` / `%23` would start a query or fragment on the upstream URL.
        path = raw_path.decode("latin-1") if raw_path else quote(scope["path"], _PATH_SAFE)
        matched = match_provider(self.providers, path)
        if matched is None and self.uploads is not None:
            from core.proxy.uploads import root_upload_route

            matched = root_upload_route(self.providers, path, scope.get("query_string", b""))
        if matched is None:
            raise NotFound(
                f"No route for {scope['path'][:200]!r} on this proxy: use /v1/... "
                "with the base URL set to <proxy>/v1."
            )
        return matched

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # A ProxyError is only raised before the response starts; after it, failures
        # are UpstreamStreamBroken and abort the connection.
        shape: ErrorShape = "openai"
        log = _request_log(scope)
        try:
            provider, remainder = self.route(scope)
            shape = provider.error_shape
            if log is not None:
                log.route = provider.name
            request = build_request(scope, provider, remainder, log)
            request.strict = self.pipeline.strict_json
            await self.handle(request, receive, send)
        except ProxyError as error:
            if log is not None:
                log.error = error.code
            extra = [(b"allow", ALLOW_HEADER)] if isinstance(error, MethodNotAllowed) else []
            await send_error(send, error, shape, extra)

    async def usage_report(
        self, scope: Scope, receive: Receive, send: Send, budget: Budget | None
    ) -> None:
        """`GET /proxy/usage`: the caller's own spend and tokens this window, read with its
        usual credential, so a page can show the quota left."""
        log = _request_log(scope)
        try:
            if scope["method"] not in ("GET", "HEAD"):
                raise MethodNotAllowed(f"Method {scope['method']} is not allowed here.")
            request = build_request(scope, self.providers[0], "/usage", log)
            await self.identify(request)
            if budget is not None:
                figures = await budget.caller_figures(request)
            else:
                figures = {
                    "window": None,
                    "spent_usd": None,
                    "limit_usd": None,
                    "remaining_usd": None,
                    "input_tokens": None,
                    "output_tokens": None,
                }
        except ProxyError as error:
            if log is not None:
                log.error = error.code
            extra = [(b"allow", b"GET, HEAD")] if isinstance(error, MethodNotAllowed) else []
            await send_error(send, error, "openai", extra)
            return
        body = json.dumps(figures, separators=(",", ":")).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
        ]
        await send_response(send, 200, headers, body)

    async def identify(self, request: ProxyRequest) -> None:
        identify = self.pipeline.identify
        caller = await identify.caller(request)
        request.caller = caller
        request.counted_as = identify.counted_as(request, caller)
        if request.log is not None:
            request.log.caller = caller.label

    async def handle(self, request: ProxyRequest, receive: Receive, send: Send) -> None:
        uploads = self.uploads
        if uploads is None or not await uploads.admit_upload_leg(request):
            await self.identify(request)
        tickets: list[Ticket] = []
        try:
            await self.admit(request, self.pipeline.before_body, tickets)
            await self.read_body(request, receive)
            router = self.model_router
            if router is not None and await router.route(request, tickets, send):
                await self.settle(tickets, Outcome())  # answered here: the model list
                return
            await self.admit(request, self.pipeline.after_body, tickets)
        except BaseException:
            # Refused after an earlier rule reserved: give the reservation back.
            await self.settle(tickets, Outcome())
            raise
        cache = reply_ticket(tickets) if tickets else None
        if cache is not None and cache.replay is not None:
            await self.replay(request, cache.replay, tickets, send)
            return
        await self.exchange(request, tickets, receive, send, cache)

    @staticmethod
    async def admit(
        request: ProxyRequest, checks: tuple[Check, ...], tickets: list[Ticket]
    ) -> None:
        for check in checks:
            ticket = await check.admit(request)
            if ticket is not None:
                tickets.append(ticket)

    async def read_body(self, request: ProxyRequest, receive: Receive) -> None:
        settings = self.settings
        limit = settings.max_body_bytes
        if request.is_json and settings.max_json_bytes < limit:
            limit = settings.max_json_bytes
        try:
            await request.read_body(receive, limit)
        except PayloadTooLarge:
            if limit == settings.max_body_bytes:
                raise
            raise PayloadTooLarge(
                f"The JSON request body is larger than the proxy's limit of {limit} bytes "
                "(MAX_JSON_BYTES)."
            ) from None
        if request.is_json and request.body:
            await request.document()  # invalid JSON is refused here, with a 400

    # ---- forward, relay, settle -------------------------------------------------------

    async def replay(
        self, request: ProxyRequest, reply: StoredReply, tickets: list[Ticket], send: Send
    ) -> None:
        """A response-cache hit: the stored reply, one write per stored chunk and no delay
        (the caller's SDK parses the same events either way; pacing would only add
        latency). Settled first, as the relay does, so limits and budgets see zero cost."""
        outcome = Outcome(usage=reply.usage, complete=True, cache_hit=True)
        await self.settle(tickets, outcome, request)
        headers = [*reply.headers, *(header for ticket in tickets for header in ticket.headers)]
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        chunks = reply.chunks or [b""]
        last = len(chunks) - 1
        for index, chunk in enumerate(chunks):
            await send({"type": "http.response.body", "body": chunk, "more_body": index < last})

    async def exchange(
        self,
        request: ProxyRequest,
        tickets: list[Ticket],
        receive: Receive,
        send: Send,
        copy: ReplyTicket | None = None,
    ) -> None:
        state = _Exchange(copy=copy)
        # The relay races the caller's disconnect in one task group: a caller who leaves
        # ends the group, which cancels the relay and with it the upstream request (with
        # ON_CLIENT_DISCONNECT=drain it only stops the sending); the relay ending stops the
        # listener. The relay runs in this task: one task a request, not two.
        try:
            async with asyncio.TaskGroup() as group:
                listener = group.create_task(self.listen_for_disconnect(receive, state))
                try:
                    await self.relay_safely(request, tickets, send, state)
                finally:
                    listener.cancel()
        except* CallerLeft:
            pass
        if not state.settled:
            if state.meter is not None:
                state.outcome.usage = state.meter.finish()  # what was read before the end
            await self.settle(tickets, state.outcome, request)
        if state.outcome.caller_left and request.log is not None:
            request.log.error = "client_disconnected"
        if state.error is not None:
            raise state.error

    async def relay_safely(
        self, request: ProxyRequest, tickets: list[Ticket], send: Send, state: _Exchange
    ) -> None:
        """The relay, its failure kept for the endpoint to raise once the group is done."""
        try:
            await self.forward_and_relay(request, tickets, send, state)
        except Exception as exc:
            state.error = exc

    async def listen_for_disconnect(self, receive: Receive, state: _Exchange) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                if state.response_done:
                    return
                state.outcome.caller_left = True
                if not self.drain:
                    raise CallerLeft
                return
            # Only a disconnect should come after the body; a server that answers at once
            # with anything else must not starve the relay.
            await asyncio.sleep(0)

    async def forward(self, request: ProxyRequest, body: bytes, metering: bool) -> UpstreamReply:
        provider = request.provider
        path = request.remainder
        if request.query:
            path += "?" + request.query.decode("latin-1")
        headers = upstream_request_headers(request.headers, identity_encoding=metering)
        client = self.client
        keys = list(provider.keys.attempts())
        targets = provider.targets
        order = targets.order() if request.target is None else (request.target,)
        key_at = target_at = 0
        try:
            while True:
                key = keys[key_at]
                sent = [*headers, key] if key is not None else headers
                target = order[target_at]
                try:
                    response = await client.send(
                        request.method, targets.urls[target] + path, sent, body
                    )
                except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                    if target_at + 1 == len(order):
                        raise
                    # Nothing was sent: the next target gets the request.
                    logger.warning("upstream target unreachable: %s", type(exc).__name__)
                    target_at += 1
                    continue
                request.target = target
                step = next_attempt(response.status_code, key_at, len(keys), target_at, len(order))
                if step is None:
                    return response
                # Refused or overloaded before any byte reached the caller: the next key,
                # or target, or both, get the same request (core/providers.py).
                await response.aclose()
                key_at, target_at = step
        except httpx.InvalidURL:
            raise BadRequest("The request path is not a valid URL path.") from None
        except httpx.HTTPError as exc:
            logger.warning("upstream request failed: %s", type(exc).__name__)
            raise map_transport_error(exc, self.settings) from None

    async def forward_and_relay(
        self, request: ProxyRequest, tickets: list[Ticket], send: Send, state: _Exchange
    ) -> None:
        # Metered when a rule settles on usage (a reservation) or the ledger records it.
        metering = request.route.kind == "metered" and (
            self.always_meter or any(ticket.needs_usage for ticket in tickets)
        )
        body = request.body
        chunk_filter = None
        if metering:
            document = await request.document()
            if request.wire.stream_needs_usage_request(request.route, document):
                from core.usage.splice import UsageChunkFilter, ask_for_stream_usage

                body = ask_for_stream_usage(body, document)
                chunk_filter = UsageChunkFilter()
        recovery = self.recovery if self.recovery and self.recovery.wanted(request) else None
        sent_at = time.perf_counter()
        # A stream that may be spliced is asked for uncompressed, like a metered one.
        identity = metering or recovery is not None
        fallbacks = self.model_router.fallbacks if self.model_router is not None else None
        if fallbacks is not None:
            response = await fallbacks.forward(self, request, tickets, state, body, identity)
        else:
            response = await self.forward(request, body, identity)
        if self.uploads is not None and request.wire.name == "gemini":
            raw = response.raw_headers
            rewritten = await self.uploads.rewrite_reply(request, raw)
            if rewritten is not raw:
                response.raw_headers = rewritten
        log = request.log
        outcome = state.outcome
        outcome.upstream_status = response.status_code
        if log is not None:
            log.upstream_status = response.status_code
            log.upstream_ms = (time.perf_counter() - sent_at) * 1000
        try:
            if recovery is not None and await recovery.applies(request, response):
                # Continues a Gemini stream that ended unfinished (core/proxy/recovery.py).
                await recovery.relay(self, request, response, send, state, tickets, metering)
                return
            meter = None
            if metering:
                from core.usage.meter import UsageMeter

                meter = state.meter = UsageMeter(request.wire)
            await self.relay(request, response, send, state, tickets, meter, chunk_filter)
        finally:
            await response.aclose()

    def reply_headers(
        self, response: UpstreamReply, tickets: list[Ticket]
    ) -> tuple[list[tuple[bytes, bytes]], int | None]:
        headers, length = client_response_headers(response.raw_headers, self.scrubber)
        extra = [header for ticket in tickets for header in ticket.headers]
        if extra:
            if any(name.startswith(b"x-ratelimit-") for name, _ in extra):
                # The provider's own x-ratelimit-* describe the key owner's account, not
                # this caller: ours replace them.
                headers = [(n, v) for n, v in headers if not n.startswith(b"x-ratelimit-")]
            headers.extend(extra)
        return headers, length

    async def relay(
        self,
        request: ProxyRequest,
        response: UpstreamReply,
        send: Send,
        state: _Exchange,
        tickets: list[Ticket],
        meter: UsageMeter | None,
        chunk_filter: Any,
    ) -> None:
        headers, length = self.reply_headers(response, tickets)
        status = response.status_code
        if meter is not None:
            meter.start(headers)
        # A refusal or error body may quote the key (an echo of the request): scrubbed,
        # and sent uncompressed when it came compressed.
        scrub = None
        if status >= 300 and self.scrubber:
            encoding = next((v for n, v in headers if n == b"content-encoding"), b"")
            scrub = self.scrubber.stream(encoding)
            if scrub.inflates:
                headers = [(n, v) for n, v in headers if n != b"content-encoding"]
        stream = response.stream
        outcome = state.outcome
        copy = state.copy

        if length is not None and length <= _SMALL_BODY:
            try:
                body = b"".join([chunk async for chunk in stream])
            except response.stream_errors as exc:
                raise map_transport_error(exc, self.settings) from None
            if meter is not None:
                meter.feed(body)
            if chunk_filter is not None:
                body = chunk_filter(body) + chunk_filter.flush()
            if scrub is not None:
                body = scrub(body) + scrub.flush()
            if len(body) != length:
                headers = [(n, v) for n, v in headers if n != b"content-length"]
                headers.append((b"content-length", str(len(body)).encode()))
            if copy is not None:
                copy.start(status, headers, response.raw_headers)
                copy.feed(body)
            outcome.complete = True
            await self.finish_metering(request, meter, tickets, state)
            state.response_done = True
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return

        if chunk_filter is not None or scrub is not None:
            # The body changes length: it goes out chunked.
            headers = [(n, v) for n, v in headers if n != b"content-length"]
        if copy is not None:
            copy.start(status, headers, response.raw_headers)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        # The body goes straight to the server (core/proxy/access_log.py, BODY_SEND).
        log = request.log
        body_send = request.scope.get(BODY_SEND, send) if log is not None else send
        sent = 0
        try:
            # The transport's own stream: raw bytes as they arrive, no re-chunking.
            async for chunk in stream:
                if meter is not None:
                    meter.feed(chunk)
                if chunk_filter is not None:
                    chunk = chunk_filter(chunk)
                if scrub is not None:
                    chunk = scrub(chunk)
                if copy is not None and chunk:
                    copy.feed(chunk)
                if chunk and not outcome.caller_left:
                    if not sent and log is not None:
                        log.body_sent(0)  # the first byte's time
                    sent += len(chunk)
                    await body_send(
                        {"type": "http.response.body", "body": chunk, "more_body": True}
                    )
        except response.stream_errors as exc:
            logger.warning("upstream stream broke after %d bytes: %s", sent, type(exc).__name__)
            raise UpstreamStreamBroken(f"upstream stream broke after {sent} bytes") from None
        finally:
            if log is not None:
                log.bytes_out += sent
        outcome.complete = True
        tail = b""
        if chunk_filter is not None:
            tail += chunk_filter.flush()
        if scrub is not None:
            tail = scrub(tail) + scrub.flush()
        if copy is not None and tail:
            copy.feed(tail)
        # Settled before the last message, not after: the caller's next request then sees
        # these figures, and a function platform cannot freeze us before the write.
        await self.finish_metering(request, meter, tickets, state)
        state.response_done = True
        if not outcome.caller_left:
            await send({"type": "http.response.body", "body": tail, "more_body": False})

    async def finish_metering(
        self,
        request: ProxyRequest,
        meter: UsageMeter | None,
        tickets: list[Ticket],
        state: _Exchange,
    ) -> None:
        if meter is not None:
            state.outcome.usage = meter.finish()
        state.settled = True
        # Shielded: the openai SDKs close the connection as soon as they read [DONE], which
        # can land while this awaits a store; cancelled here, the budget charge and the
        # ledger entry were lost (and, settled=True, nobody settled again).
        await asyncio.shield(self.settle(tickets, state.outcome, request))

    async def settle(
        self, tickets: list[Ticket], outcome: Outcome, request: ProxyRequest | None = None
    ) -> None:
        for ticket in tickets:
            await ticket.settle(outcome)
        if request is None:
            return
        for settler in self.pipeline.settlers:
            await settler(request, outcome)
        log = request.log
        usage = outcome.usage
        if log is not None and usage is not None:
            if not outcome.cache_hit:  # a hit's tokens are logged as saved (core/cache)
                log.input_tokens = usage.input_tokens
                log.output_tokens = usage.output_tokens
            log.cost_usd = outcome.cost_usd
