"""What steers the mock: its options, and per request the x-mock-* headers (the table in
the package docstring), Accept-Encoding and Gemini's `alt=sse`."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs


@dataclass
class MockOptions:
    chunks: int = 8
    delay_ms: float = 0.0
    record: int = 200
    gzip: bool = False  # honour Accept-Encoding: gzip on every reply


@dataclass
class Knobs:
    """What steers one reply: the x-mock-* headers, Accept-Encoding, Gemini's `alt=sse`."""

    chunks: int
    delay: float  # seconds before each chunk
    gzip: bool
    cut_after: int | None
    scale: int
    cached: int
    cache_write: int
    sse: bool = False  # Gemini streams: SSE (alt=sse) rather than a JSON array
    resume: bool = False  # Gemini: continue the reply begun in the request's model turn


def int_header(headers: dict[str, str], name: str, default: int) -> int:
    try:
        return int(headers.get(name, "") or default)
    except ValueError:
        return default


def read_knobs(headers: dict[str, str], query: str, options: MockOptions) -> Knobs:
    accepts_gzip = "gzip" in headers.get("accept-encoding", "").lower()
    try:
        delay_ms = float(headers.get("x-mock-delay-ms", options.delay_ms) or 0)
    except ValueError:
        delay_ms = options.delay_ms
    cut = int_header(headers, "x-mock-cut-after", -1)
    return Knobs(
        chunks=max(0, int_header(headers, "x-mock-chunks", options.chunks)),
        delay=max(0.0, delay_ms) / 1000,
        gzip=headers.get("x-mock-gzip", "") in ("1", "true") or (options.gzip and accepts_gzip),
        cut_after=cut if cut >= 0 else None,
        scale=max(1, int_header(headers, "x-mock-usage-scale", 1)),
        cached=max(0, int_header(headers, "x-mock-cached-tokens", 0)),
        cache_write=max(0, int_header(headers, "x-mock-cache-write-tokens", 0)),
        sse=parse_qs(query).get("alt") == ["sse"],
        resume=headers.get("x-mock-continue", "") in ("1", "true"),
    )
