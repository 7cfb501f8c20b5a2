"""Test identity provider: key pairs made in the test, a JWKS served on loopback, tokens
minted like Cognito / Auth0 / Firebase would, and hand-made forgeries."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from core.types import Receive, Scope, Send
from tests.support.servers import RunningServer, serve_in_thread

ISSUER = "https://issuer.example.test/pool-1"
AUDIENCE = "app-client-123"


@dataclass
class KeyPair:
    kid: str
    alg: str
    private: Any

    @property
    def public(self) -> Any:
        return self.private.public_key()

    def jwk(self) -> dict[str, Any]:
        maker = RSAAlgorithm if self.alg.startswith(("RS", "PS")) else ECAlgorithm
        document: dict[str, Any] = maker.to_jwk(self.public, as_dict=True)
        document.update(kid=self.kid, use="sig", alg=self.alg)
        return document

    def public_pem(self) -> bytes:
        return self.public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def rsa_key(kid: str) -> KeyPair:
    return KeyPair(kid, "RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048))


def ec_key(kid: str) -> KeyPair:
    return KeyPair(kid, "ES256", ec.generate_private_key(ec.SECP256R1()))


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "user-alice",
        "iat": now,
        "exp": now + 600,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def mint(key: KeyPair, **overrides: Any) -> str:
    return jwt.encode(claims(**overrides), key.private, algorithm=key.alg, headers={"kid": key.kid})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], payload: dict[str, Any], secret: bytes | None) -> str:
    """A token made by hand: `secret` None gives an empty signature (alg none)."""
    signing_input = _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(payload).encode())
    signature = (
        b"" if secret is None else hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    )
    return signing_input + "." + _b64(signature)


@dataclass
class JWKSServer:
    """What the identity provider publishes; tests swap keys to play a rotation."""

    keys: list[dict[str, Any]] = field(default_factory=list)
    fetches: int = 0
    status: int = 200

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        self.fetches += 1
        body = json.dumps({"keys": self.keys}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": self.status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})


@contextlib.contextmanager
def jwks_served(server: JWKSServer) -> Iterator[RunningServer]:
    with serve_in_thread(server) as running:
        yield running
