"""Traces without the SDK's per-span machinery: this proxy's two span shapes written straight
to OTLP protobuf, batched, and sent over HTTP.

Through the SDK a request cost about 280 us of CPU: two span objects with their locks,
attribute cleaning and limits, then at export a protobuf message object per attribute. Here
a request's record (core/telemetry/record.py) is already everything a span says, so at its
end the span and its attempt spans are encoded once, by hand (the wire format is varints,
fixed-width numbers and length-prefixed bytes), and queued as bytes; a batch is the queued
spans joined under one resource and scope.

What stays standard, read from the same variables as the SDK reads them:

- W3C trace context: a caller's `traceparent` (and `tracestate`) is continued, an upstream
  try carries ours;
- the samplers of OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG (always_on, always_off,
  traceidratio, each parent-based or not; default parentbased_always_on);
- OTEL_BSP_SCHEDULE_DELAY, _MAX_QUEUE_SIZE, _MAX_EXPORT_BATCH_SIZE, _EXPORT_TIMEOUT;
- the exporter's OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT, _HEADERS, _TIMEOUT, _COMPRESSION,
  _CERTIFICATE, _CLIENT_CERTIFICATE, _CLIENT_KEY; retries on 429, 502, 503 and 504 within
  the timeout, as the OTLP exporter does;
- OTEL_[SPAN_]ATTRIBUTE_VALUE_LENGTH_LIMIT.

Imported only with OpenTelemetry on (core/telemetry/otel.py).
"""

from __future__ import annotations

import atexit
import gzip
import logging
import os
import random
import re
import struct
import threading
import time
import weakref
import zlib
from collections.abc import Iterable, Mapping
from typing import Any

logger = logging.getLogger("llm_proxy")

# ---- the protobuf wire format ------------------------------------------------------------

_SMALL = [bytes((n,)) for n in range(128)]
_FIXED64 = struct.Struct("<Q").pack
_FIXED32 = struct.Struct("<I").pack
_DOUBLE = struct.Struct("<d").pack
_INT64 = range(-(2**63), 2**63)


def varint(number: int) -> bytes:
    """An unsigned varint; a negative int64 as its two's complement (ten bytes)."""
    if 0 <= number < 0x80:
        return _SMALL[number]
    if number < 0:
        number += 1 << 64
    out = bytearray()
    while number >= 0x80:
        out.append((number & 0x7F) | 0x80)
        number >>= 7
    out.append(number)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: its tag, the payload's length, the payload."""
    return tag + varint(len(payload)) + payload


def any_value(value: Any) -> bytes | None:
    """An AnyValue message (opentelemetry/proto/common/v1/common.proto), or None for a
    value no attribute may hold (the SDK drops those too)."""
    kind = type(value)
    if kind is str:
        data = value.encode("utf-8", "surrogatepass")
        return b"\x0a" + varint(len(data)) + data  # string_value = 1
    if kind is bool:
        return b"\x10\x01" if value else b"\x10\x00"  # bool_value = 2
    if kind is int or (isinstance(value, int) and not isinstance(value, bool)):
        return b"\x18" + varint(int(value)) if value in _INT64 else None  # int_value = 3
    if kind is float or isinstance(value, float):
        return b"\x21" + _DOUBLE(value)  # double_value = 4
    if isinstance(value, str):
        return any_value(str(value))
    if isinstance(value, (bytes, bytearray)):
        return _field(b"\x3a", bytes(value))  # bytes_value = 7
    if isinstance(value, (list, tuple)):
        values = []
        for item in value:
            encoded = any_value(item)
            if encoded is not None:
                values.append(_field(b"\x0a", encoded))  # ArrayValue.values = 1
        return _field(b"\x2a", b"".join(values))  # array_value = 5
    return None


# How many (key, value) pairs a KeyValues keeps encoded; past it, it starts again (a caller
# naming a new model on each request only costs the encoding it would have anyway).
_MAX_CACHED = 4096


