"""The ledger's request log as a telemetry sink: each proxied request, once, at its end."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from core.stores.calls import call_store_later
from core.usage.ledger import RequestEntry

if TYPE_CHECKING:
    from core.telemetry.record import RequestRecord
    from core.types import Scope
    from core.usage.ledger import UsageLedger

logger = logging.getLogger("llm_proxy")

# Requests from no one identified (a 401: anyone on the internet) written to the log per
# minute and process: enough to see a misconfigured client, too few for a stranger to push
# the real entries out of the ring (REQUEST_LOG_SIZE) or to run up store writes. Every one
# still has its access-log line and its Prometheus count.
UNIDENTIFIED_PER_MINUTE = 30


class RequestLogSink:
    def __init__(self, ledger: UsageLedger) -> None:
        self.ledger = ledger
        self._minute = 0
        self._unidentified = 0

    def start(self, record: RequestRecord, scope: Scope) -> None:
        return None

    def end(self, record: RequestRecord) -> None:
        log = record.log
        if log is None or log.route is None:
            return  # no provider route matched: not a proxied request
        if not log.caller and not self._unidentified_room():
            return
        entry = RequestEntry(
            at=time.time() - record.duration_s,
            caller=log.caller or "",
            provider=log.route,
            model=(record.request_model or log.model or "")[:200],
            status=log.status or 0,
            refusal=log.error or "",
            latency_ms=record.duration_s * 1000,
            first_byte_ms=log.first_byte_ms,
            input_tokens=record.input_tokens,
            output_tokens=record.output_tokens,
            cost_usd=record.cost_usd,
            cache=log.cache or ("hit" if record.cache_hit else ""),
            stream=record.stream,
            request_id=log.request_id,
        )
        # Written in the background, as the usage ledger is: no reply waits on the store.
        done = call_store_later(self.ledger.store, self.ledger.record_request, entry)
        done.add_done_callback(_log_failure)

    async def flush(self) -> None:
        return None

    def _unidentified_room(self) -> bool:
        minute = int(time.monotonic() // 60)
        if minute != self._minute:
            self._minute, self._unidentified = minute, 0
        self._unidentified += 1
        return self._unidentified <= UNIDENTIFIED_PER_MINUTE


def _log_failure(done: asyncio.Future[None]) -> None:
    if not done.cancelled() and done.exception() is not None:
        logger.warning("request log write failed: %s", type(done.exception()).__name__)
