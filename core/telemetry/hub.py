"""The telemetry interface the proxy calls, and the three small hooks that call it.

    Telemetry.on_start(scope)            a proxied request or realtime session begins
    Telemetry.on_first_byte(request)     the first reply byte went to the caller
    Telemetry.on_attempt(...)            one upstream try (key or target failover, recovery)
    Telemetry.on_settle(request, outcome) the settle stage: model, usage, cost, cache
    Telemetry.on_end(record)             the reply is over: every sink reads the record

Hooks into today's code: `TelemetryMiddleware` (start and end, and `/metrics`), the
pipeline's settler list (`Telemetry` is a settler), and `AttemptRecorder`, which wraps the
upstream client so each `send` is an attempt and carries the W3C `traceparent`. The first
byte's time is the one the relay already records on the access-log record (RequestLog); a
tap can call `on_first_byte` instead once the relay has taps.

Nothing runs per relayed event: a sink sees a request twice (start, end), never a chunk.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from typing import TYPE_CHECKING, Any, Protocol

from core.errors import ProxyError, TransportFailure
from core.telemetry.record import Attempt, RequestRecord, max_tokens_of, server_address

if TYPE_CHECKING:
    from core.request import ProxyRequest
    from core.stages import Outcome
    from core.types import ASGIApp, Receive, Scope, Send
    from core.upstream.client import UpstreamReply

logger = logging.getLogger("llm_proxy")

# The record of the request this task serves (the upstream client wrapper reads it).
CURRENT: contextvars.ContextVar[RequestRecord | None] = contextvars.ContextVar(
    "llm_proxy_telemetry", default=None
)
RECORD_KEY = "llm_proxy.telemetry"
# The most a server's shutdown waits for the last export.
SHUTDOWN_SECONDS = 5.0
# Paths that are the proxy's own, not a proxied request: not traced or counted.
_OWN_PATHS = ("/health", "/admin", "/proxy/usage", "/metrics")


class Sink(Protocol):
    """One destination: OpenTelemetry, Prometheus, the ledger's request log."""

    def start(self, record: RequestRecord, scope: Scope) -> None: ...

    def end(self, record: RequestRecord) -> None: ...

    async def flush(self) -> None: ...


