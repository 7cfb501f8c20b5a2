"""`llm-proxy tokens create | list | revoke | disable | enable` over the TOKEN_STORE."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from core.access.tokens import (
    TokenError,
    create_token,
    list_tokens,
    parse_expiry,
    revoke_token,
    set_disabled,
    split_list,
)
from core.stores import Store, StoreUnopenable, StoreURLError, open_store
from core.text import printable
from core.token_record import TokenRecord


def add_tokens_parser(sub: Any, handler: Callable[[argparse.Namespace], int]) -> None:
    tokens = sub.add_parser(
        "tokens",
        help="per-caller tokens in TOKEN_STORE: create, list, revoke, disable, enable",
    )
    tokens.add_argument(
        "--store",
        default=None,
        help="store URL (default: $TOKEN_STORE), e.g. sqlite:///tokens.db, dynamodb://table, "
        "redis://host:6379",
    )
    actions = tokens.add_subparsers(dest="action", required=True)

    create = actions.add_parser("create", help="make a token; it is printed once, never again")
    create.add_argument("--label", required=True, help="who or what the token is for (unique)")
    create.add_argument("--providers", help="comma list of provider names, default all")
    create.add_argument("--models", help="comma list of model names or patterns (gpt-4o*)")
    create.add_argument("--expires", help="30d, 12h, 90m, 2w, 2026-12-31 or never (default)")
    create.add_argument(
        "--budget-usd", type=float, default=None, help="a spending cap in USD (default none)"
    )

    actions.add_parser("list", help="labels, scopes, expiry and last use; never the token")
    for name, text in (
        ("revoke", "delete a token for good"),
        ("disable", "refuse a token until it is enabled again"),
        ("enable", "accept a disabled token again"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("label_or_id")
    tokens.set_defaults(func=handler)


def _when(stamp: float | None, empty: str) -> str:
    if stamp is None:
        return empty
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M UTC")


def token_state(record: TokenRecord, now: float) -> str:
    if record.disabled:
        return "disabled"
    return "expired" if record.expired(now) else "active"


def _print_table(records: list[TokenRecord]) -> None:
    now = time.time()
    rows = [("ID", "LABEL", "STATE", "PROVIDERS", "MODELS", "EXPIRES", "LAST USED", "BUDGET")]
    rows += [
        (
            # Labels and models may come from the dashboard's API: escaped (core/text.py).
            r.id,
            printable(r.label),
            token_state(r, now),
            ",".join(r.providers) or "all",
            printable(",".join(r.models)) or "all",
            _when(r.expires_at, "never"),
            _when(r.last_used, "never"),
            "none" if r.budget_usd is None else f"${r.budget_usd:g}",
        )
        for r in records
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def _open(args: argparse.Namespace) -> Store | None:
    url = args.store or os.environ.get("TOKEN_STORE", "").strip()
    if url == "sqlite":
        url = "sqlite:///llm-proxy-tokens.db"
    if not url:
        print(
            "error: no token store: set TOKEN_STORE (for example sqlite:///tokens.db) "
            "or pass --store; the proxy reads the same variable",
            file=sys.stderr,
        )
        return None
    try:
        return open_store(url)
    except (StoreURLError, StoreUnopenable) as exc:
        print(f"error: TOKEN_STORE: {exc}", file=sys.stderr)
        return None


def run_tokens_command(args: argparse.Namespace) -> int:
    store = _open(args)
    if store is None:
        return 2
    try:
        return _run(store, args)
    except TokenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        # A store that cannot be reached or read: one line, not the driver's traceback,
        # whose text may quote the store's address (stores/__init__.py, _reason).
        print(f"error: TOKEN_STORE could not be read ({type(exc).__name__})", file=sys.stderr)
        return 1


def check_provider_names(names: tuple[str, ...]) -> tuple[str, ...]:
    """`names` if every one is a provider route the proxy knows; TokenError otherwise."""
    from core.providers import CATALOGUE

    known = {p.name for p in CATALOGUE} | {"default"}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise TokenError(
            f"unknown provider {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    return names


def _run(store: Store, args: argparse.Namespace) -> int:
    action = args.action
    if action == "create":
        now = time.time()
        token, record = create_token(
            store,
            args.label,
            providers=check_provider_names(split_list(args.providers)),
            models=split_list(args.models),
            expires_at=parse_expiry(args.expires, now),
            now=now,
            budget_usd=args.budget_usd,
        )
        print(token)
        providers = ",".join(record.providers) or "all"
        models = printable(",".join(record.models)) or "all"
        expires = _when(record.expires_at, "never")
        budget = "none" if record.budget_usd is None else f"${record.budget_usd:g}"
        print(
            f"created {record.id} ({printable(record.label)}); providers: {providers}; "
            f"models: {models}; expires: {expires}; budget: {budget}",
            file=sys.stderr,
        )
        print(
            "the token is shown only now: store it where the caller keeps secrets", file=sys.stderr
        )
    elif action == "list":
        _print_table(list_tokens(store))
    elif action == "revoke":
        record = revoke_token(store, args.label_or_id)
        print(f"revoked {record.id} ({printable(record.label)})")
    else:
        record = set_disabled(store, args.label_or_id, disabled=action == "disable")
        print(f"{action}d {record.id} ({printable(record.label)})")
    return 0
