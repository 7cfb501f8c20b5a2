"""`llm-proxy usage [--by caller|provider|model|day] [--since YYYY-MM-DD] [--json]`, and
`llm-proxy usage --requests [--caller C] [--model M] [--status S]`: the latest requests and
their latency percentiles, the figures the dashboard's Requests page shows."""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from collections.abc import Callable
from typing import Any

from core.config import usage_store_url
from core.stores import StoreUnopenable, StoreURLError, open_store
from core.text import printable
from core.usage.ledger import (
    GROUPINGS,
    REQUEST_LOG_SIZE,
    UsageLedger,
    UsageRow,
    request_figures,
)


def add_usage_parser(sub: Any, handler: Callable[[argparse.Namespace], int]) -> None:
    usage = sub.add_parser(
        "usage", help="requests, tokens and cost from the usage ledger (USAGE_STORE)"
    )
    usage.add_argument(
        "--store",
        default=None,
        help="store URL (default: $USAGE_STORE, else $LIMIT_STORE, else $TOKEN_STORE)",
    )
    usage.add_argument(
        "--by", choices=GROUPINGS, default="caller", help="group by (default caller)"
    )
    usage.add_argument(
        "--since", type=parse_day, default=None, help="first UTC day to count, YYYY-MM-DD"
    )
    usage.add_argument("--json", action="store_true", help="one JSON document instead of a table")
    usage.add_argument(
        "--requests",
        action="store_true",
        help="the latest requests (the request log) and their latency percentiles",
    )
    usage.add_argument("--caller", default="", help="with --requests: only this caller")
    usage.add_argument("--model", default="", help="with --requests: only this model")
    usage.add_argument(
        "--status", default="", help="with --requests: a status (429), class (5xx) or refusal code"
    )
    usage.add_argument("--limit", type=int, default=50, help="with --requests: rows (default 50)")
    usage.set_defaults(func=handler)


def parse_day(text: str) -> datetime.date:
    try:
        return datetime.date.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a day like 2026-11-01, got {text!r}") from None


def usage_report(ledger: UsageLedger, by: str, since: datetime.date | None) -> dict[str, object]:
    """What `llm-proxy usage --json` prints and GET /admin/api/usage returns."""
    rows = ledger.rows(by=by, since=since)  # type: ignore[arg-type]
    return {
        "by": by,
        "since": since.isoformat() if since else None,
        "rows": [row.to_json() for row in rows],
        "total": _total(rows).to_json(),
    }


def requests_report(
    ledger: UsageLedger, *, caller: str = "", model: str = "", status: str = "", limit: int = 200
) -> dict[str, Any]:
    """What `llm-proxy usage --requests --json` prints and GET /admin/api/requests returns."""
    latest = ledger.recent_requests(limit=REQUEST_LOG_SIZE)
    entries = [entry for entry in latest if entry.matches(caller, model, status)]
    return {
        "requests": [entry.to_json() for entry in entries[: max(1, limit)]],
        "figures": request_figures(entries),
        # What the dashboard's filters offer: every caller and model in the log.
        "callers": sorted({entry.caller for entry in latest if entry.caller}),
        "models": sorted({entry.model for entry in latest if entry.model}),
    }


def format_requests(report: dict[str, Any]) -> str:
    figures = report["figures"]
    lines = [
        "{} requests; latency p50/p90/p99 ms: {}; first byte p50/p90/p99 ms: {}".format(
            figures["requests"],
            "/".join(str(v) for v in figures["latency_ms"].values()) or "-",
            "/".join(str(v) for v in figures["first_byte_ms"].values()) or "-",
        )
    ]
    for row in report["requests"]:
        at = datetime.datetime.fromtimestamp(row["at"], datetime.UTC).strftime("%m-%d %H:%M:%S")
        status = f"{row['status']} {row['refusal']}".strip()
        tokens = (
            "-" if row["input_tokens"] is None else f"{row['input_tokens']}/{row['output_tokens']}"
        )
        first = "-" if row["first_byte_ms"] is None else f"{row['first_byte_ms']:.0f}"
        cost = "-" if row["cost_usd"] is None else f"{row['cost_usd']:.6f}"
        # Caller, model and refusal come from requests (a caller names its model): printed
        # with their control characters escaped (core/text.py).
        caller, model = printable(row["caller"] or "-"), printable(row["model"] or "-")
        lines.append(
            f"{at}  {caller:<16} {printable(row['provider']):<10} {model:<24} "
            f"{printable(status):<20} {row['latency_ms']:>8.0f} {first:>6} {tokens:>12} "
            f"{cost:>10} {printable(row['cache'] or '-')}"
        )
    return "\n".join(lines)


def _total(rows: list[UsageRow]) -> UsageRow:
    return UsageRow(
        key="total",
        requests=sum(r.requests for r in rows),
        input_tokens=sum(r.input_tokens for r in rows),
        output_tokens=sum(r.output_tokens for r in rows),
        cached_input_tokens=sum(r.cached_input_tokens for r in rows),
        cost_usd=sum(r.cost_usd for r in rows),
        saved_tokens=sum(r.saved_tokens for r in rows),
    )


def format_table(by: str, rows: list[UsageRow]) -> str:
    header = (by.upper(), "REQUESTS", "INPUT", "OUTPUT", "CACHED", "SAVED", "COST USD")
    body = [
        (
            printable(row.key) or "(unknown)",  # a caller or a model a caller named
            str(row.requests),
            str(row.input_tokens),
            str(row.output_tokens),
            str(row.cached_input_tokens),
            str(row.saved_tokens),
            f"{row.cost_usd:.4f}",
        )
        for row in [*rows, _total(rows)]
    ]
    table = [header, *body]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]

    def line(cells: tuple[str, ...]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest])

    return "\n".join(line(cells) for cells in table)


def run_usage_command(args: argparse.Namespace) -> int:
    url = args.store or usage_store_url()
    if url == "memory://" and not args.store:
        print(
            "error: no usage store: set USAGE_STORE (or LIMIT_STORE / TOKEN_STORE) to the "
            "store the proxy records usage in, or pass --store",
            file=sys.stderr,
        )
        return 2
    try:
        ledger = UsageLedger(open_store(url))
    except (StoreURLError, StoreUnopenable) as exc:
        print(f"error: USAGE_STORE: {exc}", file=sys.stderr)
        return 2
    try:
        return _print_usage(ledger, args)
    except Exception as exc:
        # A store that cannot be reached or read: one line, not the driver's traceback,
        # whose text may quote the store's address (stores/__init__.py, _reason).
        print(f"error: USAGE_STORE could not be read ({type(exc).__name__})", file=sys.stderr)
        return 1


def _print_usage(ledger: UsageLedger, args: argparse.Namespace) -> int:
    if args.requests:
        report = requests_report(
            ledger, caller=args.caller, model=args.model, status=args.status, limit=args.limit
        )
        print(json.dumps(report, indent=2) if args.json else format_requests(report))
        return 0
    if args.json:
        print(json.dumps(usage_report(ledger, args.by, args.since), indent=2))
        return 0
    rows = ledger.rows(by=args.by, since=args.since)
    if not rows:
        since = f" since {args.since.isoformat()}" if args.since else ""
        print(f"no usage recorded{since}", file=sys.stderr)
    print(format_table(args.by, rows))
    return 0
