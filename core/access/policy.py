"""Request policy: which models, how many output tokens, how many messages.

Checked on the parsed JSON body before anything goes upstream. ALLOWED_MODELS holds for
every request that may spend (generations, embeddings, minted keys, realtime sessions,
core/realtime/): each must name a model on the list, since one that names none gets the
provider's default; only reads and file uploads name none. The caps hold for every route
that generates text (the provider's protocol says which: core/protocols.py). What the
policy cannot read is refused while it is on: a compressed or non-JSON body on a
generating route, batch routes, whose requests run later outside any reply, generating
routes in shapes it does not read (an Assistants run), images
and video (under MAX_TOKENS_CAP), and realtime sessions and the keys minted for
them, whose responses run in frames no body check reads. Mistral's conversations are read
(`completion_args.max_tokens`, `inputs`), but one run by an agent is refused under
MAX_TOKENS_CAP: the agent's own settings are out of sight.

A refusal names its rule (the setting) so whoever reads the error knows what to change:
403 for a model the deployment does not serve, 400 for a request shape over a cap. The
body size cap is MAX_BODY_BYTES (413), checked earlier while the body is read.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.errors import BadRequest, Forbidden
from core.protocols import (
    CONVERSATION_CAP,
    CONVERSATIONS,
    MODEL_IN_FORM,
    OTHER_OUTPUT_CAPS,
    WRITES_MEDIA,
    UnreadableCount,
    conversation_agent,
)
from core.request import NotUnicode

if TYPE_CHECKING:
    from core.protocols import Route
    from core.request import ProxyRequest
    from core.stages import Ticket


def model_allowed(patterns: tuple[str, ...], model: str) -> bool:
    """Whether ALLOWED_MODELS (`patterns`, none: every model) lets `model` through: the
    requests' check and the routed model list's (core/proxy/model_list.py) are this one."""
    return not patterns or any(fnmatch.fnmatchcase(model, pattern) for pattern in patterns)


def runs_a_model(route: Route) -> bool:
    """Whether a route may run a model: a generation, an embedding, a realtime session, a
    minted key, a batch. Asked without one, the provider runs its default (a minted Gemini
    token opens any Live model), so under ALLOWED_MODELS such a request must name one. Only
    an unreadable route that generates nothing (a file upload) may name none; a form that
    runs a model (a transcription, an image edit) runs the provider's default without one."""
    return route.kind != "unreadable" or route.generates or route in MODEL_IN_FORM


class PolicyRefused(BadRequest):
    code = "policy_violation"


class ModelNotAllowed(Forbidden):
    code = "model_not_allowed"


