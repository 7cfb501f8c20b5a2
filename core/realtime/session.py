"""A realtime WebSocket session relayed by the proxy: OpenAI Realtime and Gemini Live.

Servers only (uvicorn: `llm-proxy serve`, handlers.http, containers, Cloud Run); a
function platform never delivers a WebSocket, and a handshake reaching the HTTP path is
answered with a pointer to ephemeral keys (core/request.py).

    route -> the request object (credential from the caller's slot, the browser subprotocol
    included) -> identify -> checks on the head -> the model (URL, or the first message)
    -> checks on the model (scopes, policy, limits, budget) -> connect upstream with the
    real key -> accept -> relay frames both ways -> settle on the metered usage

A refusal before the upgrade is an HTTP answer in the protocol's JSON shape (the ASGI
`websocket.http.response` extension; without it, a close with 1008). Once accepted, a
refusal is a close with 1008 and the reason. The upstream host is the provider's
configured origin; nothing the caller sends chooses it.

A session is a request that lasts (core/realtime/stages.py): while it is open the caller's
token and the kill switch are checked again every REALTIME_RECHECK_SECONDS and on each
frame that starts a turn; a frame that names another model or sets the session up again
is refused; frames are bounded by REALTIME_MAX_FRAME_BYTES (never above MAX_BODY_BYTES);
one caller holds at most REALTIME_SESSIONS_PER_CALLER sessions at once; each response the
provider begins counts as a request against RATE_LIMIT_REQUESTS. Close codes: 1008
(a rule refused: token revoked, scope, model), 1009 (frame too large), 1013 (the proxy
is switched off: try again later), 1011 (the provider failed).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio

from core.errors import (
    BadRequest,
    CorsOriginNotAllowed,
    NotFound,
    ProxyError,
    ProxyOffline,
    RateLimited,
    UpstreamTimeout,
    UpstreamUnreachable,
    forget_frames,
    render,
)
from core.headers import holds_credential, upstream_request_headers
from core.protocols import Route
from core.providers import RETRY_ON_NEXT_KEY
from core.proxy.access_log import (
    ERROR_SHAPE,
    PathForLog,
    access_logger,
    new_request_id,
    request_line,
)
from core.realtime.wire import (
    REALTIME_WIRES,
    RealtimeWire,
    SessionMeter,
    parse_frame,
    split_browser_key,
)
from core.request import RepeatedField, build_request
from core.stages import Outcome
from core.types import RequestLog

if TYPE_CHECKING:
    from collections.abc import Callable

    from core.config import Settings
    from core.errors import ErrorShape
    from core.providers import Provider
    from core.realtime.stages import SessionStages
    from core.request import ProxyRequest
    from core.stages import Ticket
    from core.types import Receive, Scope, Send

logger = logging.getLogger("llm_proxy")

# A realtime session is metered (its usage events are read) and reserves
# REALTIME_RESERVE_TOKENS up front (core/usage/estimate.py).
SESSION_ROUTE = Route("metered", "realtime")
# Pings to the provider; uvicorn pings the caller on its own (ws_ping_interval).
_HEARTBEAT_SECONDS = 30.0
# RFC 6455: a close frame's reason is at most 123 bytes of UTF-8.
_REASON_BYTES = 123
# How long the proxy waits for the provider to answer its close frame. The frame goes out at
# once; a provider that never answers, or keeps sending instead, must not keep the session
# (its caller's slot, its reservation, the sockets) open any longer than this.
CLOSE_WAIT_SECONDS = 1.0
# Close codes that may not be sent in a close frame, and what stands in for them.
_UNSENDABLE = {1004: 1011, 1005: 1000, 1006: 1011, 1015: 1011}
# RFC 6455 / IANA: a rule refused (policy), a frame too large, try again later.
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_TRY_LATER = 1013
# Callers counted together (a shared token without per-IP counting, anonymous callers) are
# many people: the per-caller cap does not apply to them; MAX_CONNECTIONS still does.
_POOLED_CALLERS = frozenset({"shared", "anonymous"})


class TooManySessions(RateLimited):
    code = "too_many_sessions"


class _Redirected(Exception):
    """The provider answered the handshake with a redirect (which is not followed)."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


