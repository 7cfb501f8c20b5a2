"""Who is calling, as every stage reads it: a label and, for a stored token, its record.

The record (scopes, expiry, budget) is written by core/access/tokens.py and found by
core/access/credentials.py; the request object carries the caller, and the checks above
it read the scopes.
"""

from __future__ import annotations

import fnmatch
from dataclasses import asdict, dataclass, field
from typing import NamedTuple


@dataclass(frozen=True)
class TokenRecord:
    """A stored token as the store holds it: its id and label, and what it may reach."""

    id: str
    label: str
    providers: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    created_at: float = 0.0
    expires_at: float | None = None
    disabled: bool = False
    # A spending cap in USD for the budget stage to enforce; None means no cap.
    budget_usd: float | None = None
    # Filled from the store's own column, never written with the document.
    last_used: float | None = field(default=None, compare=False)
    token_hash: str = field(default="", compare=False)

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and self.expires_at <= now

    def allows_provider(self, provider: str) -> bool:
        return not self.providers or provider in self.providers

    def allows_model(self, model: str) -> bool:
        return not self.models or any(fnmatch.fnmatchcase(model, p) for p in self.models)

    def to_doc(self) -> dict[str, object]:
        doc = asdict(self)
        del doc["last_used"], doc["token_hash"]
        return doc


class Caller(NamedTuple):
    """Who is calling: the shared access token (unscoped) or one stored token."""

    label: str
    record: TokenRecord | None = None
    # True when the token limits providers or models, so unscoped callers skip the check.
    scoped: bool = False


SHARED_TOKEN_CALLER = Caller("access-token")