class Telemetry:
    def __init__(self, sinks: list[Sink], *, content: Any = None) -> None:
        self.sinks = sinks
        # The content-capture switch's scrubber (core/telemetry/content.py), or None.
        self.content = content
        # Set on servers where `/metrics` is served (core/telemetry/prometheus.py).
        self.metrics_endpoint: ASGIApp | None = None
        # Function platforms: export before the invocation ends (the process may freeze).
        self.flush_each = False
        # Every reply is metered for it (OpenTelemetry's gen_ai.usage.*). Prometheus alone
        # does not ask it: a reply no rule meters then costs nothing per event, and its
        # tokens are not counted (llm_proxy_tokens counts replies metered anyway).
        self.meters = False
        # OpenTelemetry's spans name the server each attempt went to (server.address):
        # only then is it read, per attempt and at settle. Prometheus and the request log
        # never read it.
        self.spans = False

    def on_start(self, scope: Scope) -> RequestRecord:
        record = RequestRecord(
            kind=scope["type"], method=scope.get("method", "GET"), path=scope["path"]
        )
        record.log = scope.get("llm_proxy.log")
        scope[RECORD_KEY] = record
        for sink in self.sinks:
            sink.start(record, scope)
        return record

    def on_first_byte(self, request: ProxyRequest) -> None:
        record = request.scope.get(RECORD_KEY)
        if record is not None and record.first_byte_ns is None:
            record.first_byte_ns = time.time_ns()

    def on_attempt(self, record: RequestRecord, attempt: Attempt) -> None:
        record.attempts.append(attempt)
        if record.server is None or attempt.status is not None:
            record.server = attempt.server

    async def __call__(self, request: ProxyRequest, outcome: Outcome) -> None:
        """The settle stage's telemetry step (a pipeline settler)."""
        await self.on_settle(request, outcome)

    async def on_settle(self, request: ProxyRequest, outcome: Outcome) -> None:
        record: RequestRecord | None = request.scope.get(RECORD_KEY)
        if record is None:
            return
        record.settled = True
        if record.log is None:
            record.log = request.log  # a realtime session keeps its own
        record.wire = request.provider.wire.name
        document = None
        try:
            # Both read what the stages already parsed: no second parse.
            record.request_model = await request.model()
            document = await request.document()
            record.stream = await request.is_stream()
        except ProxyError:  # a body that never parsed: its refusal says so, not telemetry
            document = None
        if self.spans:  # gen_ai.request.max_tokens: a span attribute only
            record.max_tokens = max_tokens_of(document)
        usage = outcome.usage
        if usage is not None:
            record.input_tokens = usage.input_tokens
            record.output_tokens = usage.output_tokens
            record.cached_input_tokens = usage.cached_input_tokens
        record.cost_usd = outcome.cost_usd
        record.cache_hit = outcome.cache_hit
        if record.server is None and self.spans:
            record.server = server_address(request.provider.upstream)
        if self.content is not None and document is not None:
            record.content = self.content.capture(document)

    def on_end(self, record: RequestRecord) -> None:
        record.finish()
        for sink in self.sinks:
            try:
                sink.end(record)
            except Exception as exc:  # telemetry never breaks a reply
                logger.warning("telemetry sink failed: %s", type(exc).__name__)

    async def flush(self) -> None:
        for sink in self.sinks:
            await sink.flush()

    async def close(self) -> None:
        """At shutdown: what is pending goes out (bounded, as a flush is)."""
        for sink in self.sinks:
            shutdown = getattr(sink, "shutdown", None)
            if shutdown is None:
                continue
            try:
                await asyncio.wait_for(asyncio.to_thread(shutdown), SHUTDOWN_SECONDS)
            except TimeoutError:
                logger.warning("telemetry export at shutdown took over %gs", SHUTDOWN_SECONDS)


class TelemetryMiddleware:
    """Starts and ends each proxied request's record; answers `/metrics` where served."""

    def __init__(self, app: ASGIApp, telemetry: Telemetry) -> None:
        self.app = app
        self.telemetry = telemetry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan" or scope["path"].startswith(_OWN_PATHS):
            metrics = self.telemetry.metrics_endpoint
            if metrics is not None and kind == "http" and scope["path"] == "/metrics":
                await metrics(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        if kind == "http" and scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)  # a CORS preflight is not a request
            return
        telemetry = self.telemetry
        record = telemetry.on_start(scope)
        # The upstream client's wrapper (only where spans read attempts) finds the request
        # it serves here.
        current = CURRENT.set(record) if telemetry.spans else None
        try:
            await self.app(scope, receive, send)
        finally:
            if current is not None:
                CURRENT.reset(current)
            telemetry.on_end(record)
            if telemetry.flush_each:
                await telemetry.flush()


class AttemptRecorder:
    """The upstream client, each `send` recorded as an attempt of the current request and
    given the trace's `traceparent` (the caller's own was stripped with its other headers)."""

    def __init__(self, client: Any, telemetry: Telemetry, tracer: Any = None) -> None:
        self._client = client
        self._telemetry = telemetry
        self._tracer = tracer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def send(
        self, method: str, url: str, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> UpstreamReply:
        record = CURRENT.get()
        if record is None:
            return await self._client.send(method, url, headers, body)  # type: ignore[no-any-return]
        attempt = Attempt(server=server_address(url), started_ns=time.time_ns())
        tracer = self._tracer
        if tracer is not None:
            headers = tracer.attempt_headers(record, attempt, headers)
        try:
            reply = await self._client.send(method, url, headers, body)
        except BaseException as exc:
            attempt.error = exc.kind if isinstance(exc, TransportFailure) else type(exc).__name__
            attempt.ended_ns = time.time_ns()
            self._telemetry.on_attempt(record, attempt)
            raise
        attempt.status = reply.status_code
        attempt.ended_ns = time.time_ns()
        self._telemetry.on_attempt(record, attempt)
        return reply  # type: ignore[no-any-return]
