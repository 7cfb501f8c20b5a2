"""Errors in each provider's own shape and type names, for `x-mock-status` and unknown
paths."""

from __future__ import annotations

from typing import Any


def is_gemini_path(path: str) -> bool:
    return "/models/" in path and ":" in path.rsplit("/", 1)[-1]


_ANTHROPIC_ERRORS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


_GOOGLE_STATUSES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    501: "NOT_IMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def error_payload(path: str, status: int) -> dict[str, Any]:
    """An error in the shape (and with the type names) each provider uses for the status."""
    message = f"mock error {status}"
    if "/messages" in path:
        kind = _ANTHROPIC_ERRORS.get(status, "api_error")
        return {
            "type": "error",
            "error": {"type": kind, "message": message},
            "request_id": "req_mock",
        }
    if is_gemini_path(path):
        google = _GOOGLE_STATUSES.get(status, "INTERNAL")
        return {"error": {"code": status, "message": message, "status": google}}
    if status == 429:
        kind, code = "requests", "rate_limit_exceeded"
    elif status < 500:
        kind, code = "invalid_request_error", None
    else:
        kind, code = "server_error", None
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def not_found(path: str) -> dict[str, Any]:
    if is_gemini_path(path):
        return {"error": {"code": 404, "message": f"mock has no {path}", "status": "NOT_FOUND"}}
    return {
        "error": {
            "message": f"mock upstream has no {path}",
            "type": "invalid_request_error",
            "param": None,
            "code": "unknown_url",
        }
    }
