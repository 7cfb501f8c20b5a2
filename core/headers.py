"""Header hygiene in both directions.

Inbound: the caller's credentials, anything that identifies the caller or the platform in
front of us, and hop-by-hop headers stay here; the provider sees an ordinary API call.
Outbound: hop-by-hop headers and headers that would reveal the key owner's account stay
here; event streams are told not to be buffered by proxies on the way.
"""

from __future__ import annotations

import hmac
import re
from typing import TYPE_CHECKING, Protocol
from urllib.parse import unquote_to_bytes

from core.digest import sha256
from core.errors import Unauthorized
from core.escapes import decodings

if TYPE_CHECKING:
    from core.types import Scope

RawHeaders = list[tuple[bytes, bytes]]


class HeaderScrubber(Protocol):
    """What the reply's headers need of the scrubber (core/proxy/scrub.py): keys redacted."""

    def headers(self, headers: RawHeaders) -> RawHeaders: ...


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
        # W3C baggage is the caller's key-value context (user ids, tenants): never upstream.
        b"baggage",
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
        # Ours replace them (NOT_A_PAGE).
        b"content-security-policy",
        b"x-content-type-options",
    }
)

# Ours to set: CORS (core/proxy/cors.py) and the request id (core/proxy/access_log.py).
_DROP_OUTBOUND_PREFIXES = (b"access-control-", b"x-proxy-")

EVENT_STREAM_HEADERS: RawHeaders = [(b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]

# Every relayed reply is data for an SDK, never a page, yet it shares its origin with the
# admin dashboard (/admin). A reply a browser would render (an upstream's text/html, a
# caller's uploaded file read back) runs no script and gets an origin of its own, so it
# cannot reach the dashboard's session; and no type is guessed from the bytes. Headers a
# fetch() or an SDK never acts on.
NOT_A_PAGE: RawHeaders = [
    (b"content-security-policy", b"sandbox"),
    (b"x-content-type-options", b"nosniff"),
]


def _connection_tokens(headers: RawHeaders) -> frozenset[bytes]:
    """Names listed in Connection are hop-by-hop for this message too (RFC 9110 7.6.1)."""
    tokens: set[bytes] = set()
    for name, value in headers:
        # An upstream's names keep the case they were sent in (httpx's and aiohttp's raw
        # headers); the caller's arrive lower-cased from the ASGI server. The length
        # first: most names are not 10 bytes and need no lower().
        if len(name) == 10 and name.lower() == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b","))
    return frozenset(tokens)


def upstream_request_headers(headers: RawHeaders, credential: bytes | None = None) -> RawHeaders:
    """The caller's headers made safe to send upstream; the forward stage adds the key.

    `credential`, the one the caller presented (ProxyRequest.credential): a header that
    carries it outside the slots above (`X-Auth-Token: <token>`, a client's own header)
    is dropped too, so the caller's credential reaches no upstream whichever header it
    rides in.

    Every reply is read by the proxy: scrubbed of its keys (core/proxy/scrub.py), and metered
    or cached when those are on. So the upstream is asked for an uncompressed reply
    (Accept-Encoding: identity) whatever the caller accepts: cheaper than inflating a copy,
    and the caller gets the same content."""
    extra_drop = _connection_tokens(headers)
    kept = [
        (name, value)
        for name, value in headers
        if name not in _DROP_INBOUND
        and name not in extra_drop
        and name != b"accept-encoding"
        and not name.startswith(CLIENT_IDENTIFYING_PREFIXES)
    ]
    if credential is not None and len(credential) >= MIN_CREDENTIAL_LENGTH:
        # holds_credential's test, inline: every header of every request.
        kept = [(name, value) for name, value in kept if value.replace(credential, b"") is value]
    kept.append((b"accept-encoding", b"identity"))
    return kept


def holds_credential(value: bytes, credential: bytes | None) -> bool:
    """Whether a value sent on (a header's, a WebSocket subprotocol's) carries the caller's
    credential, which then goes no further. `value.replace(credential, b"") is value`: the
    credential is not in it, at half a find's cost, on every request (core/byte_tests.py)."""
    if credential is None or len(credential) < MIN_CREDENTIAL_LENGTH:
        return False
    return value.replace(credential, b"") is not value


# Bytes uvicorn refuses in a header value it sends (a RuntimeError in its `send`; h11 a
# LocalProtocolError), which both upstream clients accept in a reply's headers.
_UNSENDABLE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


