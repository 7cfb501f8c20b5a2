"""A stored reply as a store document, and what of a reply is kept.

Stores keep JSON documents, so the body goes in base64, whole, with the length of each
upstream chunk beside it (a replay writes the same chunks). Headers are kept as the caller
got them, minus those made fresh for each request: the date, the request id, the cache and
rate-limit headers (the proxy adds current ones to every reply, hits included).
"""

from __future__ import annotations

import base64
from typing import Any

from core.protocols import Usage
from core.proxy.stages import RawHeaders, StoredReply

_VERSION = 1
_PER_REQUEST = frozenset({b"date", b"retry-after"})
_PER_REQUEST_PREFIXES = (b"x-ratelimit-", b"x-proxy-")


class EntryUnreadable(ValueError):
    """A stored document this version cannot replay (written by another, or damaged)."""


def kept_headers(headers: RawHeaders) -> RawHeaders:
    return [
        (name, value)
        for name, value in headers
        if name not in _PER_REQUEST and not name.startswith(_PER_REQUEST_PREFIXES)
    ]


def encode(reply: StoredReply) -> dict[str, Any]:
    usage = reply.usage
    return {
        "v": _VERSION,
        "status": reply.status,
        "headers": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in reply.headers],
        "body": base64.b64encode(b"".join(reply.chunks)).decode("ascii"),
        "chunks": [len(chunk) for chunk in reply.chunks],
        "usage": None
        if usage is None
        else [usage.input_tokens, usage.output_tokens, usage.cached_input_tokens],
    }


def decode(doc: dict[str, Any]) -> StoredReply:
    try:
        if doc.get("v") != _VERSION:
            raise EntryUnreadable("another version")
        body = base64.b64decode(doc["body"], validate=True)
        chunks = []
        at = 0
        for size in doc["chunks"]:
            chunks.append(body[at : at + size])
            at += size
        if at != len(body):
            raise EntryUnreadable("chunk lengths do not add up")
        headers = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in doc["headers"]]
        for name, value in headers:
            if name == b"content-length" and value != str(len(body)).encode():
                raise EntryUnreadable("the body is not the length its header says")
        usage = doc.get("usage")
        return StoredReply(
            status=int(doc["status"]),
            headers=headers,
            chunks=chunks,
            usage=Usage(*usage) if usage else None,
        )
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, EntryUnreadable):
            raise
        raise EntryUnreadable(type(exc).__name__) from None