async def _refuse_redirect(session: Any, context: Any, params: Any) -> None:
    """aiohttp's redirect trace, called before it follows one: raising stops it there (and
    aiohttp closes the response on the way out)."""
    raise _Redirected(params.response.status)


class UpstreamRefusedSession(ProxyError):
    """The provider answered the WebSocket handshake with an HTTP status."""

    code = "upstream_refused_session"

    def __init__(self, status: int) -> None:
        super().__init__(f"The provider refused the realtime session (HTTP {status}).")
        # The provider's own refusal status when it is one (a 401, a 429...); anything
        # else is a 502 (a 200 or a 302 is no refusal, and past 599 the server has no
        # status line: uvicorn failed in its `send`), as on HTTP (core/proxy/forward.py).
        self.status = status if 400 <= status <= 599 else 502


def sendable(code: int | None) -> int:
    if code is None:
        return 1000
    if 3000 <= code <= 4999 or (1000 <= code <= 1014 and code not in _UNSENDABLE):
        return code
    return _UNSENDABLE.get(code, 1011)


def reason(text: str) -> str:
    return text.encode()[:_REASON_BYTES].decode("utf-8", "ignore")


@dataclass
class _Watch:
    """What the relay checks a session's caller frames against."""

    request: ProxyRequest
    wire: RealtimeWire
    # The model checked at the handshake.
    model: str | None
    byte_markers: tuple[bytes, ...] = ()
    # The session's settings as its updates left them (OpenAI's session.update).
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.byte_markers = tuple(marker.encode() for marker in self.wire.markers)


@dataclass
class _Relay:
    outcome: Outcome
    accepted: bool = False
    # The caller left, or was sent its close: nothing more goes to it.
    caller_gone: bool = False
    closed: bool = False
    upstream_failed: bool = False


def socket_request(
    scope: Scope, provider: Provider, remainder: str, log: RequestLog | None
) -> tuple[ProxyRequest, list[str]]:
    """The request object the stages see for a WebSocket handshake, and the subprotocols to
    offer upstream (the browser's credential subprotocol taken out)."""
    browser_key, protocols = split_browser_key(list(scope.get("subprotocols") or ()))
    headers = [
        (name, value)
        for name, value in scope["headers"]
        if name not in (b"upgrade", b"sec-websocket-protocol")
    ]
    # A session spends like a POST: a model-scoped token must name its model.
    http_scope = {**scope, "type": "http", "method": "POST", "headers": headers}
    request = build_request(
        http_scope, provider, remainder, log, None if browser_key is None else browser_key.encode()
    )
    request.route = SESSION_ROUTE
    # A subprotocol is offered upstream apart from the headers, yet is one: one that carries
    # the caller's credential goes no further, as such a header does (core/headers.py).
    protocols = [
        protocol
        for protocol in protocols
        if not holds_credential(protocol.encode("latin-1", "replace"), request.credential)
    ]
    return request, protocols


def upstream_url(request: ProxyRequest) -> str:
    provider = request.provider
    url = provider.origin + provider.base_path + request.remainder
    if request.query:
        url += "?" + request.query.decode("latin-1")
    return "ws" + url[4:] if url.startswith("http") else url


