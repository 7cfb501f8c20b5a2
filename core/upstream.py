"""The shared, pooled upstream HTTP client: one per event loop, reused across requests.

httpx is the API the code uses. Under it, long-running servers get aiohttp's transport:
httpx's own connection pool is the throughput bottleneck under concurrency (see README,
Performance). A function instance that serves one request at a time (Lambda, Vercel)
keeps httpx's own transport and skips importing aiohttp, which costs ~200 ms of cold start.
"""

from __future__ import annotations

import asyncio
import importlib.util

import httpx

from core.config import Settings

# Generous pool: a proxy's concurrency is its callers', not ours to cap.
_LIMITS = httpx.Limits(max_connections=1000, max_keepalive_connections=200, keepalive_expiry=30)


def aiohttp_available() -> bool:
    return importlib.util.find_spec("httpx_aiohttp") is not None


def choose_transport(settings: Settings, *, concurrent: bool) -> str:
    if settings.transport != "auto":
        return settings.transport
    return "aiohttp" if concurrent and aiohttp_available() else "httpx"


def build_client(settings: Settings, transport: str) -> httpx.AsyncClient:
    timeout = httpx.Timeout(
        connect=settings.connect_timeout,
        read=settings.read_timeout,
        write=settings.read_timeout,
        pool=settings.connect_timeout,
    )
    if transport == "aiohttp":
        from httpx_aiohttp import AiohttpTransport  # heavy: imported only when chosen

        return httpx.AsyncClient(
            transport=AiohttpTransport(limits=_LIMITS, trust_env=False),
            timeout=timeout,
            follow_redirects=False,
            trust_env=False,
        )
    return httpx.AsyncClient(
        limits=_LIMITS, timeout=timeout, follow_redirects=False, trust_env=False
    )


class UpstreamClient:
    """Hands out the pooled client for the running event loop, building it on first use.

    Some platforms run each invocation on a fresh event loop; a pool bound to a closed
    loop would fail, so a new loop gets a new client and the old one is dropped.
    """

    def __init__(self, settings: Settings, transport: str) -> None:
        self._settings = settings
        self.transport = transport
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def get(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client = build_client(self._settings, self.transport)
            self._loop = loop
        return self._client

    async def aclose(self) -> None:
        if self._client is not None and self._loop is asyncio.get_running_loop():
            await self._client.aclose()
        self._client = None
        self._loop = None
