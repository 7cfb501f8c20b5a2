"""The ASGI endpoint behind every provider route: one request's life, stage by stage.

    route -> request object -> identify -> checks on the head -> read body -> checks on
    the body (scopes, policy, limits, budget) -> forward -> relay -> settle

The request body is read whole (bounded by MAX_BODY_BYTES, and MAX_JSON_BYTES for JSON):
LLM requests are small, and a known length is what every provider expects. The response
is never read whole: its raw bytes go to the caller as they arrive, and the usage meter
reads a copy when some rule needs the figures.

The parts live beside it: the stages (pipeline.py joins what each feature adds), forward
(forward.py), the reply's taps (taps.py) and the relay (relay.py); docs/architecture.md
shows how they fit.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Coroutine
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from core.access.model_lists import model_list_ticket
from core.errors import (
    BadRequest,
    ErrorShape,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    ProxyError,
    send_error,
)
from core.headers import NOT_A_PAGE
from core.protocols import route_path
from core.providers import CATALOGUE_BY_PREFIX, Provider, match_provider, provider_env_names
from core.proxy.access_log import BODY_SEND, ERROR_SHAPE
from core.proxy.forward import Forwarder, never_reached
from core.proxy.open_checks import OpenChecks, can_end, raise_stopped
from core.proxy.relay import Exchange, relay, reply_headers
from core.proxy.stream_end import stream_end
from core.proxy.taps import build_taps
from core.request import ALLOWED_METHODS, ProxyRequest, build_request
from core.stages import Outcome, reply_ticket, reserved_tokens
from core.types import DIRECT_BODY, DISCONNECT_WATCH, DisconnectWatch

if TYPE_CHECKING:
    from collections.abc import Callable

    from core.config import Settings
    from core.proxy.model_routes import ModelRouter
    from core.proxy.pipeline import Pipeline
    from core.proxy.relay import ReplySource
    from core.proxy.scrub import Scrubber
    from core.proxy.taps import Tap
    from core.proxy.uploads import UploadSessions
    from core.stages import Check, RawHeaders, ReplyTicket, StoredReply, Ticket
    from core.types import Receive, RequestLog, Scope, Send
    from core.upstream.client import UpstreamClient, UpstreamReply
    from core.usage.budget import Budget
    from core.usage.meter import UsageMeter

ALLOW_HEADER = ", ".join(sorted(ALLOWED_METHODS)).encode()
# RFC 3986 pchar minus unreserved (always safe for `quote`): what a path keeps literally.
_PATH_SAFE = "/:@!$&'()*+,;="
# How long a caller's hang-up waits for the relay to read the upstream's end of body before
# it counts as leaving early (listen_for_disconnect). Well under what cancelling the
# upstream promptly allows (tests/proxy/test_stream_lifecycle.py: within a second).
_HANG_UP_GRACE_SECONDS = 0.1
# How long the relay reads on, after the caller hung up past the stream's last event, for
# the upstream's end of body (core/proxy/stream_end.py).
_UPSTREAM_END_GRACE_SECONDS = 1.0


def _request_log(scope: Scope) -> RequestLog | None:
    return scope.get("llm_proxy.log")  # type: ignore[return-value]


def needs_usage(tickets: list[Ticket]) -> bool:
    """Whether a rule settles on usage. A function of its own, not `any(...)` inline in
    the coroutine that relays: a generator left unfinished in a frame gives that frame a
    frame object, and the relaying coroutine's lives as long as the stream (about 500
    bytes a stream in flight, measured); this function's dies on return."""
    return any(ticket.needs_usage for ticket in tickets)