def client_response_headers(
    headers: RawHeaders, scrubber: HeaderScrubber | None = None
) -> tuple[RawHeaders, int | None]:
    """Upstream response headers fit for the caller, and the body's length if declared.
    CORS is the proxy's alone to decide: an upstream's Access-Control-* never pass (an
    upstream `*` would open every reply to any page, and a second ACAO beside ours makes
    browsers refuse the reply). Any of the proxy's keys in a value is redacted."""
    extra_drop = _connection_tokens(headers)
    kept: RawHeaders = []
    is_event_stream = False
    content_length: int | None = None
    for name, value in headers:
        lowered = name.lower()
        if (
            lowered in _DROP_OUTBOUND
            or lowered in extra_drop
            or lowered.startswith(_DROP_OUTBOUND_PREFIXES)
        ):
            continue
        if lowered == b"content-length":
            if not value.isdigit() or len(value) > 18:
                # No length uvicorn could count (it would fail the head; past 18 digits no
                # body is that long, and past 4,300 `int` refuses it): the reply goes out
                # chunked. So a Content-Length kept is one `content_length` reports.
                continue
            content_length = int(value)
        elif lowered == b"content-type" and value.lower().startswith(b"text/event-stream"):
            is_event_stream = True
        elif is_event_stream and lowered in (b"cache-control", b"x-accel-buffering"):
            continue
        if _UNSENDABLE.search(value) is not None:
            # Sent as it came, the reply the upstream answered (and billed) would be lost:
            # the server refuses the head, and the caller's connection drops.
            value = _UNSENDABLE.sub(b"?", value)
        kept.append((lowered, value))
    if is_event_stream:
        kept = [(n, v) for n, v in kept if n not in (b"cache-control", b"x-accel-buffering")]
        kept.extend(EVENT_STREAM_HEADERS)
    kept.extend(NOT_A_PAGE)
    if scrubber:
        kept = scrubber.headers(kept)
    return kept, content_length


def content_coding(headers: RawHeaders) -> bytes:
    """A reply's content coding, read from every Content-Encoding line: a list split over
    two lines is one list (RFC 9110, 5.3), as the caller's client reads it. `identity` and
    empty entries add no coding. b"" for none, one coding (`gzip`) as it is, and a stacked
    list whole (`gzip, gzip`), which no reader of the body can inflate, so each of them
    refuses it. The one place a reply's coding is read (the scrubber, the meter, stream
    recovery): reading one line of two let a body reach the caller unscrubbed."""
    # The length first: on every reply, most names are not 16 bytes and need no lower().
    codings = [
        part.strip().lower()
        for name, value in headers
        if len(name) == 16 and name.lower() == b"content-encoding"
        for part in value.split(b",")
    ]
    if not codings:
        return b""
    return b", ".join(c for c in codings if c not in (b"", b"identity"))


# ---- where each SDK puts its key: the caller's credential rides in the same slot ----

_HEADER_SLOTS = (b"authorization", b"x-api-key", b"x-goog-api-key", b"api-key")


def _is_key_name(name: bytes) -> bool:
    # `KEY=` and `%6Bey=` are the same credential to a lenient upstream, and `$key=` is
    # Google's system-parameter spelling of it: none goes there.
    if b"%" in name:
        name = unquote_to_bytes(name)
    return name.lower().removeprefix(b"$") == b"key"


def split_key_param(query: bytes) -> tuple[bytes | None, bytes]:
    """Take Gemini's `key=` out of a raw query string; the rest stays byte for byte. Sent
    more than once, the last value (split_key_params gives them all)."""
    found, kept = split_key_params(query)
    return (found[-1] if found else None), kept


def split_key_params(query: bytes) -> tuple[list[bytes], bytes]:
    """Every `key=` value of a raw query string, in order, and the query without them."""
    # `find`, not `in`: a bytes `in` costs an exception raised and dropped, every request.
    if not query or (query.lower().find(b"ey=") < 0 and query.find(b"%") < 0):
        return [], query
    found: list[bytes] = []
    kept = []
    for part in query.split(b"&"):
        name, equals, value = part.partition(b"=")
        if equals and _is_key_name(name):
            found.append(unquote_to_bytes(value))
        else:
            kept.append(part)
    return found, b"&".join(kept)