class RealtimeEndpoint:
    """The ASGI app for `websocket` scopes on every provider route."""

    # Telemetry's reader of the answered model and response statuses (core/telemetry/
    # reply.py), set by the app only when OpenTelemetry is on: it wraps the session's meter
    # (the one reader of every upstream frame), so the relay has no branch for it.
    frame_reader: Callable[[Scope, str, SessionMeter], SessionMeter] | None = None
    # How the access log writes the path of a handshake no caller was identified by (the
    # app's, which knows PROXY_ACCESS_TOKEN's and the admin token's digests): a token in a
    # client's base URL is no more logged from a WebSocket than from HTTP.
    path_for_log: PathForLog = PathForLog()

    def __init__(self, settings: Settings, stages: SessionStages) -> None:
        self.settings = settings
        self.stages = stages
        # Open sessions per caller identity, in this process.
        self.open_sessions: dict[str, int] = {}
        self.max_frame = min(settings.realtime_max_frame_bytes, settings.max_body_bytes)
        self.any_origin = "*" in settings.allowed_origins
        self.origins = frozenset(o.encode() for o in settings.allowed_origins if o != "*")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        log = RequestLog(request_id=new_request_id(), method="GET", path=scope["path"])
        try:
            await self.session(scope, receive, send, log)
        except Exception as exc:
            # Only the type: an exception's text may quote a header or URL.
            log.error = log.error or type(exc).__name__
            access_logger.error("unexpected realtime error: %s", type(exc).__name__)
        finally:
            log.total_ms = (time.perf_counter() - started) * 1000
            if self.settings.access_log:
                access_logger.info(request_line(log, self.path_for_log))

    def check_origin(self, request: ProxyRequest) -> None:
        # Browsers apply no CORS to WebSockets: the page's Origin is checked here instead,
        # against the same list.
        origin = request.origin
        if origin is not None and not self.any_origin and origin not in self.origins:
            raise CorsOriginNotAllowed(
                "This origin may not open realtime sessions on the proxy (see ALLOWED_ORIGINS)."
            )

    async def session(self, scope: Scope, receive: Receive, send: Send, log: RequestLog) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        shape: ErrorShape = "openai"
        stages = self.stages
        tickets: list[Ticket] = []
        relay = _Relay(Outcome())
        request = None
        holder: str | None = None
        try:
            provider, remainder = stages.route(scope)
            shape = provider.error_shape
            log.route = provider.name
            if not provider.upstream:
                # MODEL_ROUTES' /v1 without UPSTREAM_BASE_URL routes HTTP requests by their
                # body's model and has no upstream of its own: a 404 that says where
                # sessions go, not a 502 (a connect to no host) that SDKs retry.
                raise NotFound(
                    f"{provider.prefix} only routes HTTP requests by model (MODEL_ROUTES) and "
                    "holds no realtime session: open it on a provider's own route, e.g. "
                    "/openai/v1/realtime?model=..."
                )
            realtime = REALTIME_WIRES.get(provider.realtime)
            request, protocols = socket_request(scope, provider, remainder, log)
            if realtime is None or not realtime.is_session_path(request.path):
                raise NotFound(
                    f"No realtime WebSocket route at {scope['path'][:200]!r}: use "
                    "/v1/realtime?model=... (OpenAI) or the Gemini Live path under /gemini."
                )
            self.check_origin(request)
            await stages.identify(request)
            await stages.admit_head(request, tickets)
            holder = self.hold_session(request)
            first: str | bytes | None = None
            if realtime.model_in_first_message:
                # Gemini: accepted first, since the model comes in the first message.
                await self.accept(send, protocols[0] if protocols else None, relay, log)
                first = await self.first_message(receive, realtime, request, relay)
                if first is None:
                    return
                protocols = []
            else:
                model = realtime.model_in_query(request.query)
                if model and request.names_model_in_path():
                    # Azure's deployment in the path and another in the query: the proxy
                    # reads the path's, a provider may read the query's. Named once.
                    raise RepeatedField(
                        "The path names a deployment and the query names a model or "
                        "deployment too; name the model once."
                    )
                request.use_document({"model": model} if model else {})
            await stages.admit_body(request, tickets)
            log.model = await request.model()
            # A token limit or budget holds a reservation the session must stay within.
            capped = any(ticket.needs_usage for ticket in tickets)
            client, upstream = await self.connect(request, protocols)
            try:
                relay.outcome.upstream_status = 200  # from here the provider may charge
                if not relay.accepted:
                    chosen = upstream.protocol or (protocols[0] if protocols else None)
                    await self.accept(send, chosen, relay, log)
                if isinstance(first, str):
                    await upstream.send_str(first)
                elif first is not None:
                    await upstream.send_bytes(first)
                watch = _Watch(request, realtime, log.model)
                meter = realtime.meter()
                if self.frame_reader is not None:
                    meter = self.frame_reader(scope, realtime.name, meter)
                await self.relay(receive, send, upstream, meter, relay, capped, watch)
            finally:
                # aiohttp keeps the error that ended the socket, in a reference cycle of its
                # own objects; its traceback holds this session's frames and with them the
                # request (core/errors.py, forget_frames).
                ended_by = upstream.exception()
                if ended_by is not None:
                    forget_frames(ended_by)
                await client.close()
        except ProxyError as error:
            log.error = error.code
            # A route known before the error, or the provider a 404 names (the endpoint's
            # no_route: a provider's route this deployment has not switched on), as on HTTP.
            await self.refuse(scope, send, error, scope.get(ERROR_SHAPE, shape), relay, log)
        finally:
            if holder is not None:
                self.release_session(holder)
            with anyio.CancelScope(shield=True):
                if tickets or request is not None:
                    await stages.settle(tickets, relay.outcome, request)

    def hold_session(self, request: ProxyRequest) -> str | None:
        """Counts the session against its caller's cap; TooManySessions (429) past it."""
        cap = self.settings.realtime_sessions_per_caller
        holder = request.counted_as
        if not cap or not holder or holder in _POOLED_CALLERS:
            return None
        held = self.open_sessions.get(holder, 0)
        if held >= cap:
            raise TooManySessions(
                f"This caller has {held} realtime sessions open, the most allowed at once "
                "(REALTIME_SESSIONS_PER_CALLER); close one first."
            )
        self.open_sessions[holder] = held + 1
        return holder

    def release_session(self, holder: str) -> None:
        held = self.open_sessions.get(holder, 0) - 1
        if held > 0:
            self.open_sessions[holder] = held
        else:
            self.open_sessions.pop(holder, None)

    async def accept(
        self, send: Send, subprotocol: str | None, relay: _Relay, log: RequestLog
    ) -> None:
        message: dict[str, Any] = {"type": "websocket.accept"}
        if subprotocol:
            message["subprotocol"] = subprotocol
        await send(message)
        relay.accepted = True
        log.status = 101

    async def refuse(
        self,
        scope: Scope,
        send: Send,
        error: ProxyError,
        shape: ErrorShape,
        relay: _Relay,
        log: RequestLog,
    ) -> None:
        if relay.closed:
            return
        if relay.accepted:
            code = 1011 if error.status >= 500 else 1008
            await _close(send, code, error.message, relay)
            return
        log.status = error.status
        if "websocket.http.response" in (scope.get("extensions") or {}):
            status, headers, body = render(error, shape)
            await send(
                {"type": "websocket.http.response.start", "status": status, "headers": headers}
            )
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send({"type": "websocket.close", "code": 1008, "reason": reason(error.message)})

    async def first_message(
        self, receive: Receive, realtime: RealtimeWire, request: ProxyRequest, relay: _Relay
    ) -> str | bytes | None:
        """Gemini Live: the client's `setup` message, which names the model."""
        message = None
        with anyio.move_on_after(self.settings.read_timeout):
            message = await receive()
        if message is None:
            raise BadRequest("No setup message came in time.")
        if message["type"] == "websocket.disconnect":
            relay.caller_gone = relay.closed = True
            return None
        frame = message.get("text")
        if frame is None:
            frame = message.get("bytes") or b""
        if len(frame) > self.max_frame:
            raise BadRequest(f"The setup message is larger than {self.max_frame} bytes.")
        # As strict as an HTTP body: a model named twice is refused, not checked once.
        parsed = parse_frame(frame, realtime.policed)
        model = realtime.model_in_setup(parsed)
        if model is None:
            raise BadRequest(
                "The first message of a Live session must be the JSON setup message naming "
                'the model: {"setup": {"model": "models/..."}}.'
            )
        # The rest of the setup is read as a generateContent body is (its tools under a
        # dollar budget: Google Search grounding bills per grounded prompt).
        request.use_document({**parsed["setup"], "model": model})
        return frame  # type: ignore[no-any-return]

    async def connect(self, request: ProxyRequest, protocols: list[str]) -> tuple[Any, Any]:
        """The upstream WebSocket, opened with the real key; a handshake refused as
        overloaded or rate-limited (429, 5xx) tries the next key, as for HTTP. No redirect
        is followed: anything but 101 is the provider's answer."""
        import aiohttp  # servers only, and only for a session

        settings = self.settings
        url = upstream_url(request)
        headers = [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in upstream_request_headers(request.headers, request.credential)
        ]
        attempts = list(request.provider.keys.attempts())
        # ws_connect has no allow_redirects and follows up to ten: a redirect is refused
        # before the next request goes out, so neither the caller's session nor the key (a
        # cross-origin redirect keeps `api-key` and `x-goog-api-key`) goes anywhere the
        # proxy did not choose, as on HTTP (core/upstream: redirects are never followed).
        refuse_redirects = aiohttp.TraceConfig()
        refuse_redirects.on_request_redirect.append(_refuse_redirect)
        session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=settings.connect_timeout),
            trace_configs=[refuse_redirects],
        )
        try:
            for number, key in enumerate(attempts, start=1):
                sent = headers + ([(key[0].decode(), key[1].decode())] if key else [])
                try:
                    with anyio.fail_after(settings.connect_timeout):
                        upstream = await session.ws_connect(
                            url,
                            protocols=protocols,
                            headers=sent,
                            max_msg_size=settings.max_body_bytes,
                            autoping=True,
                            autoclose=True,
                            # A provider gone silent is noticed (no pong) rather than
                            # holding the caller until REALTIME_MAX_SECONDS.
                            heartbeat=_HEARTBEAT_SECONDS,
                        )
                    return session, upstream
                except aiohttp.WSServerHandshakeError as exc:
                    forget_frames(exc)
                    if exc.status in RETRY_ON_NEXT_KEY and number < len(attempts):
                        continue
                    raise UpstreamRefusedSession(exc.status) from None
                except _Redirected as exc:
                    raise UpstreamRefusedSession(exc.status) from None
                except TimeoutError:
                    raise UpstreamTimeout(
                        "The provider did not open the realtime session in time "
                        f"(UPSTREAM_CONNECT_TIMEOUT {settings.connect_timeout:g}s)."
                    ) from None
                except (aiohttp.ClientError, OSError) as exc:
                    logger.warning("realtime upstream failed: %s", type(exc).__name__)
                    forget_frames(exc)
                    raise UpstreamUnreachable("The provider could not be reached.") from None
            raise AssertionError("a key ring always yields at least one attempt")
        except BaseException:
            await session.close()
            raise

    async def relay(
        self,
        receive: Receive,
        send: Send,
        upstream: Any,
        meter: SessionMeter,
        relay: _Relay,
        capped: bool,
        watch: _Watch,
    ) -> None:
        """Frames both ways, unchanged, until either side closes, the time limit, (while
        a token limit or budget holds its reservation) the reservation is used up (a cap
        that a long session could run past would be no cap), or a rule ends it: the token
        revoked or the proxy switched off (checked every REALTIME_RECHECK_SECONDS and on
        each frame that starts a turn), a frame too large, or one naming another model."""
        from aiohttp import WSMsgType

        limit = self.settings.realtime_max_seconds
        reserved = self.settings.realtime_reserve_tokens if capped else 0
        max_frame = self.max_frame
        stages = self.stages
        # The provider's frames and close reason are a reply: keys out, as on HTTP.
        scrub = stages.scrub_frame

        # Asyncio's task group, not anyio's: anyio keeps each task it cancelled in a
        # reference cycle (its done callback holds the CancelledError, whose traceback
        # holds the callback's frame), and with it this session until the collector runs.
        tasks: list[asyncio.Task[None]] = []

        def stop() -> None:
            """Ends the session's three loops (the one that calls it at its next await)."""
            for task in tasks:
                task.cancel()

        async def end(code: int, text: str) -> None:
            # The caller's close first: the provider's answering close must not overtake it.
            await _close(send, code, text, relay)
            await _close_upstream(upstream, 1000)
            stop()

        async def recheck() -> bool:
            """False (and the session ended) when a rule no longer lets it go on."""
            try:
                await stages.recheck(watch.request)
            except ProxyError as error:
                log = watch.request.log
                if log is not None:
                    log.error = error.code
                code = CLOSE_TRY_LATER if isinstance(error, ProxyOffline) else CLOSE_POLICY
                if error.status >= 500 and not isinstance(error, ProxyOffline):
                    code = 1011
                await end(code, error.message)
                return False
            return True

        async def every_few_seconds() -> None:
            period = self.settings.realtime_recheck_seconds
            while True:
                await asyncio.sleep(period)
                if not await recheck():
                    return

        async def allowed(frame: str | bytes) -> bool:
            """Whether a caller frame may go to the provider (the session ended if not)."""
            size = len(frame)
            if isinstance(frame, str) and size * 4 > max_frame:
                size = len(frame.encode())  # UTF-8 bytes, counted only near the bound
            if size > max_frame:
                await end(
                    CLOSE_TOO_BIG,
                    f"Frame larger than {max_frame} bytes (REALTIME_MAX_FRAME_BYTES).",
                )
                return False
            wire = watch.wire
            markers = wire.markers if isinstance(frame, str) else watch.byte_markers
            if not any(marker in frame for marker in markers):  # type: ignore[operator]
                # The provider decodes JSON escapes: `response\u002ecreate` is a marker
                # to it. A frame with a backslash is parsed too, and a binary one with a
                # NUL (JSON in UTF-16 or UTF-32 hides every marker); audio (base64) has
                # neither.
                if isinstance(frame, str):
                    if "\\" not in frame:
                        return True  # audio chunks and the like: never parsed
                elif b"\\" not in frame and b"\x00" not in frame:
                    return True
            try:
                message = parse_frame(frame, wire.policed)
            except ProxyError as error:
                await end(CLOSE_POLICY, error.message)
                return False
            starts_turn, refusal = wire.inspect(message, watch.model)
            if refusal is not None:
                await end(CLOSE_POLICY, refusal)
                return False
            settings = wire.new_settings(message)
            asked = wire.response_settings(message)
            if settings is not None or asked is not None:
                # The settings the provider now runs with, read by the rules that read an
                # HTTP body's: a transcription model that runs beside the session's (scopes,
                # ALLOWED_MODELS), tools billed apart from tokens (a dollar budget). An
                # update changes only what it names, so they add up; a response's own
                # settings hold over them for that response. Kept for the rechecks after.
                if settings is not None:
                    watch.settings = merged(watch.settings, settings)
                current = merged(watch.settings, asked) if asked else watch.settings
                watch.request.use_document({"model": watch.model, "session": current})
                try:
                    await stages.check_settings(watch.request)
                except ProxyError as error:
                    await end(CLOSE_POLICY, error.message)
                    return False
            return not starts_turn or await recheck()

        counted = 0  # responses begun that were counted as requests

        async def over_a_rule() -> bool:
            """After each provider frame: a response it began is counted as a request
            (RATE_LIMIT_REQUESTS holds for turns, whoever started them: a caller's frame
            or the provider's own turn detection), then the reservation is checked. True
            (and the session ended) when a rule stops it."""
            nonlocal counted
            begun = meter.responses_begun()
            if begun > counted:
                counted = begun
                try:
                    await stages.count_turn(watch.request)
                except ProxyError as error:
                    log = watch.request.log
                    if log is not None:
                        log.error = error.code
                    await end(1011 if error.status >= 500 else CLOSE_POLICY, error.message)
                    return True
            return await used_up()

        async def used_up() -> bool:
            if not reserved:
                return False
            if meter.unread_turns():
                # A cap cannot count what was never reported: no further turn is relayed
                # (the unread one is charged the reservation at settlement).
                code, text = (
                    1011,
                    "The provider reported no usage for a response, and usage is capped "
                    "here; open a new session.",
                )
            elif meter.finish().total >= reserved:
                code, text = (
                    1008,
                    f"Session used its {reserved} reserved tokens (REALTIME_RESERVE_TOKENS); "
                    "open a new one.",
                )
            else:
                return False
            await _close_upstream(upstream, 1000)
            await _close(send, code, text, relay)
            stop()
            return True

        async def from_caller() -> None:
            while True:
                message = await receive()
                kind = message["type"]
                if kind == "websocket.receive":
                    text = message.get("text")
                    frame = text if text is not None else (message.get("bytes") or b"")
                    if not await allowed(frame):
                        return
                    try:
                        if text is not None:
                            await upstream.send_str(text)
                        else:
                            await upstream.send_bytes(frame)
                    except (OSError, RuntimeError):
                        pass  # the upstream is closing: its close reaches the caller
                elif kind == "websocket.disconnect":
                    relay.caller_gone = relay.closed = True
                    code = sendable(message.get("code"))
                    words = (message.get("reason") or "").encode()[:_REASON_BYTES]
                    await _close_upstream(upstream, code, words)
                    stop()
                    return

        async def from_upstream() -> None:
            while True:
                frame = await upstream.receive()
                kind = frame.type
                # Scrubbed before the meter sees it: the meter may carry telemetry's reader
                # (frame_reader), which exports what it reads (the answered model), so it
                # reads the frame as the caller gets it, as on HTTP (core/proxy/taps.py).
                # A key's replacement changes no usage figure.
                if kind == WSMsgType.TEXT:
                    text = scrub(frame.data)
                    meter.feed(text)
                    await _send(send, {"type": "websocket.send", "text": text}, relay)
                    if await over_a_rule():
                        return
                elif kind == WSMsgType.BINARY:
                    data = scrub(frame.data)
                    meter.feed(data)
                    await _send(send, {"type": "websocket.send", "bytes": data}, relay)
                    if await over_a_rule():
                        return
                elif kind == WSMsgType.CLOSING:
                    # Another loop of this session is closing the socket (aiohttp wakes the
                    # reader first): it ends the session once its close frame is out, and
                    # stopping it now would cut the close short (the provider would see
                    # 1005 instead of the caller's code).
                    return
                elif kind in (WSMsgType.CLOSE, WSMsgType.CLOSED):
                    words = frame.extra if kind == WSMsgType.CLOSE and frame.extra else ""
                    words = scrub(str(words))
                    # No close frame (1006: the connection dropped, or no pong): a response
                    # may have been cut before its usage, so the reservation stands.
                    if not relay.closed:  # not the close this proxy started
                        relay.upstream_failed = upstream.close_code in (None, 1006)
                    await _close(send, sendable(upstream.close_code), str(words), relay)
                    stop()
                    return
                elif kind == WSMsgType.ERROR:
                    relay.upstream_failed = True
                    logger.warning("realtime upstream broke: %s", type(frame.data).__name__)
                    await _close(send, 1011, "The provider's connection failed.", relay)
                    stop()
                    return

        timed_out = False
        try:
            async with asyncio.timeout(limit), asyncio.TaskGroup() as group:
                tasks.extend(
                    group.create_task(loop())
                    for loop in (from_caller, from_upstream, every_few_seconds)
                )
        except TimeoutError as expired:
            timed_out = True
            # asyncio's task group keeps the CancelledError it ended with in a local of a
            # frame its traceback holds (Python 3.12): the cycle would hold this session.
            forget_frames(expired)
        finally:
            # A cancelled task keeps its CancelledError, whose traceback holds the task's
            # frames, which hold `stop` and so this list: emptied, no cycle is left.
            tasks.clear()
        if timed_out:
            await _close_upstream(upstream, 1000)
            await _close(
                send,
                1008,
                f"Session time limit of {limit:g} s reached (REALTIME_MAX_SECONDS).",
                relay,
            )
        outcome = relay.outcome
        outcome.usage = meter.finish()
        # Each response whose usage was never reported is charged the reservation on top.
        outcome.unread_calls = meter.unread_turns()
        # A response under way when the session ended (the caller hung up, the time limit,
        # the reservation used up) is a reply cut short: at least the reservation is charged.
        outcome.complete = not relay.upstream_failed and not meter.cut_short()
        outcome.caller_left = relay.caller_gone