class KeyValues:
    """Encodes attribute dicts as repeated KeyValue fields under one field tag. A string or
    integer pair is encoded once and kept: most of a span's attributes (operation, provider,
    model, route, server, status, caller) repeat from request to request. Keys in `unique`
    (a request id, prompt content) are never kept."""

    def __init__(
        self, tag: bytes, value_limit: int | None = None, unique: Iterable[str] = ()
    ) -> None:
        self.tag = tag
        self.value_limit = value_limit
        self.unique = frozenset(unique)
        self.pairs: dict[tuple[str, Any], bytes] = {}

    def encode(self, attributes: Mapping[str, Any]) -> list[bytes]:
        get = self.pairs.get
        out = []
        for item in attributes.items():
            # A bool is never looked up: (key, True) would find a kept (key, 1).
            if type(item[1]) is bool:
                pair = self._pair(*item)
            else:
                try:
                    pair = get(item)  # the (key, value) tuple itself is the dict key
                except TypeError:  # a list: not hashable, never kept
                    pair = None
                if pair is None:
                    pair = self._keep(*item)
            if pair is not None:
                out.append(pair)
        return out

    def _keep(self, key: str, value: Any) -> bytes | None:
        pair = self._pair(key, value)
        kind = type(value)
        if pair is not None and (kind is str or kind is int) and key not in self.unique:
            pairs = self.pairs
            if len(pairs) >= _MAX_CACHED:
                pairs.clear()
            pairs[key, value] = pair
        return pair

    def _pair(self, key: str, value: Any) -> bytes | None:
        """One KeyValue (key = 1, value = 2), framed under the tag."""
        if self.value_limit is not None:
            value = _limited(value, self.value_limit)
        encoded = any_value(value)
        if encoded is None:
            return None
        data = key.encode()
        pair = b"\x0a" + varint(len(data)) + data + b"\x12" + varint(len(encoded)) + encoded
        return self.tag + varint(len(pair)) + pair


def _limited(value: Any, limit: int) -> Any:
    if isinstance(value, str):
        return value[:limit]
    if isinstance(value, (list, tuple)):
        return [item[:limit] if isinstance(item, str) else item for item in value]
    return value


# Span.attributes (field 9, length-delimited): the tag of a span's KeyValues.
SPAN_ATTRIBUTES = b"\x4a"
# Span kinds (trace.proto); this proxy's spans are all CLIENT.
KIND_CLIENT = 3
# Status codes: UNSET (an empty Status, as the SDK exports it) and ERROR.
STATUS_ERROR = 2
_STATUS = {0: b"\x7a\x00", STATUS_ERROR: b"\x7a\x02\x18\x02"}
# Span.flags: the parent's is_remote is known (bit 8), and it is remote (bit 9), as the SDK.
FLAGS_LOCAL_PARENT = _FIXED32(0x100)
FLAGS_REMOTE_PARENT = _FIXED32(0x300)


def encode_span(
    keyvalues: KeyValues,  # tagged 0x4a: Span.attributes = 9
    trace_id: bytes,
    span_id: bytes,
    parent_id: bytes,
    name: str,
    start_ns: int,
    end_ns: int,
    attributes: Mapping[str, Any],
    *,
    trace_state: str = "",
    remote_parent: bool = False,
    events: Iterable[tuple[str, int]] = (),
    status: int = 0,
) -> bytes:
    """One Span message, framed as ScopeSpans.spans (field 2), ready to be joined."""
    name_bytes = name.encode("utf-8", "surrogatepass")
    parts = [b"\x0a\x10", trace_id, b"\x12\x08", span_id]  # trace_id = 1, span_id = 2
    if trace_state:
        parts.append(_field(b"\x1a", trace_state.encode()))  # trace_state = 3
    if parent_id:
        parts += (b"\x22\x08", parent_id)  # parent_span_id = 4
    parts += (
        b"\x2a",  # name = 5
        varint(len(name_bytes)),
        name_bytes,
        b"\x30",  # kind = 6
        _SMALL[KIND_CLIENT],
        b"\x39",  # start_time_unix_nano = 7 (fixed64)
        _FIXED64(start_ns),
        b"\x41",  # end_time_unix_nano = 8
        _FIXED64(end_ns),
    )
    parts += keyvalues.encode(attributes)  # attributes = 9 (the KeyValues' tag)
    for event_name, at_ns in events:  # events = 11: time_unix_nano = 1, name = 2
        parts.append(
            _field(b"\x5a", b"\x09" + _FIXED64(at_ns) + _field(b"\x12", event_name.encode()))
        )
    parts.append(_STATUS[status])  # status = 15
    # flags = 16 (fixed32)
    parts += (b"\x85\x01", FLAGS_REMOTE_PARENT if remote_parent else FLAGS_LOCAL_PARENT)
    span = b"".join(parts)
    return b"\x12" + varint(len(span)) + span


