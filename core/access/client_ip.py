"""The caller's IP address, found the way each platform makes trustworthy.

A header the caller can write is never trusted unless the platform in front of us
overwrites it. Per platform (CLIENT_IP_SOURCE, `auto` picks from the environment):

- `aws` (Lambda behind API Gateway REST/HTTP APIs or a Function URL): the adapter puts
  `requestContext.identity.sourceIp` (REST) or `requestContext.http.sourceIp` (HTTP API,
  Function URL) in the ASGI `client`; API Gateway fills those from the TCP connection.
  Behind an ALB, Mangum puts the whole `X-Forwarded-For` there; the ALB appends the
  address it saw, so only the last entry is trusted.
- `vercel`: Vercel overwrites `x-forwarded-for` / `x-real-ip` and sets
  `x-vercel-forwarded-for` itself, so a caller's own value never reaches the function.
- `cloud-run`: Google's front end appends the address it saw to `X-Forwarded-For`; the
  last entry is the caller (behind an external HTTPS load balancer use `xff:2`).
- `socket` (a VM, a container, `handlers/http.py` with nothing in front): the TCP peer.
- `xff:N`: behind N proxies you run that each append to `X-Forwarded-For`: the Nth entry
  from the right. `header:NAME`: a header your own edge sets and overwrites (for example
  `header:cf-connecting-ip` behind Cloudflare); only safe if nothing else can reach us.

An IPv6 caller is counted by its /64: a host is handed the whole network and may send each
request from a new address in it, which would be a fresh limit and budget every time.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping

from core.env import detect_platform
from core.types import Scope

ClientIPRule = Callable[[Scope], str]
UNKNOWN = "unknown"


def _socket_peer(scope: Scope) -> str:
    client = scope.get("client")
    if not client or not client[0]:
        return UNKNOWN
    return str(client[0])


def _header(scope: Scope, name: bytes) -> bytes | None:
    # The last occurrence: a platform that appends its own copy puts it after the caller's.
    found = None
    for key, value in scope["headers"]:
        if key == name:
            found = value
    return found


def _forwarded_entries(scope: Scope) -> list[str]:
    """Every X-Forwarded-For entry, across repeated headers, in order."""
    entries: list[str] = []
    for key, value in scope["headers"]:
        if key == b"x-forwarded-for":
            entries.extend(e.strip() for e in value.decode("latin-1").split(",") if e.strip())
    return entries


def _aws(scope: Scope) -> str:
    peer = _socket_peer(scope)
    # ALB through Mangum: "spoofed, real" -> the ALB's own (last) entry.
    return peer.rsplit(",", 1)[-1].strip() or UNKNOWN


def _vercel(scope: Scope) -> str:
    for name in (b"x-vercel-forwarded-for", b"x-real-ip"):
        value = _header(scope, name)
        if value:
            return value.decode("latin-1").split(",")[0].strip()
    return _socket_peer(scope)


def _nth_from_right(hops: int) -> ClientIPRule:
    def rule(scope: Scope) -> str:
        entries = _forwarded_entries(scope)
        # Fewer entries than trusted hops: the request did not come through them all.
        if len(entries) < hops:
            return _socket_peer(scope)
        return entries[-hops]

    return rule


def _named_header(name: str) -> ClientIPRule:
    raw_name = name.strip().lower().encode("latin-1")

    def rule(scope: Scope) -> str:
        value = _header(scope, raw_name)
        return value.decode("latin-1").strip() if value else _socket_peer(scope)

    return rule


def per_network(address: str) -> str:
    """The caller an address counts as: an IPv4 address itself (also written IPv4-mapped,
    as a dual-stack socket reports it), an IPv6 one its /64. Anything else as it is."""
    if ":" not in address:
        return address  # IPv4 or `unknown`: the common case, no parse
    try:
        parsed = ipaddress.IPv6Address(address.strip("[]"))
    except ValueError:
        return address
    if parsed.ipv4_mapped is not None:
        return str(parsed.ipv4_mapped)
    return str(ipaddress.IPv6Network((int(parsed) >> 64 << 64, 64)))


def client_ip_rule(source: str, environ: Mapping[str, str] | None = None) -> ClientIPRule:
    """The function that finds a request's client IP under `source` (an IPv6 one as its
    /64, `per_network`); chosen once, at start."""
    rule = _platform_rule(source, environ)
    return lambda scope: per_network(rule(scope))


def _platform_rule(source: str, environ: Mapping[str, str] | None) -> ClientIPRule:
    if source == "auto":
        source = detect_platform(os.environ if environ is None else environ)
    kind, _, arg = source.partition(":")
    if source == "aws":
        return _aws
    if source == "vercel":
        return _vercel
    if source == "cloud-run":
        return _nth_from_right(1)
    if kind == "xff":
        return _nth_from_right(int(arg))
    if kind == "header":
        return _named_header(arg)
    return _socket_peer
