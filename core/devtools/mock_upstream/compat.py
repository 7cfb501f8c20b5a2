"""The mock upstream's OpenAI-compatible surfaces of other providers (MODEL_ROUTES).

The mock already answers OpenAI's chat completions, embeddings and model list under any
prefix. What differs per provider is served here:

- Gemini's surface at `/v1beta/openai/...`: its model list names `models/gemini-...`;
  chat (streamed and not, usage when asked, tools) and embeddings as OpenAI's.
- Anthropic's OpenAI SDK compatibility at `/v1/...`, recognised by the `anthropic-version`
  header its model list is asked with: claude-* models; no embeddings (404, as Anthropic).
- `x-mock-fail-models: a,b` answers 503 to a request whose JSON `model` is one of those, so
  a test can fail one model of a fallback chain and not the next.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.devtools.mock_upstream.framing import Reply

GEMINI_PATH = "/v1beta/openai/"
GEMINI_MODELS = ("gemini-2.5-pro", "gemini-2.5-flash", "text-embedding-004")
ANTHROPIC_MODELS = ("claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1")


def _model(body: bytes) -> str:
    try:
        document = json.loads(body) if body else {}
    except ValueError:
        return ""
    model = document.get("model") if isinstance(document, dict) else None
    return model if isinstance(model, str) else ""


async def serve_compat(path: str, headers: dict[str, str], body: bytes, reply: Reply) -> bool:
    """Answer what only a provider's OpenAI-compatible surface answers; False otherwise
    (the mock's OpenAI handlers then serve the request)."""
    from core.devtools.mock_upstream.errors import error_payload as _error_payload

    failing = {m.strip() for m in headers.get("x-mock-fail-models", "").split(",") if m.strip()}
    if failing and _model(body) in failing:
        await reply.json(503, _error_payload(path, 503))
        return True
    anthropic = "anthropic-version" in headers and path.startswith("/v1/")
    if path.startswith(GEMINI_PATH) and path.endswith("/models"):
        await reply.json(200, _model_list(("models/" + m for m in GEMINI_MODELS), "google"))
        return True
    if anthropic and path.endswith("/models"):
        # Anthropic's own list shape (type, display_name), which also carries `id`.
        data = [
            {"type": "model", "id": m, "display_name": m, "created_at": "2025-09-29T00:00:00Z"}
            for m in ANTHROPIC_MODELS
        ]
        await reply.json(200, {"data": data, "has_more": False})
        return True
    if anthropic and path.endswith("/embeddings"):
        payload = {
            "type": "error",
            "error": {"type": "not_found_error", "message": "Not found"},
        }
        await reply.json(404, payload)
        return True
    return False


def _model_list(models: Any, owner: str) -> dict[str, Any]:
    data = [{"id": m, "object": "model", "created": 0, "owned_by": owner} for m in models]
    return {"object": "list", "data": data}
