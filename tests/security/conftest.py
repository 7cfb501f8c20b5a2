"""The fake realtime upstream and proxies in front of it, for the realtime findings."""

from __future__ import annotations

from tests.support.realtime import fake, start_proxy, upstream  # noqa: F401 (fixtures)
