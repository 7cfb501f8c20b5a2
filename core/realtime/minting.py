"""Ephemeral keys: short-lived provider keys minted through the proxy for a browser or app
that opens its realtime session with the provider directly (OpenAI
`POST /v1/realtime/client_secrets`, `/realtime/sessions`, `/realtime/transcription_sessions`;
Gemini `POST /v1alpha/auth_tokens`), and OpenAI's ChatKit sessions (`POST /v1/chatkit/
sessions`), whose client secret runs an agent workflow from the browser the same way.

Such a key spends the owner's money outside the proxy, so minting is off unless the
operator sets ALLOW_EPHEMERAL_KEYS=true, and when on:

- the caller's scopes and ALLOWED_MODELS apply to the session's model (the protocol says
  where it sits: core/protocols.py `Wire.model_in`), through the usual Authorize and policy;
  a mint that names no model is refused while either is in force, and a Gemini token must
  also lock its model (`bidiGenerateContentSetup.model`, kept by `fieldMask`), since an
  unlocked one opens any Live model;
- the key lives at most ten minutes, never past the expiry of the credential that minted
  it (a stored token's, a JWT's `exp`) nor past the start of the next offline window of the
  dashboard's schedule (the proxy cannot revoke the key, so it must not outlive what the
  proxy would refuse, where that is known in advance), and, for Gemini, opens one session: the small
  JSON body is parsed, its expiry fields are capped (inserted where the provider's default
  is longer) and it is re-serialised, so the provider reads exactly what was checked;
- each minted key counts as a request and is charged EPHEMERAL_KEY_TOKENS against the
  caller's token limit and budget, never refunded: what the key spends is never seen here.
  A refusal by the provider (no key minted) charges nothing.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from core.errors import BadRequest, Forbidden
from core.protocols import AmbiguousModel, Usage, field_in, token_setup_keeps

if TYPE_CHECKING:
    from core.access.status import ServiceStatus
    from core.request import ProxyRequest
    from core.stages import Outcome, RawHeaders, Ticket

# The longest an ephemeral key minted here may live, in seconds.
MAX_KEY_SECONDS = 600
# How long OpenAI's beta `realtime/sessions` secret lives when the body does not say, and
# how long a Gemini auth token may start a session when its `newSessionExpireTime` does not.
SESSION_SECRET_DEFAULT_SECONDS = 60
NEW_SESSION_DEFAULT_SECONDS = 60


class RealtimeCallRefused(Forbidden):
    code = "realtime_call_refused"


class LiveModelUnlocked(Forbidden):
    """A Gemini auth token that would let its holder choose the model, while a rule limits
    the models (ALLOWED_MODELS, a model-scoped token)."""

    code = "model_not_allowed"


class EphemeralKeys:
    """Caps a minting request's expiry and use count; charges the key a fixed worst case."""

    reads_body = True

    def __init__(
        self,
        key_tokens: int,
        clock: Any = None,
        models_listed: bool = False,
        status: ServiceStatus | None = None,
    ) -> None:
        self.key_tokens = key_tokens
        self.clock = clock or (lambda: datetime.datetime.now(datetime.UTC))
        # ALLOWED_MODELS is set: every key must be held to a model it lists.
        self.models_listed = models_listed
        # The kill switch's schedule, where there is one: a key ends when it goes offline.
        self.status = status

    def models_ruled(self, request: ProxyRequest) -> bool:
        """Whether a rule limits this caller's models: ALLOWED_MODELS or its token's scope."""
        if self.models_listed:
            return True
        caller = request.caller
        record = caller.record if caller is not None else None
        return record is not None and bool(record.models)

    def key_seconds(self, request: ProxyRequest) -> int:
        """How long a key minted now may live: ten minutes, and never past the expiry of
        the caller's credential nor the start of the schedule's next offline window (at
        least a second: the identify stage and the kill switch refused it if either had
        already come)."""
        now = self.clock().timestamp()
        caller = request.caller
        expires_at = caller.expires_at if caller is not None else None
        ends = [] if expires_at is None else [expires_at]
        if self.status is not None and (offline := self.status.online_until(now)) is not None:
            ends.append(offline)
        if not ends:
            return MAX_KEY_SECONDS
        return max(1, min(MAX_KEY_SECONDS, int(min(ends) - now)))

    async def admit(self, request: ProxyRequest) -> Ticket | None:
        if request.route.kind != "minting":
            return None
        if request.route.name == "realtime-call":
            # The proxy can neither read an SDP offer's session nor end the call it makes.
            raise RealtimeCallRefused(
                "This proxy does not create WebRTC or SIP realtime calls "
                f"({request.remainder[:100]!r}): mint a client secret (POST "
                "/v1/realtime/client_secrets) and open the call with the provider using it, "
                "or open a WebSocket session through the proxy."
            )
        document = await request.document()
        if document is None and not request.body.strip():
            document = {}
        if not isinstance(document, dict):
            raise BadRequest("An ephemeral-key request needs a JSON object body.")
        # A model named in two places or spellings is refused even where no rule reads it.
        await request.model()
        seconds = self.key_seconds(request)
        if request.provider.mints_auth_tokens:
            if self.models_ruled(request):
                require_locked_model(document)
            cap_gemini_token(document, self.clock(), seconds)
        elif request.path.replace("_", "").endswith(("/clientsecrets", "/chatkit/sessions")):
            # A ChatKit session's `expires_after` is a client secret's, top-level too.
            cap_openai_client_secret(document, seconds)
        else:
            cap_openai_session_secret(document, seconds)
        request.body = json.dumps(document, separators=(",", ":")).encode()
        return MintedKey(Usage(0, self.key_tokens))


