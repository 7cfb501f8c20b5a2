"""What one connection may hold before its request is the app's: the server's limits.

Settings (core/config.py) import this module and nothing else of core/server, so reading
the environment never loads uvicorn or the runner.
"""

from __future__ import annotations

from collections.abc import Mapping

from core.env import parse_float, parse_int
from core.records import Record


class ServerLimits(Record):
    """Bounds the server protocols enforce per connection (core/server/bounds.py)."""

    # Request line + headers; past this the reply is 431.
    max_header_bytes: int = 64 * 1024
    # From the connection's start (or a later request's first byte) to the end of its head;
    # past this the reply is 408 (or a close if nothing came).
    header_timeout: float = 10.0
    # From the end of a request's head to the end of its body; past this the reply is 408
    # (or a close if the app already answered). A whole MAX_BODY_BYTES upload (32 MiB) fits
    # at about 4.5 Mbit/s; a caller trickling a byte now and then is cut here.
    body_timeout: float = 60.0
    # An idle keep-alive connection between requests. A little longer than typical load
    # balancers' 60 s so they, not we, close first (no request lost to a race).
    idle_timeout: float = 75.0
    # Open connections per process; a request on one past it gets a 503.
    max_connections: int = 1000
    # A reply's bytes waiting for a caller that takes none of them (its socket full and
    # not one byte read meanwhile); past this the connection is closed, and with it the
    # upstream request. nginx's send_timeout, with its default.
    send_timeout: float = 60.0


def parse_server_limits(env: Mapping[str, str], problems: list[str]) -> ServerLimits:
    limits = ServerLimits(
        max_header_bytes=parse_int(
            env, "MAX_HEADER_BYTES", ServerLimits.max_header_bytes, problems
        ),
        header_timeout=parse_float(env, "HEADER_TIMEOUT", ServerLimits.header_timeout, problems),
        body_timeout=parse_float(env, "BODY_TIMEOUT", ServerLimits.body_timeout, problems),
        idle_timeout=parse_float(env, "IDLE_TIMEOUT", ServerLimits.idle_timeout, problems),
        max_connections=parse_int(env, "MAX_CONNECTIONS", ServerLimits.max_connections, problems),
        send_timeout=parse_float(env, "SEND_TIMEOUT", ServerLimits.send_timeout, problems),
    )
    if 0 < limits.max_header_bytes < 1024:
        problems.append(f"MAX_HEADER_BYTES must be at least 1024, got {limits.max_header_bytes}")
    return limits


def parse_allowed_origins(env: Mapping[str, str]) -> tuple[str, ...]:
    """ALLOWED_ORIGINS as the CORS layer compares them (the settings check each entry). The
    server reads them too: its 503 past MAX_CONNECTIONS is answered instead of the app."""
    return tuple(
        o.strip().rstrip("/") for o in env.get("ALLOWED_ORIGINS", "").split(",") if o.strip()
    )


def ws_frame_bound(env: Mapping[str, str]) -> int:
    """The largest WebSocket frame a caller may send: REALTIME_MAX_FRAME_BYTES, never above
    MAX_BODY_BYTES (defaults 16 and 32 MiB; invalid values are reported by the settings)."""
    frame = parse_int(env, "REALTIME_MAX_FRAME_BYTES", 16 * 1024 * 1024, [])
    body = parse_int(env, "MAX_BODY_BYTES", 32 * 1024 * 1024, [])
    return min(frame, body)
