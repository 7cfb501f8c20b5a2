"""Model lists and lookups held to the rules that refuse a model: ALLOWED_MODELS and the
calling token's model scope (core/access/scopes.py).

A provider's own list (`GET .../models`: OpenAI's and every OpenAI-compatible vendor's,
Anthropic's, Gemini's native `models` pages and its OpenAI-compatible surface's) is relayed
with only the entries those rules let through, in the provider's own shape, every other
field kept (Gemini's `nextPageToken` among them). A lookup (`GET .../models/{id}`) of a
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


class ModelListTicket:
    """A model list to relay filtered by `rules`, in `wire`'s shape."""

    needs_usage = False

    def __init__(self, rules: ModelRules, wire: Wire) -> None:
        self.rules = rules
        self.wire = wire
        self.headers: RawHeaders = []

    async def settle(self, outcome: Outcome) -> None:
        return None

    def filtered(self, body: bytes) -> bytes:
        """The list page `body` with only the entries the rules let through, the rest of
        it as it was (`body` itself when every entry is kept); ValueError when it is not a
        list this can read, which is then not relayed (a leak is worse than no list)."""
        document = json.loads(body)
        wire = self.wire
        if isinstance(document, list):
            # A bare array of models (some OpenAI-compatible vendors answer so).
            kept = self._kept(document)
            return body if len(kept) == len(document) else _dumps(kept)
        if not isinstance(document, dict):
            raise ValueError("not a JSON object")
        field = wire.model_list_field
        if field not in document:
            if any(isinstance(value, list) for value in document.values()):
                raise ValueError(f"no {field!r}, yet a list under another name")
            return body  # an empty page (Google's JSON leaves an empty list out)
        entries = document[field]
        if not isinstance(entries, list):
            raise ValueError(f"{field!r} is not a list")
        kept = self._kept(entries)
        if len(kept) == len(entries):
            return body
        document[field] = kept
        ends = wire.model_list_ends
        if ends is not None:
            name = wire.model_name_field
            if kept:
                # The next page is asked from after the last entry shown: it lists the
                # refused ones again, which are left out again.
                document[ends[0]], document[ends[1]] = kept[0][name], kept[-1][name]
            elif document.get("has_more") is not True:
                document[ends[0]] = document[ends[1]] = None
            # else: nothing to show and more to come: the provider's own cursors, the only
            # ones the next page can be asked from.
        return _dumps(document)

    def _kept(self, entries: list[Any]) -> list[Any]:
        name = self.wire.model_name_field
        visible = self.rules.visible
        return [
            entry
            for entry in entries
            if isinstance(entry, dict) and isinstance(entry.get(name), str) and visible(entry[name])
        ]


def model_list_ticket(tickets: list[Ticket]) -> ModelListTicket | None:
    for ticket in tickets:
        if isinstance(ticket, ModelListTicket):
            return ticket
    return None


def _dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
