"""`rediss://` as a hosted Redis serves it: TLS with a CA the client checks, and a password.
A real redis-server with TLS on loopback, certificates made here."""

from __future__ import annotations

import datetime
import ipaddress
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from core.stores import open_store
from tests.servers import free_port
from tests.support.store_backends import REDIS_SERVER

PASSWORD = "mock-redis-password-not-real"


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1; returns (ca, cert, key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def build(
        subject: str,
        issuer: x509.Name | None,
        issuer_key: ec.EllipticCurvePrivateKey | None,
        ca: bool,
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
        builder = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(issuer or name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
        return builder.sign(issuer_key or key, hashes.SHA256()), key

    ca_cert, ca_key = build("llm-proxy test CA", None, None, ca=True)
    cert, key = build("127.0.0.1", ca_cert.subject, ca_key, ca=False)
    pem = serialization.Encoding.PEM
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca_cert.public_bytes(pem))
    paths[1].write_bytes(cert.public_bytes(pem))
    paths[2].write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


def test_store_over_tls_with_password(tmp_path: Path) -> None:
    ca, cert, key = make_certificates(tmp_path)
    port = free_port()
    proc = subprocess.Popen(
        [
            REDIS_SERVER,
            "--bind",
            "127.0.0.1",
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--tls-cert-file",
            str(cert),
            "--tls-key-file",
            str(key),
            "--tls-ca-cert-file",
            str(ca),
            "--tls-auth-clients",
            "no",
            "--requirepass",
            PASSWORD,
            "--save",
            "",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"rediss://:{PASSWORD}@127.0.0.1:{port}/0?ssl_ca_certs={quote(str(ca))}"
        store = open_store(url)
        deadline = time.monotonic() + 10
        while True:
            try:
                store.put("token:tls", {"label": "over-tls"})
                break
            except Exception:
                if proc.poll() is not None or time.monotonic() > deadline:
                    out = proc.stdout.read().decode() if proc.stdout else ""
                    raise RuntimeError(
                        f"redis-server with TLS did not start: {out[-1000:]}"
                    ) from None
                time.sleep(0.05)
        item = store.get("token:tls")
        assert item is not None and item.doc == {"label": "over-tls"}

        # The client really checks the server: a URL without the CA is refused.
        import redis

        with pytest.raises(redis.ConnectionError):
            open_store(f"rediss://:{PASSWORD}@127.0.0.1:{port}/0").get("token:tls")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