def export_request(resource: bytes, scope: bytes, spans: list[bytes]) -> bytes:
    """ExportTraceServiceRequest: one ResourceSpans, one ScopeSpans, the framed spans."""
    scope_spans = _field(b"\x0a", scope) + b"".join(spans)
    resource_spans = _field(b"\x0a", resource) + _field(b"\x12", scope_spans)
    return _field(b"\x0a", resource_spans)


def encode_resource(attributes: Mapping[str, Any]) -> bytes:
    """A Resource message: its attributes (field 1)."""
    return b"".join(KeyValues(b"\x0a").encode(attributes))


def encode_scope(name: str) -> bytes:
    """An InstrumentationScope message with its name (field 1)."""
    return _field(b"\x0a", name.encode())


# ---- W3C trace context and sampling -------------------------------------------------------

# As the SDK's TraceContextTextMapPropagator reads a traceparent.
_TRACEPARENT = re.compile(
    r"^\s*([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?\s*$"
)
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


def parse_traceparent(value: str) -> tuple[bytes, bytes, int] | None:
    """(trace id, parent span id, trace flags) of a valid traceparent, else None."""
    match = _TRACEPARENT.match(value)
    if match is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    if version == "ff" or (version == "00" and rest):
        return None
    return bytes.fromhex(trace_id), bytes.fromhex(span_id), int(flags, 16)


def parse_tracestate(values: list[str]) -> str:
    """The caller's tracestate as the SDK keeps it (invalid entries make it empty)."""
    from opentelemetry.trace.span import TraceState

    state = TraceState.from_header(values)
    return ",".join(f"{key}={value}" for key, value in state.items())


_SAMPLERS = ("always_on", "always_off", "traceidratio")


class Sampler:
    """OTEL_TRACES_SAMPLER's standard samplers: a root span is sampled by the trace id's
    lower 64 bits against a bound (TraceIdRatioBased's rule; always_on and always_off are
    the bounds 2**64 and 0); a parent-based one follows a caller's sampled flag."""

    def __init__(self, env: Mapping[str, str]) -> None:
        name = (env.get("OTEL_TRACES_SAMPLER") or "parentbased_always_on").strip().lower()
        self.parent_based = name.startswith("parentbased_")
        root = name.removeprefix("parentbased_")
        if root not in _SAMPLERS:
            logger.warning("OTEL_TRACES_SAMPLER=%s is not supported: parentbased_always_on", name)
            self.parent_based, root = True, "always_on"
        rate = 1.0 if root == "always_on" else 0.0
        if root == "traceidratio":
            raw = env.get("OTEL_TRACES_SAMPLER_ARG", "")
            try:
                rate = float(raw) if raw.strip() else 1.0
            except ValueError:
                rate = 1.0
            if not 0.0 <= rate <= 1.0:
                logger.warning("OTEL_TRACES_SAMPLER_ARG=%s is not in [0, 1]: 1.0", raw)
                rate = 1.0
        self.bound = round(rate * 2**64)

    def sampled(self, trace_id: bytes, parent_flags: int | None) -> bool:
        if self.parent_based and parent_flags is not None:
            return bool(parent_flags & 1)
        return int.from_bytes(trace_id[8:], "big") < self.bound


class SpanContext:
    """A request span's identity: its ids, its parent's, whether it is recorded."""

    __slots__ = (
        "parent_id",
        "remote",
        "sampled",
        "span_id",
        "trace_hex",
        "trace_id",
        "trace_state",
    )

    def __init__(
        self,
        trace_id: bytes,
        span_id: bytes,
        parent_id: bytes,
        sampled: bool,
        *,
        remote: bool = False,
        trace_state: str = "",
    ) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_id = parent_id
        self.sampled = sampled
        self.remote = remote
        self.trace_state = trace_state
        self.trace_hex = trace_id.hex()