async def _close_upstream(upstream: Any, code: int, message: bytes = b"") -> None:
    """The close frame to the provider, and at most CLOSE_WAIT_SECONDS for its answer
    (aiohttp's own bound applies to each frame read meanwhile, not to the whole wait)."""
    try:
        async with asyncio.timeout(CLOSE_WAIT_SECONDS):
            await upstream.close(code=code, message=message)
    except TimeoutError as late:
        # aiohttp closes the socket when its wait is cancelled (and the session's client
        # closes whatever is left when the session ends): nothing to keep.
        forget_frames(late)


async def _send(send: Send, message: dict[str, Any], relay: _Relay) -> None:
    if relay.closed:
        return
    try:
        await send(message)
    except OSError:
        relay.closed = True  # the caller's disconnect arrives on receive()


async def _close(send: Send, code: int, text: str, relay: _Relay) -> None:
    await _send(send, {"type": "websocket.close", "code": code, "reason": reason(text)}, relay)
    relay.closed = True


def merged(kept: dict[str, Any], update: dict[str, Any], depth: int = 0) -> dict[str, Any]:
    """`update` over `kept`, object by object, as the provider applies a session update: what
    it leaves out stays as it was. Past a few levels (settings are shallow; a frame nested
    hundreds deep is not settings) the update's object replaces the kept one whole."""
    result = dict(kept)
    for name, value in update.items():
        before = result.get(name)
        if depth < 8 and isinstance(before, dict) and isinstance(value, dict):
            value = merged(before, value, depth + 1)
        result[name] = value
    return result
