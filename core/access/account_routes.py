"""Account routes: requests that read or change objects stored in the provider account.

Every caller of the proxy uses the key owner's account, so a file, a stored response or a
batch one caller made there is every caller's to list, read, change or delete. Each
protocol lists these routes in one table (core/protocols.py `AccountRoutes`). This check
refuses them, on the head alone and before any upstream call:

- to every caller while ACCOUNT_ROUTES=refuse;
- to signed-in users (JWT) and anonymous callers unless ACCOUNT_ROUTES=allow: each is one
  of many people at a page by design (anyone who can sign up, or any visitor), so what one
  stored is not another's to list, read or delete;
- always to a stored token limited to some models or providers: its owner meant it for
  generation, and its scope cannot follow an object from one caller to another.

Model lists and lookups, generation (a stored response's `store: true` too), realtime,
minting and Gemini's file uploads are no account routes, and stay as they were.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.errors import Forbidden

if TYPE_CHECKING:
    from core.request import ProxyRequest
    from core.stages import Ticket


class AccountRouteRefused(Forbidden):
    """A request for objects stored in the shared provider account, refused."""

    code = "account_route_refused"


class AccountRoutes:
    """The check: refuses an account route under ACCOUNT_ROUTES=refuse, to a signed-in user
    or an anonymous caller unless ACCOUNT_ROUTES=allow, or to a scoped token."""

    reads_body = False

    def __init__(self, refuse: bool, *, refuse_end_users: bool = False) -> None:
        self.refuse = refuse
        self.refuse_end_users = refuse_end_users

    async def check_open(self, request: ProxyRequest) -> None:
        """A read still relayed (a stored response's events, a file's content), checked
        again: a token narrowed to some models or providers meanwhile loses it, as its
        next request would be refused (core/proxy/endpoint.py `recheck`)."""
        await self.admit(request)

    async def admit(self, request: ProxyRequest) -> Ticket | None:
        if request.upload_leg:
            return None  # its upload_id was issued for a start this check let through
        caller = request.caller
        scoped = caller is not None and caller.scoped
        end_user = self.refuse_end_users and caller is not None and caller.end_user
        if not (self.refuse or scoped or end_user):
            return None
        collection = request.wire.account_route(request.method, request.path)
        if collection is None:
            return None
        stored = (
            f"This route ({request.method} {collection}) reads or changes objects stored in "
            "the provider account, which every caller of this proxy shares"
        )
        if self.refuse:
            raise AccountRouteRefused(
                f"{stored}; the proxy's operator refuses such routes (ACCOUNT_ROUTES=refuse)."
            )
        if end_user:
            raise AccountRouteRefused(
                f"{stored}; signed-in users and anonymous callers may not use them unless "
                "the proxy's operator sets ACCOUNT_ROUTES=allow."
            )
        raise AccountRouteRefused(
            f"{stored}; a token limited to some models or providers may not use them "
            "(ACCOUNT_ROUTES allows them only to unscoped callers)."
        )
