"""Who is calling, as every stage reads it: a label and, for a stored token, its record.

The record (scopes, expiry, budget) is written by core/access/tokens.py and found by
core/access/credentials.py; the request object carries the caller, and the checks above
it read the scopes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from core.token_record import TokenRecord


class Caller(NamedTuple):
    """Who is calling: the shared access token (unscoped) or one stored token."""

    label: str
    record: TokenRecord | None = None
    # True when the token limits providers or models, so unscoped callers skip the check.
    scoped: bool = False
    # When the credential stops working (a stored token's expiry, a JWT's `exp`), epoch
    # seconds: what it mints must not outlive it (core/realtime/minting.py).
    expires_at: float | None = None
    # A person at a page: a signed-in user (JWT) or an anonymous visitor, one of many by
    # design, never holding a token the operator handed out. Refused the routes to objects
    # every caller shares unless ACCOUNT_ROUTES=allow (core/access/account_routes.py).
    end_user: bool = False


SHARED_TOKEN_CALLER = Caller("access-token")