# No credential the proxy accepts is shorter (PROXY_ACCESS_TOKEN's minimum, core/config.py;
# stored tokens and JWTs are longer): a shorter one is refused at identify, and searching
# for it in a request's other parts could match ordinary words.
MIN_CREDENTIAL_LENGTH = 16


def credential_in_url(credential: bytes | None, path: str, query: bytes) -> bool:
    """Whether the caller's credential also sits in the request's path or query (the `key=`
    parameter taken out): `;key=<token>`, `%3Fkey%3D<token>`, `?api_key=<token>`. A URL
    cannot be stripped of it without changing what it names, and the whole URL goes to the
    upstream and the path to the access log."""
    if credential is None or len(credential) < MIN_CREDENTIAL_LENGTH:
        return False
    for part in (path.encode("latin-1", "replace"), query):
        # Every decoding, as the route checks read a path (core/escapes.py): a router that
        # decodes `%252D` twice reads `-`. On every request: each test is
        # `x.replace(needle, b"") is x` (the needle is not in x), half a find's cost
        # (core/byte_tests.py), and an unescaped URL has one decoding.
        if part.replace(credential, b"") is not part:
            return True
        if part.replace(b"%", b"") is not part:  # escaped: every decoding, the first done
            for spelling in decodings(part):
                if spelling.replace(credential, b"") is not spelling:
                    return True
    return False


# What a credential could be glued to in a URL or a header value: a segment, a path
# parameter, a value, a scheme (`Bearer <token>`), quotes.
_PIECES = re.compile(rb"[\s/;=:,&?\"']")


def holds_digest(digest: bytes, data: bytes) -> bool:
    """Whether a piece of `data` (a URL's path or query, a header's value; in every
    decoding, as credential_in_url reads them) is the credential whose SHA-256 is `digest`:
    the tests of credential_in_url and upstream_request_headers for a request that stands
    for a credential it does not carry (an upload leg, authorized by the token that
    started its upload)."""
    for spelling in decodings(data):
        for piece in set(_PIECES.split(spelling)):
            if len(piece) >= MIN_CREDENTIAL_LENGTH and hmac.compare_digest(sha256(piece), digest):
                return True
    return False


def digest_in_url(digest: bytes, path: str, query: bytes) -> bool:
    """credential_in_url, for the credential whose SHA-256 is `digest` (holds_digest)."""
    return holds_digest(digest, path.encode("latin-1", "replace")) or holds_digest(digest, query)


def find_credential(headers: RawHeaders, key_param: bytes | None) -> bytes | None:
    """The caller's credential from the first slot that has one, or None if no slot does.
    A slot header sent twice is refused: a Function URL or an HTTP API joins the copies
    into one value no token matches, so a server must not pick one of them either."""
    found: bytes | None = None
    slot = b""
    for name, value in headers:
        if name in _HEADER_SLOTS:
            if found is not None:
                if name == slot:
                    raise Unauthorized(f"The {name.decode()} header is sent twice; send it once.")
                continue
            if name == b"authorization":
                scheme, _, rest = value.partition(b" ")
                if scheme.lower() != b"bearer":
                    raise Unauthorized(
                        "The Authorization header must use the Bearer scheme: "
                        "'Authorization: Bearer <your proxy token>'."
                    )
                value = rest
            found, slot = value.strip(), name
    if found is not None:
        return found
    return key_param.strip() if key_param is not None else None


# A plain host[:port]: the only Host a reply may name the proxy by.
_HOST = re.compile(r"(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")


def public_origin(scope: Scope) -> str | None:
    """scheme://host the caller reached the proxy at, as the platform hands it to us. Host
    (and X-Forwarded-Proto) are the caller's to choose, but they only shape the URL handed
    back to that same caller (a cached reply that names it is kept under it too,
    core/cache/key.py); anything that is not a plain host[:port] is not used."""
    host = proto = None
    for name, value in scope["headers"]:
        if name == b"host" and host is None:
            host = value.decode("latin-1")
        elif name == b"x-forwarded-proto" and proto is None:
            proto = value.decode("latin-1").split(",", 1)[0].strip().lower()
    if host is None or not _HOST.fullmatch(host):
        return None
    scheme = proto if proto in ("http", "https") else scope.get("scheme", "http")
    if scheme not in ("http", "https"):
        return None
    return f"{scheme}://{host}{scope.get('root_path', '')}"
