"""Request policy: which models, how many output tokens, how many messages.

Checked on the parsed JSON body before anything goes upstream. A refusal names its rule
(the setting) so whoever reads the error knows what to change: 403 for a model the
deployment does not serve, 400 for a request shape over a cap. The body size cap is
MAX_BODY_BYTES (413), checked earlier while the body is read.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any

from core.access.tokens import load_request_json, model_of_request
from core.errors import BadRequest, Forbidden

# Every field name a provider reads its output cap from (OpenAI chat and Responses,
# Anthropic, Gemini's generationConfig).
_OUTPUT_CAP_FIELDS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
# Bodies that generate text, by the field that holds the conversation.
_CONVERSATION_FIELDS = ("messages", "contents", "input", "prompt")


class PolicyRefused(BadRequest):
    code = "policy_violation"


class ModelNotAllowed(Forbidden):
    code = "model_not_allowed"


@dataclass(frozen=True)
class RequestPolicy:
    allowed_models: tuple[str, ...] = ()
    max_tokens_cap: int = 0
    max_messages: int = 0

    def check(self, method: str, remainder: str, model_in_path: str, body: bytes) -> None:
        """Raise ModelNotAllowed / PolicyRefused if the request breaks a rule."""
        document: Any = None
        if body:
            try:
                document = load_request_json(body)
            except ValueError:
                # Shaped like JSON yet not JSON to Python (invalid UTF-8, sent as text/plain
                # so the proxy's own JSON check skips it): a lenient provider may still read
                # a model and a token cap from it that no rule below has seen.
                if body.lstrip()[:1] in (b"{", b"["):
                    raise PolicyRefused(
                        "Policy: the request body is not valid JSON, so the proxy cannot "
                        "check it against its rules."
                    ) from None
                document = None  # not JSON (an upload): only the path can name a model
        if not isinstance(document, dict):
            document = {}
        if self.allowed_models:
            self._check_model(method, remainder, model_in_path, body, document)
        generates = any(name in document for name in _CONVERSATION_FIELDS)
        if self.max_messages and generates:
            self._check_messages(document)
        if self.max_tokens_cap and generates:
            self._check_output_cap(document)

    def _check_model(
        self, method: str, remainder: str, model_in_path: str, body: bytes, document: dict[str, Any]
    ) -> None:
        model = (
            model_of_request(body, remainder, model_in_path) if document or model_in_path else None
        )
        if model is None:
            if method in ("GET", "HEAD"):
                return  # listing models spends nothing
            if not document:
                return  # a body that is not JSON (file upload) names no model to check
            raise ModelNotAllowed(
                "Policy ALLOWED_MODELS: this proxy serves only some models, and the request "
                "names none (set 'model')."
            )
        if not any(fnmatch.fnmatchcase(model, pattern) for pattern in self.allowed_models):
            raise ModelNotAllowed(
                f"Policy ALLOWED_MODELS: the model {model[:200]!r} is not served by this proxy "
                f"(allowed: {', '.join(self.allowed_models)})."
            )

    def _check_messages(self, document: dict[str, Any]) -> None:
        for name in ("messages", "contents", "input"):
            value = document.get(name)
            if isinstance(value, list) and len(value) > self.max_messages:
                raise PolicyRefused(
                    f"Policy MAX_MESSAGES: the request has {len(value)} {name}; "
                    f"this proxy accepts at most {self.max_messages}."
                )

    def _check_output_cap(self, document: dict[str, Any]) -> None:
        cap = self.max_tokens_cap
        asked: list[tuple[str, Any]] = [
            (name, document[name]) for name in _OUTPUT_CAP_FIELDS if name in document
        ]
        config = document.get("generationConfig") or document.get("generation_config")
        if isinstance(config, dict):
            for name in ("maxOutputTokens", "max_output_tokens"):
                if name in config:
                    asked.append((f"generationConfig.{name}", config[name]))
        if not asked:
            # Without a cap the model may write until its own maximum, on the key owner's bill.
            raise PolicyRefused(
                f"Policy MAX_TOKENS_CAP: set max_tokens (or max_completion_tokens, "
                f"max_output_tokens, generationConfig.maxOutputTokens) to at most {cap}."
            )
        for name, value in asked:
            if value is None:
                raise PolicyRefused(
                    f"Policy MAX_TOKENS_CAP: {name} must be a number of at most {cap}."
                )
            if not isinstance(value, int) or isinstance(value, bool) or value > cap:
                raise PolicyRefused(
                    f"Policy MAX_TOKENS_CAP: {name} is {str(value)[:40]}; "
                    f"this proxy allows at most {cap}."
                )