def new_id(size: int) -> bytes:
    """A random trace (16 bytes) or span (8 bytes) id, never all zeros (invalid)."""
    while True:
        value = random.getrandbits(size * 8)
        if value:
            return value.to_bytes(size, "big")


# ---- export -------------------------------------------------------------------------------

_RETRYABLE = frozenset({429, 502, 503, 504})
_MAX_RETRIES = 6


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        logger.warning("%s=%s is not a number: %s", name, raw, default)
        return default


# The OpenTelemetry libraries' loggers whose lines quote what they were given: an
# OTEL_EXPORTER_OTLP_HEADERS entry they cannot parse (often a collector's API key), and an
# export's error (a requests exception, whose text names the endpoint, query string and all).
_LIBRARY_LOGGERS = (
    "opentelemetry.util.re",
    "opentelemetry.exporter.otlp.proto.http._common",
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.common.http",
    "opentelemetry.sdk.metrics._internal.export",
)
_WITHHELD = "[not shown: it may hold a credential]"


class ValuesWithheld(logging.Filter):
    """Those lines held to the proxy's own rule: an exception by its type, a quoted
    header entry not at all. The line itself (that an export failed) stays."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and args:
            quoting = record.name == "opentelemetry.util.re"
            record.args = tuple(
                type(arg).__name__
                if isinstance(arg, BaseException)
                else _WITHHELD
                if quoting and isinstance(arg, str)
                else arg
                for arg in args
            )
        if record.exc_info and record.exc_info[1] is not None:
            # A traceback's last line is the exception's text: its type alone instead.
            record.msg = f"{record.getMessage()}: {type(record.exc_info[1]).__name__}"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
        return True


def withhold_library_values() -> None:
    """Puts ValuesWithheld on the libraries' loggers, once (before the first is used)."""
    for name in _LIBRARY_LOGGERS:
        library = logging.getLogger(name)
        if not any(isinstance(f, ValuesWithheld) for f in library.filters):
            library.addFilter(ValuesWithheld())


class OtlpHttp:
    """POSTs OTLP protobuf to one signal's endpoint, configured as the SDK's OTLP/HTTP
    exporter is; retries a transient failure with backoff until the timeout is spent."""

    def __init__(self, env: Mapping[str, str], signal: str = "TRACES", path: str = "v1/traces"):
        import requests
        from opentelemetry.util.re import parse_env_headers

        withhold_library_values()

        def setting(name: str) -> str:
            return env.get(f"OTEL_EXPORTER_OTLP_{signal}_{name}") or env.get(
                f"OTEL_EXPORTER_OTLP_{name}", ""
            )

        base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or "http://localhost:4318"
        self.endpoint = env.get(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT") or (
            f"{base.removesuffix('/')}/{path}"
        )
        self.headers = {
            "content-type": "application/x-protobuf",
            "user-agent": "llm-proxy-otlp",
            **parse_env_headers(setting("HEADERS"), liberal=True),
        }
        try:
            self.timeout = float(setting("TIMEOUT") or 10)
        except ValueError:
            self.timeout = 10.0
        compression = setting("COMPRESSION").strip().lower() or "none"
        if compression not in ("gzip", "deflate", "none"):
            logger.warning("Unsupported compression type: %s", compression)
            compression = "none"
        self.compression = compression
        if compression != "none":
            self.headers["content-encoding"] = compression
        self.verify: bool | str = setting("CERTIFICATE") or True
        client_cert, client_key = setting("CLIENT_CERTIFICATE"), setting("CLIENT_KEY")
        self.cert: Any = (client_cert, client_key) if client_cert and client_key else client_cert
        self.session = requests.Session()
        self._connection_error: type[Exception] = requests.exceptions.ConnectionError
        self.closed = threading.Event()

    def send(self, body: bytes, timeout: float | None = None) -> bool:
        if self.compression == "gzip":
            body = gzip.compress(body)
        elif self.compression == "deflate":
            body = zlib.compress(body)
        deadline = time.monotonic() + min(timeout or self.timeout, self.timeout)
        reconnected = False
        for retry in range(_MAX_RETRIES):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                reply = self.session.post(
                    self.endpoint,
                    data=body,
                    headers=self.headers,
                    timeout=remaining,
                    verify=self.verify,
                    cert=self.cert or None,
                )
            except self._connection_error as exc:
                if not reconnected:  # a stale pooled connection: once more at once
                    reconnected = True
                    continue
                logger.warning("trace export failed: %s", type(exc).__name__)
                return False
            except Exception as exc:  # a timeout, a TLS error: not retried
                logger.warning("trace export failed: %s", type(exc).__name__)
                return False
            if 200 <= reply.status_code < 400:
                return True
            if reply.status_code not in _RETRYABLE:
                logger.warning("trace export refused: HTTP %s", reply.status_code)
                return False
            backoff = 2**retry * random.uniform(0.8, 1.2)  # noqa: S311 (jitter)
            if backoff > deadline - time.monotonic() or self.closed.wait(backoff):
                break
        logger.warning("trace export failed: timeout, retries or shutdown")
        return False

    def close(self) -> None:
        self.closed.set()
        self.session.close()


