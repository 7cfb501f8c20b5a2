"""Model lists and lookups held to the rules that refuse a model: ALLOWED_MODELS and the
calling token's model scope (core/access/scopes.py).

A provider's own list (`GET .../models`: OpenAI's and every OpenAI-compatible vendor's,
Anthropic's, Gemini's native `models` pages and its OpenAI-compatible surface's) is relayed
with only the entries those rules let through, in the provider's own shape, every other
field kept. The way on names only a model the caller is shown: Anthropic's `first_id` /
`last_id` are the first and last entries shown; Gemini's `nextPageToken`, whose bytes name
the page's last model, is the provider's token of a page that ends at the last one shown
(asked again cut short when the last one is refused), or none. A lookup (`GET .../models/{id}`) of a
model they refuse is the provider's own 404, answered here without asking the upstream,
so it tells nothing of what the upstream serves; an allowed lookup goes through as it is.

With no rule that limits models for the caller, none of this runs: the list is relayed
byte for byte. The routed list under MODEL_ROUTES is written by core/proxy/model_list.py,
under the same rules. The reply side (reading the list whole, inflating it, sending the
filtered page) is core/proxy/list_reply.py's.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode

from core.errors import NotFound
from core.protocols import decoded_path

if TYPE_CHECKING:
    from core.protocols import Wire
    from core.request import ProxyRequest
    from core.stages import Outcome, RawHeaders, Ticket
    from core.token_record import TokenRecord

# The models collection as a whole path segment (`/v1/models`, `/v1beta/Models/x`), not
# another collection that ends in it (Gemini's `tunedModels`).
_MODELS_SEGMENT = re.compile(r"/models(?=/|$)", re.IGNORECASE)


class ModelNotFound(NotFound):
    """A model the caller may not use, looked up: OpenAI's code for an unknown model (each
    protocol's error shape says 404 / not found in its own words, core/errors.py)."""

    code = "model_not_found"


def not_found(model: str) -> ModelNotFound:
    return ModelNotFound(f"The model {model[:200]!r} does not exist or is not served here.")


class ModelRules:
    """Which models one caller may see: those ALLOWED_MODELS and its token both allow."""

    __slots__ = ("allowed", "model_allowed", "token")

    def __init__(self, allowed: tuple[str, ...], token: TokenRecord | None) -> None:
        # ALLOWED_MODELS' own test (loaded here: a deployment without rules never needs it).
        from core.access.policy import model_allowed

        self.model_allowed = model_allowed
        self.allowed = allowed
        self.token = token

    def visible(self, model: str) -> bool:
        # Gemini names its models `models/gemini-...`; requests and rules take the bare name.
        model = model.removeprefix("models/")
        if not self.model_allowed(self.allowed, model):
            return False
        return self.token is None or self.token.allows_model(model)


def model_rules(request: ProxyRequest, allowed: tuple[str, ...]) -> ModelRules | None:
    """The rules that limit which models `request`'s caller may see; None when none do."""
    caller = request.caller
    token = caller.record if caller is not None and caller.scoped else None
    if token is not None and not token.models:
        token = None  # scoped to providers only: Authorize decides on the route as a whole
    if not allowed and token is None:
        return None
    return ModelRules(allowed, token)


def model_listing(request: ProxyRequest) -> tuple[bool, str] | None:
    """(True, "") for a model list, (False, name) for one model's lookup, None for any
    other path. Read as the upstream reads the path (decoded, `;x` parameters cut, any
    case), the name with its case kept."""
    path = decoded_path(request.remainder)
    found = _MODELS_SEGMENT.search(path)
    if found is None:
        return None
    rest = path[found.end() + 1 :]
    if not rest:
        return True, ""
    if request.wire.model_name_is_segment:
        # Gemini's `/models/{name}` and what hangs under it; `:` begins a method.
        rest = rest.split("/", 1)[0].split(":", 1)[0]
    return False, rest.removeprefix("models/")


