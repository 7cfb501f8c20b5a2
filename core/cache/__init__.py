"""The response cache (CACHE_URL): a repeated deterministic request is answered from a
stored copy of an earlier reply, with no upstream call and no spend.

- `settings.py`: CACHE_* read and checked with the rest of the settings (cold start: light);
- `key.py`: which requests may be cached, and under which key (one caller's entries are
  never another's unless CACHE_SCOPE=shared);
- `entry.py`: a stored reply as a store document, and the bounded copy the relay fills;
- `check.py`: the admission check that looks up, replays and stores.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from core.env import detect_platform
from core.stages import Contribution

if TYPE_CHECKING:
    from core.config import Settings
    from core.stages import Deployment

logger = logging.getLogger("llm_proxy")


def response_cache(deployment: Deployment) -> Contribution | None:
    """The cache's lookup, a check on the body; None unless CACHE_URL is set."""
    settings = deployment.settings
    if not settings.cache.on:
        return None
    from core.cache.check import ResponseCache

    _log_cache(settings)
    # The cache keys on the parsed body: a field named twice must not let two bodies
    # an upstream reads differently share one entry.
    cache = ResponseCache.from_settings(settings.cache, deployment.stores)
    return Contribution(after_body=(cache,), strict_json=True)


def _log_cache(settings: Settings) -> None:
    cache = settings.cache
    scheme = cache.url.partition("://")[0]
    logger.info(
        "response cache: %s, entries kept %gs, scope %s, %s requests cached",
        scheme,
        cache.ttl_seconds,
        cache.scope,
        "all" if cache.nondeterministic else "deterministic (temperature 0)",
    )
    if scheme == "memory" and detect_platform(os.environ) in ("aws", "vercel", "cloud-run"):
        logger.warning(
            "the response cache is in memory: each function instance keeps its own; set "
            "CACHE_URL to DynamoDB or Redis to share it"
        )