class ProxyEndpoint:
    # MODEL_ROUTES / MODEL_FALLBACKS (core/proxy/model_routes.py), set by the app when on.
    model_router: ModelRouter | None = None
    # Telemetry's reader of the answered model and finish reasons (core/telemetry/reply.py),
    # set by the app only when OpenTelemetry is on: otherwise no reply gets the tap.
    reply_reader: Callable[[ProxyRequest, RawHeaders, bool], Tap | None] | None = None

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
        # Routes whose prefix lies under another's (Gemini's OpenAI-compatible surface,
        # `/gemini/v1beta/openai`, under `/gemini`): by the outer prefix, the inner
        # prefix's path after it, and its record (nested_spelling).
        self.nested = nested_prefixes(providers)
        self.client = client
        # Key and target rotation (core/proxy/forward.py).
        self.forward = Forwarder(settings, client)
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
        self.always_meter = pipeline.meter_every_reply
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
            raise self.no_route(scope, path)
        if self.nested and matched[0].prefix in self.nested:
            nested_spelling(scope, matched[1], self.nested[matched[0].prefix])
        return matched

    def no_route(self, scope: Scope, path: str) -> NotFound:
        """The 404 for a path no route here serves. A provider's own route that this
        deployment has not switched on says so, in that provider's error shape, so its SDK
        shows the reason instead of a route hint that does not apply; the names of settings
        are public (docs/configuration.md), their values never appear."""
        known = match_provider(CATALOGUE_BY_PREFIX, path)
        if known is not None:
            record = known[0]
            key_name, upstream_name = provider_env_names(record)
            setting = upstream_name if record.key_optional else key_name
            scope[ERROR_SHAPE] = record.error_shape
            return NotFound(
                f"The {record.prefix} route is not switched on on this proxy: its operator "
                f"has not set {setting}."
            )
        if not any(provider.prefix == "/v1" for provider in self.providers):
            if path == "/v1" or path.startswith("/v1/"):
                return NotFound(
                    "The /v1 route is not switched on on this proxy: its operator has set "
                    "neither UPSTREAM_BASE_URL nor MODEL_ROUTES. A provider's own route has "
                    "its own base URL, such as <proxy>/openai/v1."
                )
            return NotFound(f"No route for {scope['path'][:200]!r} on this proxy.")
        return NotFound(
            f"No route for {scope['path'][:200]!r} on this proxy: use /v1/... "
            "with the base URL set to <proxy>/v1."
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # A ProxyError is only raised before the response starts; after it, failures
        # are UpstreamStreamBroken and abort the connection.
        shape: ErrorShape = "openai"
        log = _request_log(scope)
        request: ProxyRequest | None = None
        provider: Provider | None = None
        try:
            provider, remainder = self.route(scope)
            shape = scope[ERROR_SHAPE] = provider.error_shape
            if log is not None:
                log.route = provider.name
            request = build_request(scope, provider, remainder, log)
            request.strict = self.pipeline.strict_json
            await self.handle(request, receive, send)
        except ProxyError as error:
            if log is not None:
                log.error = error.code
            extra = [(b"allow", ALLOW_HEADER)] if isinstance(error, MethodNotAllowed) else []
            if (
                not error.should_retry
                and "x-goog-upload-status" not in error.headers
                and self.upload_leg(request, provider, scope)
            ):
                # Any refusal of an upload leg (a limit, a scope, the kill switch, its body's
                # size, its URL): without an upload status google-genai sends the refused
                # chunk again, three times over seven seconds, then fails with "Upload
                # status is not finalized" instead of the reason. A passing fault (503) is
                # worth those retries.
                extra.append((b"x-goog-upload-status", b"final"))
            # A route known before the error, or the provider a 404 names (no_route).
            await send_error(send, error, scope.get(ERROR_SHAPE, shape), extra)

    def upload_leg(
        self, request: ProxyRequest | None, provider: Provider | None, scope: Scope
    ) -> bool:
        """Whether a refused request is an upload leg: recognised as one, or refused before
        it could be (while its URL, headers or body were read) on a resumable-upload route
        with an upload_id in its query."""
        if request is not None and request.upload_leg:
            return True
        if self.uploads is None or provider is None or not provider.resumable_uploads:
            return False
        from core.proxy.uploads import names_upload_id

        return names_upload_id(scope.get("query_string", b""))

    async def usage_report(
        self, scope: Scope, receive: Receive, send: Send, budget: Budget | None
    ) -> None:
        """`GET /proxy/usage` (core/proxy/usage_report.py)."""
        from core.proxy.usage_report import usage_report

        await usage_report(
            scope,
            send,
            provider=self.providers[0],
            identify=self.identify,
            budget=budget,
            status=self.pipeline.status,
        )

    async def identify(self, request: ProxyRequest) -> None:
        identify = self.pipeline.identify
        caller = await identify.caller(request)
        request.caller = caller
        request.counted_as = identify.counted_as(request, caller)
        if request.log is not None:
            request.log.caller = caller.label

    async def recheck(self, request: ProxyRequest) -> None:
        """Raises the ProxyError that stops a request still under way from going on: its
        token no longer valid (or narrowed past it: every rule that reads the token's
        scopes, its providers and models and the account routes a scoped token may not
        use), or the proxy switched off. Run before each further upstream call of one
        request (a stream's continuation), while a reply is relayed and while a realtime
        session is open. Cheap: both reads are cached (TOKEN_CACHE_SECONDS)."""
        if request.upload_leg and self.uploads is not None:
            # An upload leg carries no credential: its upload_id stands for the token that
            # began the upload, checked again as when the leg was admitted (identified as
            # a request without a credential, every leg outlasting the period was a 401).
            await self.uploads.admit_upload_leg(request)
            caller = request.caller
        else:
            caller = await self.pipeline.identify.caller(request)
        if caller is not None and caller.record is not None:
            # The same token, still valid: its fresh record, whose scopes may have narrowed.
            request.caller = caller
        # Each rule that decides on the caller as it is now (`check_open`), not only the
        # one that decided on the model: a rule left out here holds at admission only.
        pipeline = self.pipeline
        for check in (*pipeline.before_body, *pipeline.after_body):
            check_open = getattr(check, "check_open", None)
            if check_open is not None:
                await check_open(request)
        status = self.pipeline.status
        if status is not None:
            await status.check(time.time())

    async def count_turn(self, request: ProxyRequest) -> None:
        """Counts a further upstream call of a request that lasts (a response a realtime
        session's provider began, a stream's continuation) against the rules that count
        requests (RATE_LIMIT_REQUESTS); raises the ProxyError of the one it breaks."""
        for check in self.pipeline.before_body:
            count = getattr(check, "count_turn", None)
            if count is not None:
                await count(request)

    async def check_continuation(self, request: ProxyRequest, body: bytes) -> None:
        """Runs the body checks that hold for each upstream call (the request policy's
        caps) on a continuation the proxy writes itself; raises the ProxyError of the one
        it breaks."""
        document = json.loads(body)
        for check in self.pipeline.after_body:
            recheck = getattr(check, "check_continuation", None)
            if recheck is not None:
                await recheck(request, document)

    async def check_settings(self, request: ProxyRequest) -> None:
        """Runs the body checks that decide on a session's settings (the models they name:
        scopes, ALLOWED_MODELS; the tools they turn on: a dollar budget) again: for a
        realtime session whose settings changed mid-session."""
        for check in self.pipeline.after_body:
            recheck = getattr(check, "check_settings", None)
            if recheck is not None:
                await recheck(request)

    async def handle(self, request: ProxyRequest, receive: Receive, send: Send) -> None:
        uploads = self.uploads
        if uploads is None or not await uploads.admit_upload_leg(request):
            await self.identify(request)
        tickets: list[Ticket] = []
        try:
            await self.admit(request, self.pipeline.before_body, tickets)
            # A body may take up to BODY_TIMEOUT to arrive, the request open all along: one
            # that took longer than the recheck period is checked again before anything
            # goes upstream, or a caller could hold many open across a revocation or the
            # kill switch and have them all served after. Timed only where something can
            # end the caller (open_checks.can_end): no clock read on the shared token's path.
            watched = can_end(request.caller, self.pipeline.status is not None)
            began = time.monotonic() if watched else 0.0
            await self.read_body(request, receive)
            if watched and time.monotonic() - began >= self.settings.realtime_recheck_seconds:
                await self.recheck(request)
            router = self.model_router
            if router is not None and await router.route(request, tickets, send, self.scrubber):
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
        request.max_json_bytes = settings.max_json_bytes
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
        # The entry keeps only the headers that describe its body: the ones every relayed
        # reply gets (no page, core/headers.py) are added again, as the relay adds them.
        headers = [
            *reply.headers,
            *NOT_A_PAGE,
            *(header for ticket in tickets for header in ticket.headers),
        ]
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
        state = Exchange(copy=copy)
        # The relay races the caller's disconnect in one task group: a caller who leaves
        # ends the group, which cancels the relay and with it the upstream request (with
        # ON_CLIENT_DISCONNECT=drain it only stops the sending); the relay ending stops the
        # listener. The relay runs in a task of its own, not in this one: each chunk that
        # arrives wakes the task that waits for it, and in this task that would resume
        # every frame above it too (the middlewares, the endpoint, the stages: about ten
        # coroutines per chunk); in its own task, three.
        # Nothing in the group raises: a caller who leaves cancels the relay itself (an
        # exception group would hold every frame of the request in a reference cycle, kept
        # until the collector's next full pass).
        # Under the proxy's own server the hang-up comes from the connection instead
        # (relay_watched): the same outcome, without a listening task for every reply.
        # The rules that admitted the reply, checked again while it is relayed (nothing
        # outlives the rule that ends it): armed only where something can end it.
        checks = None
        if can_end(request.caller, self.pipeline.status is not None):
            checks = OpenChecks(
                self.recheck, request, state, self.settings.realtime_recheck_seconds
            )
        watch: DisconnectWatch | None = request.scope.get(DISCONNECT_WATCH)
        try:
            if watch is not None:
                await self.relay_watched(request, tickets, send, state, watch, checks)
            else:
                relaying: list[asyncio.Task[None]] = []
                async with asyncio.TaskGroup() as group:
                    listener = group.create_task(
                        self.listen_for_disconnect(receive, state, relaying)
                    )
                    relaying.append(
                        group.create_task(
                            self.relay_then_stop(request, tickets, send, state, listener)
                        )
                    )
                    if checks is not None:
                        checks.start(relaying[0])
        finally:
            if checks is not None:
                checks.stop()
        if not state.settled:
            if state.meter is not None:
                state.outcome.usage = state.meter.finish()  # what was read before the end
            await self.settle(tickets, state.outcome, request)
        if state.outcome.caller_left and request.log is not None:
            request.log.error = "client_disconnected"
        if state.error is not None:
            # Taken off `state` first: raised from here, its traceback holds this frame,
            # which holds `state`; kept there too, the two would make a cycle.
            error, state.error = state.error, None
            try:
                raise error
            finally:
                del error
        raise_stopped(state)

    async def relay_then_stop(
        self,
        request: ProxyRequest,
        tickets: list[Ticket],
        send: Send,
        state: Exchange,
        listener: asyncio.Task[None] | None,
    ) -> None:
        """The relay, its failure kept for the endpoint to raise once the group is done;
        the listener (if any) stopped when it ends. One coroutine, not two nested: each
        chunk that arrives resumes every frame of the relay's task."""
        try:
            await self.forward_and_relay(request, tickets, send, state)
        except Exception as exc:
            state.error = exc
        finally:
            if listener is not None:
                listener.cancel()
                # Let go of it: the relay stopped by a check is cancelled too, and the two
                # cancellations' tracebacks (this frame, the listener's frame holding the
                # relay's task) would hold each other in a cycle.
                listener = None

    async def relay_watched(
        self,
        request: ProxyRequest,
        tickets: list[Ticket],
        send: Send,
        state: Exchange,
        watch: DisconnectWatch,
        checks: OpenChecks | None = None,
    ) -> None:
        """The relay's task and the caller's hang-up, under the proxy's own server: it says
        when the connection closes (core/server/bounds.py), so no task waits on receive()
        for the whole reply, and one is spawned only when a caller does hang up. The same
        outcome as the task group's: the hang-up is handled as `caller_hung_up` says, and
        a cancelled request cancels the relay (a task awaiting another cancels it too)."""
        relaying: list[asyncio.Task[None]] = []
        relaying.append(
            asyncio.create_task(self.relay_then_stop(request, tickets, send, state, None))
        )
        if checks is not None:
            checks.start(relaying[0])
        hang_ups: list[asyncio.Task[None]] = []

        def hung_up() -> None:
            hang_ups.append(asyncio.create_task(self.caller_hung_up(state, relaying)))

        watch.callback = hung_up
        if watch.lost:  # gone before the relay began
            watch.callback = None
            hung_up()
        try:
            await relaying[0]
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                for task in hang_ups:
                    task.cancel()
                raise  # this request was cancelled (the relay with it)
            # Only the relay was: the caller hung up (caller_hung_up cancels it).
        finally:
            watch.callback = None
        for task in hang_ups:
            await task  # it decides whether the caller left early, before settling

    async def listen_for_disconnect(
        self, receive: Receive, state: Exchange, relaying: list[asyncio.Task[None]]
    ) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                await self.caller_hung_up(state, relaying)
                return
            # Only a disconnect should come after the body; a server that answers at once
            # with anything else must not starve the relay.
            await asyncio.sleep(0)

    async def caller_hung_up(self, state: Exchange, relaying: list[asyncio.Task[None]]) -> None:
        """The caller's connection closed while the relay ran (or the server said so)."""
        if not state.response_done and relaying:
            # The SDKs stop reading at a stream's last event ([DONE], message_stop) and
            # hang up while the upstream's end of body may still be on its way: a moment's
            # grace tells a complete stream from a caller leaving early.
            await asyncio.wait(relaying, timeout=_HANG_UP_GRACE_SECONDS)
        if state.response_done:
            if state.awaiting_upstream_end and relaying:
                # Settled at the last event; the upstream's end is only worth waiting for
                # to keep its pooled connection. Bounded: an upstream that stalls after its
                # last event is not read until the timeout.
                _, stalled = await asyncio.wait(relaying, timeout=_UPSTREAM_END_GRACE_SECONDS)
                for task in stalled:
                    task.cancel()
            return
        state.outcome.caller_left = True
        if not self.drain:
            # The upstream request ends with the relay (ON_CLIENT_DISCONNECT=cancel).
            for task in relaying:
                task.cancel()

    async def forward_and_relay(
        self, request: ProxyRequest, tickets: list[Ticket], send: Send, state: Exchange
    ) -> None:
        # Metered when a rule settles on usage (a reservation) or the ledger records it.
        metering = request.route.kind == "metered" and (self.always_meter or needs_usage(tickets))
        body = request.body
        chunk_filter = None
        if metering:
            document = await request.document()
            if request.wire.stream_needs_usage_request(request.route, document):
                from core.usage.splice import UsageChunkFilter, ask_for_stream_usage

                body = ask_for_stream_usage(body, document)
                chunk_filter = UsageChunkFilter()
        rewrites: tuple[tuple[bytes, bytes], ...] = ()
        if self.uploads is not None and request.provider.resumable_uploads:
            from core.proxy.uploads import address_rewrites, restore_addresses

            # File uris in replies name the proxy; a caller's fileUri naming it goes back.
            body = restore_addresses(request, body)
            rewrites = address_rewrites(request)
        recovery = self.recovery if self.recovery and self.recovery.wanted(request) else None
        sent_at = time.perf_counter()
        fallbacks = self.model_router.fallbacks if self.model_router is not None else None
        # From here the provider may run the request, and bill it, whether or not an answer
        # comes back: a caller who leaves before the headers, or a first-byte timeout, is
        # settled as a reply cut short (its reservation). Only a connection never made
        # sent nothing.
        state.outcome.sent = True
        try:
            if fallbacks is not None:
                response = await fallbacks.forward(self, request, tickets, state, body)
            else:
                response = await self.forward(request, body)
        except ProxyError as error:
            if never_reached(error):
                state.outcome.sent = False
            raise
        if self.uploads is not None and request.provider.resumable_uploads:
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
        source: ReplySource = response
        meter = None
        # A model list under a rule that limits models: relayed with only what it allows.
        listing = model_list_ticket(tickets) if tickets else None
        try:
            if listing is not None and response.status_code == 200:
                from core.proxy.list_reply import filtered_list

                source = await filtered_list(
                    response, listing, request.query, partial(self.list_page, request)
                )
            elif recovery is not None and await recovery.applies(request, response):
                # Continues a Gemini stream that ended unfinished (core/proxy/recovery.py):
                # the relay reads the spliced stream as it reads any reply.
                source = recovery.source(
                    request,
                    response,
                    outcome,
                    metering,
                    self.forward,
                    body,
                    partial(self.may_continue, request, tickets, outcome),
                )
            elif metering:
                from core.usage.meter import UsageMeter

                meter = state.meter = UsageMeter(request.wire)
            headers, length = reply_headers(source.raw_headers, self.scrubber, tickets)
            taps = build_taps(
                status=source.status_code,
                headers=headers,
                meter=meter,
                usage_filter=chunk_filter,
                scrubber=self.scrubber,
                # A spliced stream is not one upstream answer: the cache keeps none of it.
                copy=state.copy if source is response else None,
                log=log,
                length=length,
                rewrites=rewrites,
                reader=None if self.reply_reader is None else partial(self.reply_reader, request),
                # Watched only where a next request could tell: something to settle.
                last_event=stream_end(request.wire, headers)
                if source.status_code == 200 and (metering or tickets)
                else None,
            )
            # The body goes straight to the server (core/proxy/access_log.py, BODY_SEND).
            body_send = request.scope.get(BODY_SEND, send) if log is not None else send

            async def settle() -> None:
                await self.finish_metering(request, meter, tickets, state)

            await relay(
                source,
                headers,
                length,
                taps,
                state,
                send,
                body_send,
                settle,
                self.settings,
                request.scope.get(DIRECT_BODY),
            )
        finally:
            if source is not response:
                await source.aclose()  # type: ignore[attr-defined]
            await response.aclose()

    async def list_page(self, request: ProxyRequest, query: bytes) -> UpstreamReply:
        """The same model list asked again with `query` (another page of it), from the
        target and with the key rotation of any request (core/proxy/list_reply.py)."""
        asked = request.query
        request.query = query
        try:
            return await self.forward(request, b"")
        finally:
            request.query = asked

    async def may_continue(
        self, request: ProxyRequest, tickets: list[Ticket], outcome: Outcome, body: bytes
    ) -> bool:
        """Whether a stream's continuation, `body`, may be asked (core/proxy/recovery.py):
        it is another upstream call, so the token and the kill switch are checked again, as
        are the rules on the body that hold for what goes upstream (MAX_MESSAGES and
        MAX_TOKENS_CAP: the continuation adds two turns, and asks for what remains of the
        caller's output cap); it is asked only while what was metered is within the
        request's reservation (so the charge passes the reservation by one continuation at
        most), and it counts as a request against RATE_LIMIT_REQUESTS."""
        try:
            await self.recheck(request)
            await self.check_continuation(request, body)
        except ProxyError:
            return False
        reserved = reserved_tokens(tickets)
        if reserved is not None:
            # Usage that could not be read is not zero: the stream is charged its whole
            # reservation already, and each further call would be generated uncharged.
            usage = outcome.usage
            if usage is None or outcome.unread_calls or usage.total >= reserved:
                return False
        # Another upstream call: a request to RATE_LIMIT_REQUESTS, as a session's turn is.
        try:
            await self.count_turn(request)
        except ProxyError:
            return False
        return True

    async def finish_metering(
        self,
        request: ProxyRequest,
        meter: UsageMeter | None,
        tickets: list[Ticket],
        state: Exchange,
    ) -> None:
        if meter is not None:
            usage = state.outcome.usage = meter.finish()
            # The body may have ended, but its usage counts only what came before the answer
            # (an Anthropic stream that broke off with an error event after message_start):
            # charged as a reply cut short, not as the one output token it reported. So is a
            # usage with no input token in it: every model call reads at least one, and a
            # gateway that leaves the input figures out (an Anthropic stream with no usage in
            # message_start, only output_tokens after) was charged its output alone.
            state.outcome.usage_partial = not meter.final or (
                usage is not None and usage.input_tokens == 0
            )
        state.settled = True
        # Shielded: the openai SDKs close the connection as soon as they read [DONE], which
        # can land while this awaits a store; cancelled here, the budget charge and the
        # ledger entry were lost (and, settled=True, nobody settled again).
        await shielded(self.settle(tickets, state.outcome, request))

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


def nested_prefixes(
    providers: tuple[Provider, ...],
) -> dict[str, tuple[tuple[str, Provider], ...]]:
    """For each route with others under its prefix, those others: the rest of their prefix
    after its own, and their record."""
    nested: dict[str, tuple[tuple[str, Provider], ...]] = {}
    for outer in providers:
        inner = tuple(
            (record.prefix[len(outer.prefix) :], record)
            for record in providers
            if record.prefix.startswith(outer.prefix + "/")
        )
        if inner:
            nested[outer.prefix] = inner
    return nested


def nested_spelling(scope: Scope, remainder: str, inner: tuple[tuple[str, Provider], ...]) -> None:
    """Refuses a path that reached the outer route only by spelling an inner route's prefix
    otherwise (`/gemini/v1beta//openai/...`, `v1beta%2Fopenai`, `;x`, another case): an
    upstream that reads paths leniently (as route_path does) serves the inner route, while
    the outer route's protocol read it as another (Gemini's reads `/v1beta/openai/chat/
    completions` as a route that generates nothing, so MAX_TOKENS_CAP, MAX_MESSAGES and the
    meter let it by). One route, one spelling of its prefix."""
    path = route_path(remainder)
    for rest, record in inner:
        if path == rest or path.startswith(rest + "/"):
            scope[ERROR_SHAPE] = record.error_shape
            raise BadRequest(
                f"The request path names the {record.prefix} route in another spelling: "
                f"call it as {record.prefix}/..."
            )


def shielded(work: Coroutine[Any, Any, None]) -> Awaitable[None]:
    """`asyncio.shield(work)`, with `work` started at once (an eager task, Python 3.12+).
    Settling usually finishes without waiting on anything (in-memory stores): then there
    is no task to schedule and no round of the event loop to wait for, on every request."""
    if sys.version_info < (3, 12):
        return asyncio.shield(work)
    task = asyncio.Task(work, loop=asyncio.get_running_loop(), eager_start=True)
    return task if task.done() else asyncio.shield(task)