@dataclass
class MintedKey:
    """Settles before the limit and budget tickets: a minted key is charged its worst case
    as if metered, so they keep it and the ledger records it."""

    charged: Usage
    headers: RawHeaders = field(default_factory=list)
    needs_usage: bool = False

    async def settle(self, outcome: Outcome) -> None:
        if outcome.billable and outcome.usage is None:
            outcome.usage = self.charged
            outcome.complete = True


def _spelling(name: str) -> str:
    # `expires_after`, `expiresAfter` and `EXPIRES_AFTER` are one field to some decoder.
    return name.replace("_", "").casefold()


def _pop(document: dict[str, Any], name: str) -> Any:
    """Remove every spelling of `name`; the value of the last one, or None."""
    value = None
    for key in [key for key in document if _spelling(key) == _spelling(name)]:
        value = document.pop(key)
    return value


def _seconds(value: Any, most: int) -> int:
    good = isinstance(value, int) and not isinstance(value, bool) and 0 < value <= most
    return value if good else most


def cap_openai_client_secret(document: dict[str, Any], most: int = MAX_KEY_SECONDS) -> None:
    """`expires_after` set to at most `most` seconds (OpenAI's default is ten minutes, up
    to two hours when asked): inserted when absent, so a changed default changes nothing."""
    after = _pop(document, "expires_after")
    seconds = after.get("seconds") if isinstance(after, dict) else None
    document["expires_after"] = {"anchor": "created_at", "seconds": _seconds(seconds, most)}


def cap_openai_session_secret(document: dict[str, Any], most: int = MAX_KEY_SECONDS) -> None:
    """Beta `realtime/sessions`: `client_secret.expires_after` capped at `most` seconds
    when given, and inserted when the default (one minute) would be longer."""
    secret = _pop(document, "client_secret")
    if secret is None:
        if most >= SESSION_SECRET_DEFAULT_SECONDS:
            return
        secret = {}
    if not isinstance(secret, dict):
        secret = {}
    after = _pop(secret, "expires_after")
    seconds = after.get("seconds") if isinstance(after, dict) else None
    secret["expires_after"] = {"anchor": "created_at", "seconds": _seconds(seconds, most)}
    document["client_secret"] = secret


def require_locked_model(document: dict[str, Any]) -> None:
    """Refuse a Gemini auth token whose Live model is not fixed by the token itself.

    Google applies `bidiGenerateContentSetup` to the session the token opens; with a
    non-empty `fieldMask`, only the fields it lists, the rest coming from the holder's own
    setup message. The model checked here is the one used only when it sits in that setup
    and the mask (if any) keeps it."""
    try:
        setup = field_in(document, "bidiGenerateContentSetup")
        model = field_in(setup, "model") if isinstance(setup, dict) else None
        locked = token_setup_keeps(document, "model")
    except AmbiguousModel as exc:
        raise BadRequest(f"The request names one field twice ({exc}): name it once.") from None
    if not isinstance(model, str) or not model:
        raise LiveModelUnlocked(
            "Models are limited here (ALLOWED_MODELS or this token's scope), and a Gemini "
            "auth token opens any Live model unless it names one: set "
            "bidiGenerateContentSetup.model (liveConnectConstraints.model in the SDKs)."
        )
    if not locked:
        raise LiveModelUnlocked(
            "Models are limited here (ALLOWED_MODELS or this token's scope): a Gemini auth "
            "token's fieldMask must include 'model', or the token's holder chooses it."
        )


def _rfc3339(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(value: Any) -> datetime.datetime | None:
    if not isinstance(value, str):
        return None
    text = value.strip().replace("z", "Z")
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    # Protobuf may send nanoseconds; Python reads at most microseconds.
    head, dot, rest = text.partition(".")
    if dot:
        digits = "".join(ch for ch in rest if ch.isdigit())
        text = head + "." + digits[:6] + rest[len(digits) :]
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def cap_gemini_token(
    document: dict[str, Any], now: datetime.datetime, most: int = MAX_KEY_SECONDS
) -> None:
    """`expireTime` at most `most` seconds away (inserted: Google's default is 30 minutes),
    `newSessionExpireTime` capped when given or when its default (one minute) is longer than
    `most`, `uses` exactly 1."""
    latest = now + datetime.timedelta(seconds=most)
    late_sessions = most < NEW_SESSION_DEFAULT_SECONDS
    for name, insert in (("expireTime", True), ("newSessionExpireTime", late_sessions)):
        given = _pop(document, name)
        if given is None and not insert:
            continue
        moment = _parse_time(given)
        document[name] = _rfc3339(moment if moment is not None and moment < latest else latest)
    _pop(document, "uses")
    document["uses"] = 1
