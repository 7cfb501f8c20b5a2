"""Caches a caller can fill stay small."""

from __future__ import annotations

import sys

from core.config import load_settings
from core.upstream.client import UpstreamClient
from tests.support.servers import FAKE_TOKEN, FAKE_UPSTREAM_KEY


def test_url_cache_does_not_keep_long_one_off_urls() -> None:
    """Every distinct URL (the query is part of it) went into the parsed-URL cache, up to
    512 of them; at the HTTP server's ~80 KB URL limit that is tens of MB per instance."""
    settings = load_settings(
        {
            "UPSTREAM_BASE_URL": "https://api.upstream.test/v1",
            "UPSTREAM_API_KEY": FAKE_UPSTREAM_KEY,
            "PROXY_ACCESS_TOKEN": FAKE_TOKEN,
        }
    )
    client = UpstreamClient(settings, "httpx")
    filler = "a" * 60_000
    for n in range(500):
        parsed = client._parsed(f"https://api.upstream.test/v1/x?{n}={filler}")
        assert parsed.query.startswith(f"{n}=".encode())
    held = sum(sys.getsizeof(url) for url in client._urls)
    assert held < 2 * 1024 * 1024, f"URL cache holds {held / 1e6:.0f} MB"
    # Ordinary URLs are still parsed once and reused.
    client._parsed("https://api.upstream.test/v1/chat/completions")
    assert "https://api.upstream.test/v1/chat/completions" in client._urls
