"""Inputs that look like an allowed value and are not: beside every negative test of an
allowlist, so a comparison loosened to a prefix, a suffix, a case fold or a decoding fails.

Each generator returns (what changed, the lookalike) pairs; none of them may pass.
"""

from __future__ import annotations

from urllib.parse import quote


def origin_lookalikes(origin: str) -> list[tuple[str, str]]:
    """Origins a page elsewhere could send that resemble `origin` (scheme://host[:port])."""
    scheme, _, host = origin.partition("://")
    other_scheme = "https" if scheme == "http" else "http"
    return [
        ("allowed origin as a prefix", f"{origin}.evil.test"),
        ("allowed origin plus a character", f"{origin}x"),
        ("allowed origin plus a port", f"{origin}:8443"),
        ("allowed origin cut short", origin[:-1]),
        ("allowed host as a suffix", f"{scheme}://evil-{host}"),
        ("allowed host under another domain", f"{scheme}://{host}.evil.test"),
        ("a subdomain of the allowed host", f"{scheme}://evil.{host}"),
        ("upper case", origin.upper()),
        ("upper-case host", f"{scheme}://{host.upper()}"),
        ("percent-encoded dots", f"{scheme}://{host.replace('.', '%2E')}"),
        ("percent-encoded whole", quote(origin, safe="")),
        ("trailing dot", f"{origin}."),
        ("trailing slash", f"{origin}/"),
        ("other scheme", f"{other_scheme}://{host}"),
        ("opaque origin", "null"),
    ]


def name_lookalikes(name: str) -> list[tuple[str, str]]:
    """Names (a model, a route segment) that resemble `name` without being it."""
    encoded = "".join(f"%{ord(c):02X}" if c in "-." else c for c in name)
    if encoded == name:  # nothing to encode: encode the first letter instead
        encoded = f"%{ord(name[0]):02X}{name[1:]}"
    return [
        ("allowed name as a prefix", f"{name}-x"),
        ("allowed name plus a character", f"{name}x"),
        ("allowed name as a suffix", f"x{name}"),
        ("allowed name cut short", name[:-1]),
        ("upper case", name.upper()),
        ("first letter upper case", name[:1].upper() + name[1:]),
        ("percent-encoded", encoded),
        ("trailing dot", f"{name}."),
        ("trailing space", f"{name} "),
    ]
