"""No query string in uvicorn's own log lines, and no traceback for an abort on purpose.

At `--log-level info` uvicorn logs each WebSocket handshake with its path and query string
(`"WebSocket /v1beta/...?key=..." [accepted]`), and a browser or Gemini Live client puts
its credential there, as `?key=`. The proxy's access log never writes a query string; this
filter holds uvicorn's lines to the same rule: whatever follows a `?` in a logged value is
left out. It is part of the logging configuration the server starts with (runner.py), so
worker processes (`--workers N`), which configure their logging anew, have it too.
"""

from __future__ import annotations

import logging

OMITTED = "?[query omitted]"


def _without_query(value: object) -> object:
    if isinstance(value, str | bytes) and value:
        text = value.decode("latin-1") if isinstance(value, bytes) else value
        at = text.find("?")
        if at >= 0:
            return text[:at] + OMITTED
    return value


class QueryStringsOmitted(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and args:
            record.args = tuple(_without_query(arg) for arg in args)
        elif isinstance(args, dict) and args:
            record.args = {name: _without_query(arg) for name, arg in args.items()}
        if isinstance(record.msg, str) and not args:
            record.msg = str(_without_query(record.msg))
        return True


class AbortsAreNoFaults(logging.Filter):
    """uvicorn logs every exception out of the app as "Exception in ASGI application", with
    its traceback. Once a reply's head is out, the proxy ends a broken or stopped stream by
    raising UpstreamStreamBroken (StreamStopped: a rule that no longer holds), which aborts
    the connection: control flow, logged where it happened as one warning line with its
    byte count or its rule. Its traceback would read as a fault and bury real ones."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.exc_info:
            return True  # most lines: no exception to look at
        from core.errors import UpstreamStreamBroken  # loaded by then: the app raised it

        return not isinstance(record.exc_info[1], UpstreamStreamBroken)
