"""One request's figures as telemetry sees them, and the GenAI names derived from them.

Filled in three places: the middleware at start and end (path, status, refusal code,
timings from the access-log record), the settler (model, max tokens, usage, cost, cache),
and the forward loop (one `Attempt` per upstream try). Every sink reads the same record, so
a span, a Prometheus counter and a ledger row never disagree. Nothing here imports a
telemetry library.
"""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from core.types import RequestLog

# gen_ai.provider.name (OpenTelemetry GenAI conventions) for each wire protocol; an
# OpenAI-compatible vendor whose route name is itself a registered value keeps it.
PROVIDER_NAMES = {"openai": "openai", "anthropic": "anthropic", "gemini": "gcp.gemini"}
REGISTERED_PROVIDERS = frozenset(
    {"openai", "anthropic", "groq", "deepseek", "mistral_ai", "perplexity", "x_ai", "cohere"}
)


class Attempt:
    """One upstream try: a key or target failover makes several, a recovery one more."""

    __slots__ = ("ended_ns", "error", "server", "span", "started_ns", "status")

    def __init__(self, server: str, started_ns: int) -> None:
        self.server = server
        self.started_ns = started_ns
        self.ended_ns = 0
        self.status: int | None = None
        self.error: str | None = None
        # The OpenTelemetry child span, where traces are on.
        self.span: Any = None


# The fields a request does not set keep their defaults on the class (one small instance
# dict a request, not twenty-five assignments); `attempts`, the one mutable default, is
# made per record. Neither is a dataclass: its generated methods would be compiled at
# every cold start (core/records.py).
class RequestRecord:
    kind: str  # "http" or "websocket"
    method: str
    path: str
    started: float
    started_ns: int
    attempts: list[Attempt]
    # The access-log record of this request (core/types.py RequestLog).
    log: RequestLog | None = None
    # From the settler.
    settled: bool = False
    wire: str | None = None
    request_model: str | None = None
    response_model: str | None = None
    max_tokens: int | None = None
    stream: bool = False
    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_input_tokens: int | None = None
    cost_usd: float | None = None
    cache_hit: bool = False
    finish_reasons: tuple[str, ...] = ()
    server: str | None = None
    # Prompt and reply text, only when content capture is on (core/telemetry/content.py).
    content: dict[str, str] | None = None
    first_byte_ns: int | None = None
    duration_s: float = 0.0
    # Sinks keep their own per-request state here (the OpenTelemetry span).
    span: Any = None

    def __init__(self, kind: str, method: str, path: str, log: RequestLog | None = None) -> None:
        self.kind = kind
        self.method = method
        self.path = path
        self.log = log
        self.started = time.perf_counter()
        self.started_ns = time.time_ns()
        self.attempts = []

    # ---- what the sinks read ---------------------------------------------------------

    @property
    def route(self) -> str | None:
        return self.log.route if self.log is not None else None

    @property
    def status(self) -> int | None:
        return self.log.status if self.log is not None else None

    @property
    def refusal(self) -> str | None:
        """The proxy's error code (rate_limit_exceeded, insufficient_quota, ...) or None."""
        return self.log.error if self.log is not None else None

    @property
    def caller(self) -> str | None:
        return self.log.caller if self.log is not None else None

    @property
    def first_byte_s(self) -> float | None:
        if self.log is not None and self.log.first_byte_ms is not None:
            return self.log.first_byte_ms / 1000
        return None

    @property
    def operation(self) -> str:
        return operation_name(self.path, self.kind)

    @property
    def provider_name(self) -> str | None:
        route = self.route
        if route in REGISTERED_PROVIDERS:
            return route
        if self.wire is not None:
            return PROVIDER_NAMES.get(self.wire, self.wire)
        return route

    @property
    def model_label(self) -> str:
        """The model for metric labels: only one an upstream accepted (a 2xx), so a caller
        cannot grow the series without bound by naming random models."""
        status = self.log.upstream_status if self.log is not None else None
        if self.request_model and status is not None and 200 <= status < 300:
            return self.request_model[:100]
        return ""

    @property
    def error_type(self) -> str | None:
        """error.type: the refusal code, else the HTTP status class of a failure."""
        if self.refusal:
            return self.refusal
        status = self.status
        if status is not None and status >= 400:
            return str(status)
        return None

    def finish(self) -> None:
        self.duration_s = time.perf_counter() - self.started
        if self.first_byte_ns is None and self.log is not None and self.log.first_byte_ms:
            self.first_byte_ns = self.started_ns + int(self.log.first_byte_ms * 1_000_000)


# Gemini's other model methods, by their name in lower case (as matched) and as written.
_GEMINI_METHODS = {
    name.lower(): name
    for name in (
        "countTokens",
        "batchGenerateContent",
        "asyncBatchEmbedContent",
        "predict",
        "predictLongRunning",
        "generateAnswer",
    )
}


def operation_name(path: str, kind: str = "http") -> str:
    """gen_ai.operation.name from the route's path (well-known values where one fits)."""
    if kind == "websocket":
        return "realtime"
    if path.endswith("/chat/completions") or path.endswith("/messages"):
        return "chat"
    if path.endswith("/responses"):
        return "chat"
    if path.endswith("/completions"):
        return "text_completion"
    method = path.rsplit(":", 1)[-1].lower() if ":" in path else ""
    if path.endswith("/embeddings") or method in ("embedcontent", "batchembedcontents"):
        return "embeddings"
    if method in ("generatecontent", "streamgeneratecontent"):
        return "generate_content"
    # A metric label: any caller (a stranger's 404 included) chooses the path, so only a
    # method Gemini has keeps its name; anything else would be a new series per request.
    return _GEMINI_METHODS.get(method, "http")


def server_address(url: str) -> str:
    """The host an upstream URL names. Read once per origin (scheme://authority, from
    the configuration: nothing a caller sends chooses it), not parsed on every request."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        return urlsplit(url).hostname or ""
    end = len(rest)
    for mark in "/?#":
        at = rest.find(mark, 0, end)
        if at >= 0:
            end = at
    return _host_of(scheme + "://" + rest[:end])


@functools.lru_cache(maxsize=64)
def _host_of(origin: str) -> str:
    return urlsplit(origin).hostname or ""


def max_tokens_of(document: Any) -> int | None:
    """The reply-length cap a request asks for, in any of the three protocols."""
    if not isinstance(document, dict):
        return None
    for name in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
        value = document.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    config = document.get("generationConfig") or document.get("generation_config")
    if isinstance(config, dict):
        value = config.get("maxOutputTokens")
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None