class ModelLists:
    """The check: a lookup of a refused model is refused as not found; a list is admitted
    with a ticket the relay filters it by (core/proxy/list_reply.py)."""

    reads_body = True  # after the model router, which answers the routed list itself

    def __init__(self, allowed_models: tuple[str, ...]) -> None:
        self.allowed_models = allowed_models

    async def admit(self, request: ProxyRequest) -> Ticket | None:
        if request.method not in ("GET", "HEAD"):
            return None
        rules = model_rules(request, self.allowed_models)
        if rules is None:
            return None
        found = model_listing(request)
        if found is None:
            return None
        is_list, model = found
        if not is_list:
            if not rules.visible(model):
                raise not_found(model)
            return None
        # A HEAD has no body to name a model in.
        return ModelListTicket(rules, request.wire) if request.method == "GET" else None


class ListPage:
    """One page of a model list as the upstream sent it: the document, its entries, those
    the rules let through. `body` is the bytes it was read from."""

    __slots__ = ("body", "document", "entries", "kept")

    def __init__(self, body: bytes, document: Any, entries: list[Any], kept: list[Any]) -> None:
        self.body = body
        self.document = document
        self.entries = entries
        self.kept = kept


class ModelListTicket:
    """A model list to relay filtered by `rules`, in `wire`'s shape. The reply side
    (core/proxy/list_reply.py) reads each page with `page`, asks for the next with
    `next_query`, and writes the caller's page with `render`."""

    needs_usage = False

    def __init__(self, rules: ModelRules, wire: Wire) -> None:
        self.rules = rules
        self.wire = wire
        self.headers: RawHeaders = []

    async def settle(self, outcome: Outcome) -> None:
        return None

    def page(self, body: bytes) -> ListPage:
        """`body` read as a list page; ValueError when it is not a list this can read,
        which is then not relayed (a leak is worse than no list)."""
        document = json.loads(body)
        if isinstance(document, list):
            # A bare array of models (some OpenAI-compatible vendors answer so).
            return ListPage(body, document, document, self._kept(document))
        if not isinstance(document, dict):
            raise ValueError("not a JSON object")
        field = self.wire.model_list_field
        if field not in document:
            if any(isinstance(value, list) for value in document.values()):
                raise ValueError(f"no {field!r}, yet a list under another name")
            return ListPage(body, document, [], [])  # Google's JSON leaves an empty list out
        entries = document[field]
        if not isinstance(entries, list):
            raise ValueError(f"{field!r} is not a list")
        return ListPage(body, document, entries, self._kept(entries))

    def next_query(self, page: ListPage, query: bytes) -> bytes | None:
        """The query that asks for the page after `page` (asked with `query`), or None
        when it is the last."""
        document = page.document
        if not isinstance(document, dict):
            return None
        paging = self.wire.model_list_paging
        if paging == "token":
            token = document.get("nextPageToken")
            return _with(query, "pageToken", token) if isinstance(token, str) and token else None
        if paging == "cursor" and document.get("has_more") is True:
            # Paging backwards (`before_id`) goes on from the first entry, else the last.
            backward = any(name == "before_id" for name, _ in parse_qsl(query.decode("latin-1")))
            cursor = document.get("first_id" if backward else "last_id")
            if isinstance(cursor, str) and cursor:
                return _with(query, "before_id" if backward else "after_id", cursor)
        return None

    def cut_query(self, page: ListPage, asked: bytes) -> bytes | None:
        """For a list paged by token, when `page` (asked with `asked`) ends in a refused
        entry: the same page asked again, cut to end at its last entry shown. Else None.

        The provider's page token is opaque, yet Gemini's is the base64 of the page's last
        model name: relayed as it came, it would name a model the caller is refused. The
        token of the cut page names one the caller is shown, and is still the provider's
        own (nothing here reads or writes a token)."""
        if self.wire.model_list_paging != "token" or not page.kept:
            return None
        last = _last_shown(page)
        if last == len(page.entries) - 1:
            return None
        # The caller's size in any spelling goes (protobuf's query names take snake_case).
        pairs = [
            (n, v)
            for n, v in parse_qsl(asked.decode("latin-1"), keep_blank_values=True)
            if n.replace("_", "").lower() != "pagesize"
        ]
        return urlencode([*pairs, ("pageSize", str(last + 1))]).encode("latin-1")

    def cut_next(self, page: ListPage, cut: ListPage, asked: bytes) -> bytes | None:
        """The query going on from `cut` (`page` asked again with `asked`, cut_query's), or
        None unless `cut` is `page`'s entries up to its last one shown, exactly: a page
        that differs (the list changed, the size was not honoured) could carry a token past
        what the caller was shown, or naming what it was not."""
        name = self.wire.model_name_field
        want = page.entries[: _last_shown(page) + 1]
        if len(cut.entries) != len(want) or len(cut.kept) != len(page.kept):
            return None
        for got, expected in zip(cut.entries, want, strict=True):
            if not isinstance(got, dict) or got.get(name) != expected.get(name):
                return None
        return self.next_query(cut, asked)

    def render(self, page: ListPage, more: bytes | None, walked: bool) -> bytes:
        """The caller's page: `page`'s entries the rules let through, every other field as
        it was, and the way on: `more`, the query of the next page holding any (None: no
        page after this one shows anything). `walked`: pages were read past `page`, so its
        own way on may skip some. `page.body` itself when nothing changed."""
        document = page.document
        if len(page.kept) == len(page.entries) and not walked:
            return page.body
        if isinstance(document, list):
            return _dumps(page.kept)
        if page.entries or self.wire.model_list_field in document:
            document[self.wire.model_list_field] = page.kept
        paging = self.wire.model_list_paging
        if paging == "token":
            if more is None:
                document.pop("nextPageToken", None)
            else:
                document["nextPageToken"] = _param(more, "pageToken")
        elif paging == "cursor":
            name = self.wire.model_name_field
            if page.kept:
                # The next page is asked from after the last entry shown: the refused ones
                # past it are read again, and left out again.
                document["has_more"] = more is not None
                document["first_id"], document["last_id"] = page.kept[0][name], page.kept[-1][name]
            else:
                # Nothing shown, even past the pages walked: the only cursor that would go
                # on is a model id the rules refuse (the last one read), so the list ends
                # here rather than name it. A larger `limit` reads further.
                document["has_more"] = False
                document["first_id"] = document["last_id"] = None
        return _dumps(document)

    def _kept(self, entries: list[Any]) -> list[Any]:
        name = self.wire.model_name_field
        visible = self.rules.visible
        return [
            entry
            for entry in entries
            if isinstance(entry, dict) and isinstance(entry.get(name), str) and visible(entry[name])
        ]


def _last_shown(page: ListPage) -> int:
    """The index among `page.entries` of its last entry shown (`page.kept` is not empty)."""
    last = page.kept[-1]
    return next(i for i in range(len(page.entries) - 1, -1, -1) if page.entries[i] is last)


def model_list_ticket(tickets: list[Ticket]) -> ModelListTicket | None:
    for ticket in tickets:
        if isinstance(ticket, ModelListTicket):
            return ticket
    return None


def _with(query: bytes, name: str, value: str) -> bytes:
    """`query` with `name` set to `value` (added, or replacing what it had)."""
    pairs = [(n, v) for n, v in parse_qsl(query.decode("latin-1"), keep_blank_values=True)]
    pairs = [(n, v) for n, v in pairs if n != name] + [(name, value)]
    return urlencode(pairs).encode("latin-1")


def _param(query: bytes, name: str) -> str | None:
    for found, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if found == name:
            return value
    return None


def _dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
