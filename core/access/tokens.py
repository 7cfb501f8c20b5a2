"""Per-caller tokens: created once, stored only as a SHA-256 hash, scoped, expiring, revocable.

A token record lives in a store under `token:<sha256 hex>`, so the proxy finds a caller by
hashing what it was sent; the token itself is printed once at creation and kept nowhere.
Scopes are lists of provider names and model patterns (`gpt-4o*`); empty means any.
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import replace  # noqa: TID251  # a token record is a dataclass
from datetime import UTC, datetime

from core.digest import sha256_hex
from core.stores import Item, Store
from core.text import well_formed
from core.token_record import TokenRecord

KEY_PREFIX = "token:"
TOKEN_PREFIX = "llmp_"  # noqa: S105 (a marker, not a secret)

# 9999-12-31T23:59:59Z: a later expiry cannot be written back as a date (the token list,
# the dashboard), and 1e400 reads as infinity.
LATEST_EXPIRY = 253_402_300_799
_DURATION = re.compile(r"^(\d+)\s*([smhdw])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class TokenError(ValueError):
    """A token command cannot be carried out; the message says why, for people."""


def hash_hex(token: str | bytes) -> str:
    return sha256_hex(token)


def store_key(token_hash_hex: str) -> str:
    return KEY_PREFIX + token_hash_hex


def record_from_item(item: Item) -> TokenRecord:
    doc = item.doc
    return TokenRecord(
        id=str(doc["id"]),
        label=str(doc["label"]),
        providers=tuple(doc.get("providers") or ()),
        models=tuple(doc.get("models") or ()),
        created_at=float(doc.get("created_at") or 0.0),
        expires_at=None if doc.get("expires_at") is None else float(doc["expires_at"]),
        disabled=bool(doc.get("disabled", False)),
        budget_usd=None if doc.get("budget_usd") is None else float(doc["budget_usd"]),
        last_used=item.last_used,
        token_hash=item.key[len(KEY_PREFIX) :],
    )


def parse_expiry(text: str | None, now: float) -> float | None:
    """`30d`, `12h`, `90m`, `2w`, a date `2026-12-31` or an ISO time; None or `never` for none."""
    if text is None or text.strip().lower() in ("", "never", "none"):
        return None
    raw = text.strip().lower()
    if match := _DURATION.match(raw):
        amount = int(match.group(1))
        if amount <= 0:
            raise TokenError(f"--expires must be in the future, got {text!r}")
        return _not_too_late(now + amount * _SECONDS[match.group(2)], text)
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise TokenError(
            f"--expires must be like 30d, 12h, 90m, 2w, 2026-12-31 or never, got {text!r}"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    stamp = when.timestamp()
    if stamp <= now:
        raise TokenError(f"--expires {text!r} is in the past")
    return _not_too_late(stamp, text)


def _not_too_late(stamp: float, text: str) -> float:
    if not stamp < LATEST_EXPIRY:
        raise TokenError(f"--expires {text[:40]!r} is past the year 9999")
    return stamp


def split_list(text: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (text or "").split(",") if part.strip())


def create_token(
    store: Store,
    label: str,
    *,
    providers: tuple[str, ...] = (),
    models: tuple[str, ...] = (),
    expires_at: float | None = None,
    now: float | None = None,
    budget_usd: float | None = None,
) -> tuple[str, TokenRecord]:
    """A new token (returned once, to be shown once) and its stored record."""
    label = label.strip()
    if not label:
        raise TokenError("--label must not be blank")
    if not all(well_formed(text) for text in (label, *providers, *models)):
        # A lone surrogate (an undecodable byte of a shell argument, JSON's `\\ud800`) is
        # stored as an escape, then fails every reply that writes the record as UTF-8.
        raise TokenError("--label, --providers and --models must be Unicode text")
    if len(label) > 200:
        raise TokenError("--label must be at most 200 characters")
    if budget_usd is not None and not (0 <= budget_usd < 1e9):
        raise TokenError("--budget-usd must be a non-negative amount of dollars")
    if any(r.label == label for r in list_tokens(store)):
        raise TokenError(
            f"a token labelled {label!r} already exists; revoke it or pick another label"
        )
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    digest = hash_hex(token)
    record = TokenRecord(
        id="tok_" + digest[:10],
        label=label,
        providers=providers,
        models=models,
        created_at=time.time() if now is None else now,
        expires_at=expires_at,
        budget_usd=budget_usd,
        token_hash=digest,
    )
    store.put(store_key(digest), record.to_doc(), expires_at=expires_at)
    # The check above and this write are two steps: two admins creating one label at once
    # both passed it, and a revoke by that label then ended only one of the two tokens.
    # Whoever finds another with its label after writing takes its own back (both may,
    # rarely: then neither exists and either may try again).
    if any(r.label == label and r.id != record.id for r in list_tokens(store)):
        store.delete(store_key(digest))
        raise TokenError(
            f"a token labelled {label!r} was created meanwhile; revoke it or pick another label"
        )
    return token, record


def list_tokens(store: Store) -> list[TokenRecord]:
    records = [record_from_item(item) for item in store.scan(KEY_PREFIX)]
    return sorted(records, key=lambda r: r.created_at)


def find_token(store: Store, label_or_id: str) -> TokenRecord:
    matches = [r for r in list_tokens(store) if label_or_id in (r.label, r.id)]
    if not matches:
        raise TokenError(f"no token has the label or id {label_or_id!r}")
    return matches[0]


def revoke_token(store: Store, label_or_id: str) -> TokenRecord:
    record = find_token(store, label_or_id)
    store.delete(store_key(record.token_hash))
    return record


def set_disabled(store: Store, label_or_id: str, disabled: bool) -> TokenRecord:
    record = replace(find_token(store, label_or_id), disabled=disabled)
    # `update`, not `put`: a revoke between the read above and this write must stay a
    # revoke, never come back as an enabled token.
    if not store.update(
        store_key(record.token_hash), record.to_doc(), expires_at=record.expires_at
    ):
        raise TokenError(f"no token has the label or id {label_or_id!r} (revoked meanwhile)")
    return record
