"""What browser-facing checks cost (issue 6): throughput with the guard off, with rate
limits (memory and SQLite stores), with token metering and with the request policy, all
measured in one run beside the plain proxy; and JWT verification time in process."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator

from bench.harness import median, mock_upstream, proxy_server, row, wrk

# Limits high enough never to refuse during the run: the figure is the cost of counting.
NEVER = "1000000000"
CONFIGS: list[tuple[str, dict[str, str]]] = [
    ("no guard (plain proxy)", {}),
    ("rate limit, memory store", {"RATE_LIMIT_REQUESTS": NEVER}),
    (
        "rate + token limits (metering), memory",
        {"RATE_LIMIT_REQUESTS": NEVER, "RATE_LIMIT_TOKENS": NEVER},
    ),
    ("rate limit, SQLite store", {"RATE_LIMIT_REQUESTS": NEVER, "LIMIT_STORE": "sqlite"}),
    (
        # (the benchmark body names no max_tokens, so MAX_TOKENS_CAP stays off)
        "request policy (model allowlist, max messages)",
        {"ALLOWED_MODELS": "mock-*", "MAX_MESSAGES": "50"},
    ),
]


@contextlib.contextmanager
def _sqlite_path(extra: dict[str, str]) -> Iterator[dict[str, str]]:
    import tempfile

    if extra.get("LIMIT_STORE") != "sqlite":
        yield extra
        return
    with tempfile.TemporaryDirectory() as tmp:
        yield {**extra, "LIMIT_STORE": f"sqlite:///{tmp}/limits.db"}


def throughput(rounds: int = 3, seconds: float = 3) -> list[str]:
    lines = []
    samples: dict[str, list[float]] = {name: [] for name, _ in CONFIGS}
    with mock_upstream() as upstream, contextlib.ExitStack() as stack:
        urls = {}
        for name, extra in CONFIGS:
            env = stack.enter_context(_sqlite_path(extra))
            proxy, _ = stack.enter_context(proxy_server(upstream, **env))
            urls[name] = f"{proxy}/v1/chat/completions"
            wrk(urls[name], 32, 1)  # warm the pool
        # Round-robin: drift in machine load hits every configuration alike.
        for _ in range(rounds):
            for name, _ in CONFIGS:
                samples[name].append(wrk(urls[name], 32, seconds)["rps"])
    base = median(samples[CONFIGS[0][0]])
    for name, _ in CONFIGS:
        rps = median(samples[name])
        lines.append(row(f"32 conns: {name}", f"{rps:,.0f} req/s ({100 * rps / base:.0f} %)"))
    return lines


def jwt_verify(samples: int = 2000) -> list[str]:
    """RS256 / ES256 verification with a warm key cache (no network after the first)."""
    import jwt
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from jwt.algorithms import ECAlgorithm, RSAAlgorithm

    from core.access.jwt_auth import JWKSCache, JWTVerifier

    lines = []
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    for alg, private, jwk in (
        ("RS256", rsa_key, RSAAlgorithm.to_jwk(rsa_key.public_key(), as_dict=True)),
        ("ES256", ec_key, ECAlgorithm.to_jwk(ec_key.public_key(), as_dict=True)),
    ):
        jwk.update(kid="k1", alg=alg)
        cache = JWKSCache("http://127.0.0.1:9/unused")
        cache._keys = {"k1": jwk}  # a warm cache, as after the first request
        cache._fetched_at = time.monotonic()
        verifier = JWTVerifier(cache, issuer="https://issuer.test", algorithms=(alg,))
        now = int(time.time())
        token = jwt.encode(
            {"iss": "https://issuer.test", "sub": "u", "exp": now + 3600},
            private,
            algorithm=alg,
            headers={"kid": "k1"},
        ).encode()

        async def run(v: JWTVerifier = verifier, t: bytes = token) -> float:
            started = time.perf_counter()
            for _ in range(samples):
                await v.verify(t)
            return (time.perf_counter() - started) / samples

        per_call = asyncio.run(run())
        lines.append(row(f"JWT verify {alg}, warm key cache", f"{per_call * 1e6:.0f} us/token"))
    return lines


def run() -> list[str]:
    return ["browser checks (issue 6): cost per request", *throughput(), *jwt_verify()]
