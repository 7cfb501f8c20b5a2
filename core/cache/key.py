"""Which requests the response cache takes, and the key a reply is kept under.

Only a POST with a JSON object body to a metered route (chat, completions, responses,
embeddings, messages, generateContent...) is cached: those are the calls that spend. A
request that asks the model to sample (temperature absent or above 0) may get a different
answer each time, so it is cached only with CACHE_NONDETERMINISTIC=true; a route that does
not generate (embeddings) has one answer.

The key is the SHA-256 of: the provider route, the method, the upstream path and the whole
query (credential removed: `alt=sse`, `$fields`... all count), the body as canonical JSON
(keys sorted, no whitespace), whether it streams, every request header the proxy forwards
upstream (core/headers.py) except those known not to shape the reply
(`NOT_SHAPING`), where the proxy rewrites the reply to name itself (Gemini) the address the
caller reached it at, and the scope: the caller's identity (CACHE_SCOPE=caller) or `shared`.

Headers are counted by exclusion, not inclusion: a header the proxy forwards may change
the reply (anthropic-version, anthropic-beta, openai-beta, Accept, X-Goog-FieldMask, and
whatever a provider adds next), so it is in the key unless listed here as one that does not.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import TYPE_CHECKING, Any

from core.headers import public_origin, upstream_request_headers

if TYPE_CHECKING:
    from core.request import ProxyRequest

KEY_PREFIX = "cache:"
# Bumped when the key material or the stored document changes shape (3: the proxy's
# address, for replies rewritten to name it).
_VERSION = 3
# Forwarded request headers that do not change what the upstream answers: client
# telemetry, the body's type (it is parsed), retry bookkeeping, and the coding (the proxy
# asks for identity). Every other forwarded header is part of the key.
NOT_SHAPING = frozenset(
    {
        b"user-agent",
        b"content-type",
        b"accept-encoding",
        b"cache-control",
        b"pragma",
        b"priority",
        b"idempotency-key",
        b"x-goog-api-client",
        b"anthropic-dangerous-direct-browser-access",
    }
)
_NOT_SHAPING_PREFIXES = (b"x-stainless-",)
# Canonical JSON of a larger body is made on a worker thread (as request.py parses it).
_OFF_LOOP = 256 * 1024
# The longest max-age read (RFC 9111 1.2.2): any larger one says the same.
_LONGEST_AGE = 2**31


def cache_control(headers: list[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """The directives of every Cache-Control header, lower case, arguments dropped."""
    directives: set[bytes] = set()
    for name, value in headers:
        if name == b"cache-control":
            for part in value.split(b","):
                directive = part.split(b"=", 1)[0].strip().lower()
                if directive:
                    directives.add(directive)
    return frozenset(directives)


def max_age(headers: list[tuple[bytes, bytes]]) -> int | None:
    """The oldest stored reply a request accepts, in seconds: its Cache-Control `max-age`
    (the smallest, if named more than once), 0 for `no-cache` or, with no Cache-Control
    at all, HTTP/1.0's `Pragma: no-cache`; None when it says nothing. A browser's
    `fetch(url, {cache: "no-cache"})` sends `max-age=0`. A value that is no whole number
    asks for a fresh reply, as RFC 9111 has a cache treat it; one past 2**31 is read as
    2**31 (RFC 9111 1.2.2), never converted whole (Python refuses an integer of more than
    4300 digits, and the request was a 500)."""
    ages: list[int] = []
    cache_control_seen = pragma = False
    for name, value in headers:
        if name == b"cache-control":
            cache_control_seen = True
            for part in value.split(b","):
                directive, _, argument = part.partition(b"=")
                directive = directive.strip().lower()
                if directive == b"no-cache":
                    ages.append(0)
                elif directive == b"max-age":
                    ages.append(_seconds(argument))
        elif name == b"pragma" and b"no-cache" in value.lower():
            pragma = True
    if not cache_control_seen and pragma:
        return 0
    return min(ages) if ages else None


def _seconds(argument: bytes) -> int:
    """A `max-age` argument in seconds: 0 when it is no whole number."""
    text = argument.strip().strip(b'"')
    if not text.isdigit():
        return 0
    digits = text.lstrip(b"0")
    return _LONGEST_AGE if len(digits) > 10 else min(int(digits or b"0"), _LONGEST_AGE)


async def cacheable_document(request: ProxyRequest) -> dict[str, Any] | None:
    """The JSON body of a request the cache may take, or None."""
    if request.method != "POST" or request.route.kind != "metered" or not request.is_json:
        return None
    document = await request.document()
    return document if isinstance(document, dict) else None


def deterministic(request: ProxyRequest, document: dict[str, Any]) -> bool:
    """Whether the same request should get the same answer: temperature 0, or a route that
    does not sample at all."""
    if not request.route.generates:
        return True
    temperature = request.wire.temperature(document)
    return (
        isinstance(temperature, int | float)
        and not isinstance(temperature, bool)
        and temperature == 0
    )


def _material(request: ProxyRequest, document: dict[str, Any], stream: bool, scope: str) -> bytes:
    shaping = sorted(
        (name.decode("latin-1").lower(), value.decode("latin-1").strip())
        for name, value in upstream_request_headers(request.headers, request.credential)
        if name.lower() not in NOT_SHAPING and not name.lower().startswith(_NOT_SHAPING_PREFIXES)
    )
    material = {
        "v": _VERSION,
        "provider": request.provider.name,
        "method": request.method,
        "path": request.remainder,
        "query": request.query.decode("latin-1"),
        "body": document,
        "stream": stream,
        "headers": shaping,
        # A Gemini reply names the proxy by the Host (and X-Forwarded-Proto) this caller sent
        # (core/proxy/uploads.py), which the upstream never sees: a reply rewritten for one
        # address must not be replayed to a caller who reached the proxy at another.
        "origin": public_origin(request.scope) if request.provider.resumable_uploads else None,
        "scope": scope,
    }
    return json.dumps(material, sort_keys=True, separators=(",", ":")).encode()


async def cache_key(request: ProxyRequest, document: dict[str, Any], scope: str) -> str:
    """The store key of this request's reply for `scope` (a caller identity or `shared`)."""
    stream = await request.is_stream()
    if len(request.body) > _OFF_LOOP:
        raw = await asyncio.to_thread(_material, request, document, stream, scope)
    else:
        raw = _material(request, document, stream, scope)
    return KEY_PREFIX + hashlib.sha256(raw).hexdigest()
