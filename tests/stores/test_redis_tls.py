"""`rediss://` as a hosted Redis serves it: TLS with a CA the client checks, and a password.
A real redis-server with TLS on loopback, certificates made in the test."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from core.stores import open_store
from tests.support.certificates import make_certificates
from tests.support.servers import free_port
from tests.support.store_backends import REDIS_SERVER

PASSWORD = "mock-redis-password-not-real"


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
