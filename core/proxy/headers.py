"""Header hygiene in both directions.

Inbound: the caller's credentials, anything that identifies the caller or the platform in
front of us, and hop-by-hop headers stay here; the provider sees an ordinary API call.
Outbound: hop-by-hop headers and headers that would reveal the key owner's account stay
here; event streams are told not to be buffered by proxies on the way.
"""

from __future__ import annotations

RawHeaders = list[tuple[bytes, bytes]]

# RFC 9110 section 7.6.1: connection-specific fields, never forwarded.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)

# Every slot an SDK may carry the caller's credential in, plus cookies.
CALLER_CREDENTIALS = frozenset(
    {b"authorization", b"x-api-key", b"x-goog-api-key", b"api-key", b"cookie"}
)

# Set again by the HTTP client for the upstream connection.
RECOMPUTED = frozenset({b"host", b"content-length", b"expect"})

# Headers that identify the caller, the browser or the platform in front of the proxy.
CLIENT_IDENTIFYING = frozenset(
    {
        b"forwarded",
        b"via",
        b"x-real-ip",
        b"x-client-ip",
        b"true-client-ip",
        b"client-ip",
        b"x-cluster-client-ip",
        b"fastly-client-ip",
        b"x-original-forwarded-for",
        b"x-cloud-trace-context",
        b"traceparent",
        b"tracestate",
        b"x-request-id",
        b"x-correlation-id",
        # Platform ids (functions-framework adds one to every request).
        b"function-execution-id",
        # Browser context: an Origin makes some providers answer as to a browser.
        b"origin",
        b"referer",
    }
)
CLIENT_IDENTIFYING_PREFIXES = (
    b"x-forwarded-",
    b"cf-",
    b"x-amzn-",
    b"x-amz-",
    b"x-vercel-",
    b"x-appengine-",
    b"x-fc-",
    b"x-scf-",
    b"x-tcb-",
    b"x-envoy-",
    b"sec-",
    b"x-proxy-",
)

# Which organisation or project a multi-organisation key bills is the deployer's choice,
# not the caller's.
ACCOUNT_SELECTORS = frozenset({b"openai-organization", b"openai-project"})

_DROP_INBOUND = (
    HOP_BY_HOP | CALLER_CREDENTIALS | RECOMPUTED | CLIENT_IDENTIFYING | ACCOUNT_SELECTORS
)

# Outbound: cookies belong to the provider's domain, organisation/project names identify
# whose key this is, and the server in front of us sets its own Date.
_DROP_OUTBOUND = HOP_BY_HOP | frozenset(
    {
        b"set-cookie",
        b"openai-organization",
        b"openai-project",
        b"anthropic-organization-id",
        b"alt-svc",
        b"server",
        b"date",
    }
)

EVENT_STREAM_HEADERS: RawHeaders = [(b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]


def _connection_tokens(headers: RawHeaders) -> frozenset[bytes]:
    """Names listed in Connection are hop-by-hop for this message too (RFC 9110 7.6.1)."""
    tokens: set[bytes] = set()
    for name, value in headers:
        if name == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b","))
    return frozenset(tokens)


def upstream_request_headers(
    headers: RawHeaders, key_header: tuple[bytes, bytes] | None
) -> RawHeaders:
    """The caller's headers made safe to send upstream, with the real key set (last, so a
    retry on the provider's next key replaces just that entry). None: a keyless local
    server (Ollama) gets no key header."""
    extra_drop = _connection_tokens(headers)
    kept = [
        (name, value)
        for name, value in headers
        if name not in _DROP_INBOUND
        and name not in extra_drop
        and not name.startswith(CLIENT_IDENTIFYING_PREFIXES)
    ]
    if key_header is not None:
        kept.append(key_header)
    return kept


def client_response_headers(headers: RawHeaders) -> tuple[RawHeaders, int | None]:
    """Upstream response headers fit for the caller, and the body's length if declared."""
    extra_drop = _connection_tokens(headers)
    kept: RawHeaders = []
    is_event_stream = False
    content_length: int | None = None
    for name, value in headers:
        lowered = name.lower()
        if lowered in _DROP_OUTBOUND or lowered in extra_drop:
            continue
        if lowered == b"content-length" and value.isdigit():
            content_length = int(value)
        elif lowered == b"content-type" and value.lower().startswith(b"text/event-stream"):
            is_event_stream = True
        elif is_event_stream and lowered in (b"cache-control", b"x-accel-buffering"):
            continue
        kept.append((lowered, value))
    if is_event_stream:
        kept = [(n, v) for n, v in kept if n not in (b"cache-control", b"x-accel-buffering")]
        kept.extend(EVENT_STREAM_HEADERS)
    return kept, content_length


def has_header_injection(headers: RawHeaders) -> bool:
    """True if a header value carries a line break or NUL (a server should refuse them)."""
    return any(b"\r" in v or b"\n" in v or b"\x00" in v for _, v in headers)