class SpanBatches:
    """Encoded spans queued as bytes, exported in batches by a daemon thread every
    OTEL_BSP_SCHEDULE_DELAY or as soon as a batch is full, and on `flush`."""

    def __init__(
        self, env: Mapping[str, str], exporter: OtlpHttp, resource: bytes, scope: bytes
    ) -> None:
        self.exporter = exporter
        self.resource = resource
        self.scope = scope
        self.delay = _number(env, "OTEL_BSP_SCHEDULE_DELAY", 5000) / 1000
        self.max_queue = int(_number(env, "OTEL_BSP_MAX_QUEUE_SIZE", 2048)) or 2048
        batch = int(_number(env, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512)) or 512
        self.batch = min(batch, self.max_queue)
        self.export_timeout = _number(env, "OTEL_BSP_EXPORT_TIMEOUT", 30000) / 1000
        self._init_state()
        reference = weakref.WeakMethod(self._after_fork)
        os.register_at_fork(after_in_child=lambda: (method := reference()) and method())
        at_exit = weakref.WeakMethod(self.shutdown)
        atexit.register(lambda: (method := at_exit()) and method())

    def _init_state(self) -> None:
        self.queue: list[bytes] = []
        self.export_lock = threading.Lock()
        self.wake = threading.Event()
        self.thread: threading.Thread | None = None
        self.stopped = False
        self.dropped = 0

    def _after_fork(self) -> None:
        self._init_state()  # the parent's thread is not in the child; its spans are not ours

    def add(self, spans: list[bytes]) -> None:
        """A request's spans (list.extend and len are each atomic under the GIL)."""
        queue = self.queue
        if len(queue) + len(spans) > self.max_queue:
            if not self.dropped:
                logger.warning("span queue full (OTEL_BSP_MAX_QUEUE_SIZE): spans dropped")
            self.dropped += len(spans)
            return
        queue.extend(spans)
        if self.thread is None:
            self._start()
        if len(queue) >= self.batch:
            self.wake.set()

    def _start(self) -> None:
        if self.stopped:
            return
        thread = threading.Thread(target=self._run, name="llm-proxy-spans", daemon=True)
        self.thread = thread
        thread.start()

    def _run(self) -> None:
        while not self.stopped:
            self.wake.wait(self.delay)
            self.wake.clear()
            if self.stopped:
                return
            self.export(self.export_timeout)

    def export(self, timeout: float) -> None:
        """Everything queued, batch by batch (one exporter at a time)."""
        deadline = time.monotonic() + timeout
        with self.export_lock:
            queue = self.queue
            while queue:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return  # what is left goes with the next export
                # Taken from the front; `add` only ever appends at the end.
                batch = queue[: self.batch]
                del queue[: len(batch)]
                body = export_request(self.resource, self.scope, batch)
                self.exporter.send(body, remaining)

    def flush(self, timeout: float) -> None:
        self.export(timeout)

    def shutdown(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        self.wake.set()
        thread = self.thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(self.export_timeout)
        self.export(self.export_timeout)
        self.exporter.close()
