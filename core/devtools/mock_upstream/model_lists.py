"""Model lists and lookups in each provider's own shape, paged as the providers page them.

- OpenAI (and every OpenAI-compatible path): `GET .../models` is `{"object": "list", "data":
  [...]}`, `GET .../models/{id}` one entry or a 404. The models are `mock-model` unless
  `x-mock-models: a,b,c` names others.
- Anthropic (asked with `anthropic-version`): `GET /v1/models` pages with `limit`,
  `after_id` and `before_id`, and says `has_more`, `first_id` and `last_id`;
  `GET /v1/models/{id}` one model or Anthropic's 404.
- Gemini native: `GET /v1beta/models` (or /v1) pages with `pageSize` and `pageToken`
  and says `nextPageToken`, which is as Gemini's own: opaque to callers, yet the base64 of
  the page's last model name (`models/...`), so a test can tell which model a token
  names; a token it did not hand out is Google's 400. `GET /v1beta/models/{name}` one
  model or Google's 404.

Anthropic's and Gemini's native lists name their own models unless `x-mock-models` names
others (in list order).
- Gemini's OpenAI-compatible surface (`/v1beta/openai/models`) is compat.py's list.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from core.devtools.mock_upstream.compat import ANTHROPIC_MODELS, GEMINI_MODELS, GEMINI_PATH

if TYPE_CHECKING:
    from core.devtools.mock_upstream.framing import Reply

_GEMINI = re.compile(r"^/v1(?:beta)?/models(?:/([^/:]+))?$")
_ANTHROPIC = re.compile(r"^/v1/models(?:/([^/]+))?$")
_OPENAI = re.compile(r"/models(?:/(.+))?$")


def _query(query: str, name: str) -> str:
    return parse_qs(query).get(name, [""])[0]


def _named(headers: dict[str, str], default: tuple[str, ...]) -> list[str]:
    listed = headers.get("x-mock-models")
    if listed is None:
        return list(default)
    return [m for m in (m.strip() for m in listed.split(",")) if m]


async def serve_model_lists(
    method: str, path: str, headers: dict[str, str], query: str, reply: Reply
) -> bool:
    """Answer a model list or lookup; False for any other request."""
    if method != "GET":
        return False
    if path.startswith(GEMINI_PATH):
        found = re.fullmatch(r"/v1beta/openai/models/(.+)", path)
        if found is None:
            return False  # the list: compat.py's
        ids = ["models/" + m for m in GEMINI_MODELS]
        await _openai_lookup(found.group(1), ids, "google", path, reply)
        return True
    if "anthropic-version" in headers:
        found = _ANTHROPIC.fullmatch(path)
        if found is None:
            return False
        await _anthropic(found.group(1), query, _named(headers, ANTHROPIC_MODELS), reply)
        return True
    # Gemini's key header: the default route's `/v1/models` is OpenAI's.
    found = _GEMINI.fullmatch(path) if "x-goog-api-key" in headers else None
    if found is not None:
        await _gemini(found.group(1), query, _named(headers, GEMINI_MODELS), reply)
        return True
    found = _OPENAI.search(path)
    if found is None:
        return False
    listed = [m.strip() for m in headers.get("x-mock-models", "mock-model").split(",")]
    ids = [m for m in listed if m]
    if found.group(1) is None:
        data = [_openai_entry(m, "mock") for m in ids]
        await reply.json(200, {"object": "list", "data": data})
    else:
        await _openai_lookup(found.group(1), ids, "mock", path, reply)
    return True


def _openai_entry(model: str, owner: str) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": 0, "owned_by": owner}


async def _openai_lookup(model: str, ids: list[str], owner: str, path: str, reply: Reply) -> None:
    if model in ids:
        await reply.json(200, _openai_entry(model, owner))
        return
    error = {
        "message": f"mock upstream has no {path}",
        "type": "invalid_request_error",
        "param": None,
        "code": "model_not_found",
    }
    await reply.json(404, {"error": error})


def _anthropic_entry(model: str) -> dict[str, Any]:
    return {
        "type": "model",
        "id": model,
        "display_name": model,
        "created_at": "2025-09-29T00:00:00Z",
    }


async def _anthropic(model: str | None, query: str, models: list[str], reply: Reply) -> None:
    if model is not None:
        if model in models:
            await reply.json(200, _anthropic_entry(model))
        else:
            error = {"type": "not_found_error", "message": f"model: {model}"}
            await reply.json(404, {"type": "error", "error": error, "request_id": "req_mock"})
        return
    limit = int(_query(query, "limit") or 20)
    after, before = _query(query, "after_id"), _query(query, "before_id")
    if before in models:
        end = models.index(before)
        page = models[max(0, end - limit) : end]
        more = end - limit > 0
    else:
        start = models.index(after) + 1 if after in models else 0
        page = models[start : start + limit]
        more = start + limit < len(models)
    await reply.json(
        200,
        {
            "data": [_anthropic_entry(m) for m in page],
            "has_more": more,
            "first_id": page[0] if page else None,
            "last_id": page[-1] if page else None,
        },
    )


def _gemini_entry(model: str) -> dict[str, Any]:
    return {
        "name": f"models/{model}",
        "version": "001",
        "displayName": model,
        "inputTokenLimit": 1048576,
        "outputTokenLimit": 65536,
        "supportedGenerationMethods": ["generateContent", "countTokens"],
    }


def gemini_page_token(model: str) -> str:
    """The token of the page after the one that ends at `model`, as Gemini writes it."""
    return base64.b64encode(f"models/{model}".encode()).decode()


def _gemini_start(token: str, models: list[str]) -> int | None:
    """Where the page `token` asks for begins; None for a token this did not hand out."""
    if not token:
        return 0
    try:
        name = base64.b64decode(token, validate=True).decode().removeprefix("models/")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return models.index(name) + 1 if name in models else None


async def _gemini(model: str | None, query: str, models: list[str], reply: Reply) -> None:
    if model is not None:
        if model in models:
            await reply.json(200, _gemini_entry(model), gemini=True)
        else:
            error = {
                "code": 404,
                "message": f"models/{model} is not found for API version v1beta",
                "status": "NOT_FOUND",
            }
            await reply.json(404, {"error": error}, gemini=True)
        return
    size = int(_query(query, "pageSize") or 50)
    start = _gemini_start(_query(query, "pageToken"), models)
    if start is None:
        error = {"code": 400, "message": "Invalid page token.", "status": "INVALID_ARGUMENT"}
        await reply.json(400, {"error": error}, gemini=True)
        return
    page = models[start : start + size]
    payload: dict[str, Any] = {"models": [_gemini_entry(m) for m in page]}
    if page and start + size < len(models):
        payload["nextPageToken"] = gemini_page_token(page[-1])
    await reply.json(200, payload, gemini=True)
