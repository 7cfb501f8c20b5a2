"""`llm-proxy check --url`: does a deployed proxy work, and does it stream?

Sends what a real caller sends, through the deployed URL:

- a streamed generation (`stream: true`) with the caller's token: status, time to the
  first body byte, how many pieces arrived and how far apart. A platform that buffers
  delivers every byte within a few milliseconds after a long wait; a streaming one spreads
  them over the generation;
- the same request with no credential, which the proxy must refuse with 401;
- with `--origin`, a browser's CORS preflight from that origin;
- `GET /health`.

Each check prints one line (`ok`, `FAIL` or `skip`); the exit status is 1 if any failed.
httpx is imported only here, so `llm-proxy check` without `--url` stays light.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from core.text import printable

if TYPE_CHECKING:
    import httpx

# All bytes within this long after the first one: the platform held the reply back and
# sent it whole. A model streams its tokens over hundreds of milliseconds or more.
BUFFERED_WITHIN_SECONDS = 0.025
PROMPT = "Count from 1 to 20, one number per line."
Verdict = Literal["streamed", "buffered", "empty"]


@dataclass
class Finding:
    name: str
    ok: bool | None  # None: skipped
    detail: str

    def line(self) -> str:
        mark = "skip" if self.ok is None else "ok  " if self.ok else "FAIL"
        # The detail may quote the checked server (an error's message, a header): written
        # with its control characters escaped, as every report the CLI prints.
        return f"{mark} {self.name}: {printable(self.detail)}"


@dataclass
class StreamTiming:
    """When each piece of a reply's body arrived, in seconds after the request was sent."""

    headers_at: float
    arrivals: list[float] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)

    @property
    def ttfb(self) -> float | None:
        return self.arrivals[0] if self.arrivals else None

    @property
    def spread(self) -> float:
        return self.arrivals[-1] - self.arrivals[0] if self.arrivals else 0.0

    @property
    def gaps(self) -> list[float]:
        return [b - a for a, b in zip(self.arrivals, self.arrivals[1:], strict=False)]

    @property
    def verdict(self) -> Verdict:
        if not self.arrivals:
            return "empty"
        return "buffered" if self.spread < BUFFERED_WITHIN_SECONDS else "streamed"

    def describe(self) -> str:
        if not self.arrivals:
            return f"headers after {ms(self.headers_at)}, no body"
        text = (
            f"first byte after {ms(self.arrivals[0])}, {len(self.arrivals)} chunk(s), "
            f"{sum(self.sizes)} bytes over {ms(self.spread)}"
        )
        if self.gaps:
            text += f" (gaps p50 {ms(statistics.median(self.gaps))}, max {ms(max(self.gaps))})"
        return text


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def endpoint(base_url: str, route: str) -> str:
    return base_url.rstrip("/") + "/" + route.lstrip("/")


def generation_body(model: str) -> bytes:
    # Valid for OpenAI chat completions and Anthropic messages alike; max_tokens keeps it
    # cheap and satisfies a MAX_TOKENS_CAP policy.
    body = {
        "model": model,
        "stream": True,
        "max_tokens": 64,
        "messages": [{"role": "user", "content": PROMPT}],
    }
    return json.dumps(body).encode()


def timed_stream(
    client: httpx.Client, url: str, headers: dict[str, str], body: bytes
) -> tuple[httpx.Response, StreamTiming, bytes]:
    sent_at = time.monotonic()
    with client.stream("POST", url, headers=headers, content=body) as response:
        timing = StreamTiming(headers_at=time.monotonic() - sent_at)
        pieces = []
        for piece in response.iter_raw():
            if piece:
                timing.arrivals.append(time.monotonic() - sent_at)
                timing.sizes.append(len(piece))
                pieces.append(piece)
    return response, timing, b"".join(pieces)


def error_text(body: bytes) -> str:
    try:
        error = json.loads(body).get("error")
        message = error.get("message") if isinstance(error, dict) else error
        return str(message)[:200]
    except (ValueError, AttributeError):
        return body[:200].decode("utf-8", "replace")


def check_stream(client: httpx.Client, url: str, token: str | None, model: str) -> Finding:
    if not token:
        return Finding("stream", False, "no token: give --token or set PROXY_ACCESS_TOKEN")
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    response, timing, body = timed_stream(client, url, headers, generation_body(model))
    content_type = response.headers.get("content-type", "")
    if response.status_code != 200:
        return Finding("stream", False, f"status {response.status_code}: {error_text(body)}")
    detail = f"status 200 {content_type.split(';')[0]}, {timing.describe()}: {timing.verdict}"
    if not content_type.startswith("text/event-stream"):
        return Finding("stream", False, detail + " (not an event stream)")
    return Finding("stream", timing.verdict == "streamed", detail)


def check_unauthenticated(client: httpx.Client, url: str, model: str) -> Finding:
    response = client.post(
        url, headers={"content-type": "application/json"}, content=generation_body(model)
    )
    status = response.status_code
    if status == 401:
        return Finding("unauthenticated", True, "refused with 401")
    return Finding("unauthenticated", False, f"expected 401 without a credential, got {status}")


def check_cors(client: httpx.Client, url: str, origin: str | None) -> Finding:
    if not origin:
        return Finding("cors", None, "give --origin https://your-page.example to check a preflight")
    response = client.options(
        url,
        headers={
            "origin": origin,
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization, content-type",
        },
    )
    allowed = response.headers.get("access-control-allow-origin")
    methods = response.headers.get("access-control-allow-methods", "")
    if 200 <= response.status_code < 300 and allowed in (origin, "*") and "POST" in methods:
        return Finding("cors", True, f"preflight from {origin}: {response.status_code}, allowed")
    return Finding(
        "cors",
        False,
        f"preflight from {origin}: status {response.status_code}, "
        f"access-control-allow-origin {allowed!r} (is it in ALLOWED_ORIGINS?)",
    )


def check_health(client: httpx.Client, url: str) -> Finding:
    response = client.get(url)
    if response.status_code == 200:
        return Finding("health", True, "200")
    return Finding("health", False, f"status {response.status_code}")


def check_deployment(
    base_url: str,
    *,
    token: str | None,
    model: str,
    route: str = "/v1/chat/completions",
    origin: str | None = None,
    timeout: float = 60.0,
    print_line: Callable[[str], None] = print,
) -> int:
    """Run every check against `base_url`, print one line each; 0 if none failed."""
    import httpx

    url = endpoint(base_url, route)
    checks: list[tuple[str, Callable[[httpx.Client], Finding]]] = [
        ("health", lambda client: check_health(client, endpoint(base_url, "/health"))),
        ("stream", lambda client: check_stream(client, url, token, model)),
        ("unauthenticated", lambda client: check_unauthenticated(client, url, model)),
        ("cors", lambda client: check_cors(client, url, origin)),
    ]
    print_line(f"checking {url}")
    failed = False
    timeouts = httpx.Timeout(timeout, connect=min(timeout, 10.0))
    with httpx.Client(timeout=timeouts, follow_redirects=False) as client:
        for name, run_check in checks:
            try:
                finding = run_check(client)
            except httpx.HTTPError as exc:
                finding = Finding(name, False, f"{type(exc).__name__}: {exc}")
            print_line(finding.line())
            failed |= finding.ok is False
    return 1 if failed else 0
