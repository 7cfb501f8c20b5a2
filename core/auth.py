"""Who is calling: find the caller's credential in any SDK's slot and check it.

Each SDK already puts its key somewhere (OpenAI: `Authorization: Bearer`, Anthropic:
`x-api-key`, Gemini: `x-goog-api-key` or `?key=`, Azure: `api-key`); the caller keeps that
habit and puts its proxy credential there instead. All slots go through one check.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import unquote_to_bytes

from core.errors import Unauthorized
from core.headers import RawHeaders

_HEADER_SLOTS = (b"authorization", b"x-api-key", b"x-goog-api-key", b"api-key")


def split_key_param(query: bytes) -> tuple[bytes | None, bytes]:
    """Take Gemini's `key=` out of a raw query string; the rest stays byte for byte."""
    if b"key=" not in query:
        return None, query
    found: bytes | None = None
    kept = []
    for part in query.split(b"&"):
        if part.startswith(b"key="):
            found = unquote_to_bytes(part[4:])
        else:
            kept.append(part)
    return found, b"&".join(kept)


def find_credential(headers: RawHeaders, key_param: bytes | None) -> bytes | None:
    """The caller's credential from the first slot that has one, or None if no slot does."""
    for name, value in headers:
        if name in _HEADER_SLOTS:
            if name == b"authorization":
                scheme, _, rest = value.partition(b" ")
                if scheme.lower() != b"bearer":
                    raise Unauthorized(
                        "The Authorization header must use the Bearer scheme: "
                        "'Authorization: Bearer <your proxy token>'."
                    )
                value = rest
            return value.strip()
    return key_param.strip() if key_param is not None else None


class TokenCheck:
    """Constant-time membership test against SHA-256 digests of the allowed tokens."""

    def __init__(self, token_hashes: tuple[bytes, ...]) -> None:
        self._hashes = token_hashes

    def verify(self, credential: bytes | None) -> None:
        """Return if the credential is allowed, raise Unauthorized with a useful reason if not."""
        if credential is None:
            raise Unauthorized(
                "No proxy token: send it as 'Authorization: Bearer <token>' "
                "(or in x-api-key, x-goog-api-key or ?key=)."
            )
        if not credential:
            raise Unauthorized("The proxy token is blank.")
        digest = hashlib.sha256(credential).digest()
        # Compare against every entry, so timing says nothing about which one matched.
        matched = False
        for allowed in self._hashes:
            matched |= hmac.compare_digest(digest, allowed)
        if not matched:
            raise Unauthorized("The proxy token is not valid.")
