"""One digest for every secret and identity the proxy keeps by hash: SHA-256.

Tokens are stored and compared by digest (never in plaintext), and identities (a JWT `sub`,
a client IP) are hashed into store keys, where any character or length is safe."""

from __future__ import annotations

import hashlib


def sha256(data: str | bytes) -> bytes:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).digest()


def sha256_hex(data: str | bytes, length: int = 64) -> str:
    return sha256(data).hex()[:length]
