"""A stored token's record: its id and label, what it may reach, its budget and expiry.

Its own module, below core/caller.py: the record is read only where a token store is
configured (core/access/tokens.py), so a deployment with none never builds its class.
"""

from __future__ import annotations

import fnmatch
from dataclasses import asdict, dataclass, field


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
