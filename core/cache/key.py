"""Which requests the response cache takes, and the key a reply is kept under.

Only a POST with a JSON object body to a metered route (chat, completions, responses,
embeddings, messages, generateContent...) is cached: those are the calls that spend. A
request that asks the model to sample (temperature absent or above 0) may get a different
answer each time, so it is cached only with CACHE_NONDETERMINISTIC=true; a route that does
not generate (embeddings) has one answer.

The key is the SHA-256 of: the provider route, the method, the upstream path and query
(credential removed), the body as canonical JSON (keys sorted, no whitespace), whether it
streams, the request headers that change the reply's shape (API version and betas), and
the scope: the caller's identity (CACHE_SCOPE=caller) or `shared`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.proxy.request import ProxyRequest

KEY_PREFIX = "cache:"
# Bumped when the key material or the stored document changes shape.
_VERSION = 1
# Request headers that change what the upstream answers, so belong in the key.
_SHAPING_HEADERS = frozenset({b"anthropic-version", b"anthropic-beta", b"openai-beta"})
# Canonical JSON of a larger body is made on a worker thread (as request.py parses it).
_OFF_LOOP = 256 * 1024


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
        (name.decode("latin-1"), value.decode("latin-1"))
        for name, value in request.headers
        if name in _SHAPING_HEADERS
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
