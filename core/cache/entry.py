"""A stored reply as a store document, and what of a reply is kept.

Stores keep JSON documents, so the body goes in base64, whole, with the length of each
upstream chunk beside it (a replay writes the same chunks). Of the headers, only those that
describe the body are kept (an allowlist: `KEPT_HEADERS`): everything else an upstream
sends is about one request (x-request-id, request-id, anthropic-ratelimit-*,
openai-processing-ms, date, set-cookie, cf-ray, server timing...) and a hit must not replay
it. The proxy adds current x-proxy-* and rate-limit headers to every reply, hits included.
"""

from __future__ import annotations

import base64
from typing import Any

from core.protocols import Usage
from core.stages import RawHeaders, StoredReply

# 2: headers kept by allowlist (version 1 entries may hold per-request headers).
_VERSION = 2
# What a replay needs to be read as the first reply was; nothing about that request.
KEPT_HEADERS = frozenset(
    {
        b"content-type",
        b"content-length",
        b"content-language",
        b"cache-control",
        b"x-accel-buffering",
    }
)


# What a document takes in process memory beyond its body's base64 text (core/stores/memory.py
# keeps it as a dict): each chunk length an int in a list, each header two strings in a list,
# and the dict itself. Generous: the bound must hold, not a hit's worth of room.
_PER_CHUNK = 40
_PER_HEADER = 160
_PER_ENTRY = 1024


def stored_bytes(doc: dict[str, Any]) -> int:
    """Roughly what `doc` (an `encode` result) takes in memory: about 4/3 of the reply's
    bytes, the body being kept in base64."""
    headers = doc.get("headers") or ()
    return (
        _PER_ENTRY
        + len(doc.get("body") or "")
        + _PER_CHUNK * len(doc.get("chunks") or ())
        + sum(_PER_HEADER + len(name) + len(value) for name, value in headers)
    )


class EntryUnreadable(ValueError):
    """A stored document this version cannot replay (written by another, or damaged)."""


def kept_headers(headers: RawHeaders) -> RawHeaders:
    return [(name, value) for name, value in headers if name.lower() in KEPT_HEADERS]


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
        headers = kept_headers(
            [(n.encode("latin-1"), v.encode("latin-1")) for n, v in doc["headers"]]
        )
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