@dataclass(frozen=True)
class RequestPolicy:
    allowed_models: tuple[str, ...] = ()
    max_tokens_cap: int = 0
    max_messages: int = 0

    reads_body = True

    async def check_settings(self, request: ProxyRequest) -> None:
        """A realtime session's new settings: the models they name, checked again."""
        await self.admit(request)

    async def check_continuation(self, request: ProxyRequest, document: dict[str, Any]) -> None:
        """A continuation the proxy asks of a broken stream (core/proxy/recovery.py): the
        same request with more turns and a lower output cap, held to the same caps. Its
        model and route are the request's, admitted already."""
        if self.max_messages:
            self._check_messages(request, document)
        if self.max_tokens_cap:
            self._check_output_cap(request, document)

    async def admit(self, request: ProxyRequest) -> Ticket | None:
        """Raise ModelNotAllowed / PolicyRefused if the request breaks a rule."""
        route = request.route
        if route.kind == "free":
            if self.allowed_models and request.method == "POST" and not request.upload_leg:
                # A free call that names a model (counting tokens: Gemini's countTokens,
                # Anthropic's count_tokens, OpenAI's input_tokens) spends nothing, yet the
                # upstream's answer tells whether it serves the model: a lookup by another
                # name, which for a refused model is answered here (core/access/model_lists.py).
                await self._check_model(request, required=False)
            return None
        if self.allowed_models:
            await self._check_model(request)
        if not (self.max_messages or self.max_tokens_cap):
            return None
        if route.kind == "minting" or route.name == "realtime":
            # A realtime session (through the proxy, or with a key minted for it) runs
            # responses that ask for no output cap (the default is the model's whole limit)
            # over a conversation that grows each turn, in frames no body check reads.
            raise PolicyRefused(
                "Policy: a realtime session (or an ephemeral key for one) runs responses "
                "the proxy cannot hold to MAX_TOKENS_CAP / MAX_MESSAGES: refused while "
                "they are set."
            )
        if not route.generates:
            return None
        if route in WRITES_MEDIA:
            if not self.max_tokens_cap:
                return None  # an image or a video has no conversation to count
            raise PolicyRefused(
                f"Policy MAX_TOKENS_CAP: {request.remainder[:200]!r} writes images or video, "
                "billed by how much it writes, and no field of it is one the proxy can hold "
                "to MAX_TOKENS_CAP: refused while it is set."
            )
        if route.kind == "unreadable" and route not in CONVERSATIONS:
            what = "a batch" if route.name == "batch" else "its caps are not ones it reads"
            raise PolicyRefused(
                f"Policy: {request.remainder[:200]!r} runs requests the proxy cannot check "
                f"against MAX_TOKENS_CAP / MAX_MESSAGES ({what}): refused while they are set."
            )
        document = await request.document()
        if not isinstance(document, dict):
            raise PolicyRefused(
                "Policy: the request body is not a JSON object the proxy can read (compressed, "
                "or another format), so it cannot be checked against its rules."
            )
        if self.max_messages:
            self._check_messages(request, document)
        if self.max_tokens_cap:
            self._check_output_cap(request, document)
        return None

    async def _check_model(self, request: ProxyRequest, required: bool = True) -> None:
        if request.encoded:
            raise PolicyRefused(
                "Policy ALLOWED_MODELS: the request body is compressed, so the proxy cannot "
                "read its model."
            )
        try:
            model = await request.model()
        except NotUnicode:
            raise  # parsed, and says what is wrong with it
        except BadRequest:
            if request.body.lstrip()[:1] in (b"{", b"["):
                # Shaped like JSON yet not JSON to Python (invalid UTF-8, sent as text/plain
                # so the JSON check skips it): a lenient provider may still read a model
                # from it that no rule here has seen.
                raise PolicyRefused(
                    "Policy: the request body is not valid JSON, so the proxy cannot "
                    "check it against its rules."
                ) from None
            raise
        if model is None:
            if not required:
                return
            if not runs_a_model(request.route) and await request.document() is None:
                return  # a file upload: its body is not JSON, and it runs no model
            raise ModelNotAllowed(
                "Policy ALLOWED_MODELS: this proxy serves only some models, and the request "
                "names none (set 'model')."
            )
        # A realtime session's transcription model runs beside it, on the same bill.
        for named in (model, *await request.other_models()):
            if not model_allowed(self.allowed_models, named):
                raise ModelNotAllowed(
                    f"Policy ALLOWED_MODELS: the model {named[:200]!r} is not served by this "
                    f"proxy (allowed: {', '.join(self.allowed_models)})."
                )

    def _check_messages(self, request: ProxyRequest, document: dict[str, Any]) -> None:
        name, count = request.wire.conversation_length(request.route, document)
        if count > self.max_messages:
            raise PolicyRefused(
                f"Policy MAX_MESSAGES: the request has {count} {name}; "
                f"this proxy accepts at most {self.max_messages}."
            )

    def _check_output_cap(self, request: ProxyRequest, document: dict[str, Any]) -> None:
        cap = self.max_tokens_cap
        wire = request.wire
        route = request.route
        if route in CONVERSATIONS:
            agent = conversation_agent(document)
            if agent is not None:
                # The agent's completion settings (its cap among them) are stored at the
                # provider and may ask for more than the request's completion_args.
                raise PolicyRefused(
                    f"Policy MAX_TOKENS_CAP: a conversation run by an agent ({agent[:40]}) "
                    "writes under the agent's own settings, which the proxy cannot read: "
                    "refused while it is set. Name a model instead."
                )
        asked = wire.output_caps(document, route)
        if route in CONVERSATIONS and not any(name == CONVERSATION_CAP for name, _ in asked):
            raise PolicyRefused(f"Policy MAX_TOKENS_CAP: set {CONVERSATION_CAP} to at most {cap}.")
        if all(name in OTHER_OUTPUT_CAPS for name, _ in asked):
            # Without a cap the model may write until its own maximum, on the key owner's bill.
            raise PolicyRefused(
                f"Policy MAX_TOKENS_CAP: set max_tokens (or max_completion_tokens, "
                f"max_output_tokens, generationConfig.maxOutputTokens) to at most {cap}."
            )
        try:
            answers = wire.answers(document)
        except UnreadableCount as exc:
            # Not one answer by default: the upstream may read it as many.
            raise PolicyRefused(
                f"Policy MAX_TOKENS_CAP: the answer count (n, best_of or candidateCount) must "
                f"be a whole number: {exc}."
            ) from None
        for name, value in asked:
            if value is None:
                raise PolicyRefused(
                    f"Policy MAX_TOKENS_CAP: {name} must be a number of at most {cap}."
                )
            # Below 1 is no cap to some servers: -1 is "no limit" to llama.cpp's server and
            # LM Studio, and 0 to others; the API's own refusal is not relied on.
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= cap:
                raise PolicyRefused(
                    f"Policy MAX_TOKENS_CAP: {name} is {str(value)[:40]}; "
                    f"this proxy allows 1 to {cap}."
                )
            if value * answers > cap:
                raise PolicyRefused(
                    f"Policy MAX_TOKENS_CAP: {answers} answers of up to {value} tokens each "
                    f"(n, best_of, candidateCount or a list of prompts) is more than {cap} in all."
                )
