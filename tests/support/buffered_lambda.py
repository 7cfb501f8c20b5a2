"""handlers.aws.buffered imported and invoked the way Lambda does it (tests/handlers/aws and
the dashboard through the Mangum handler in tests/admin)."""

from __future__ import annotations

import base64
import importlib
import json
import os
import sys
from types import ModuleType
from typing import Any
from unittest import mock


class Context:
    """The parts of Lambda's context object that handlers read."""

    function_name = "llm-proxy"
    aws_request_id = "c6af9ac6-7b61-11e6-9a41-93e812345678"
    invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:llm-proxy"
    memory_limit_in_mb = 512

    def get_remaining_time_in_millis(self) -> int:
        return 300_000


def import_handler(env: dict[str, str]) -> ModuleType:
    """Import handlers.aws.buffered afresh under `env`, as a new Lambda instance would."""
    with mock.patch.dict(os.environ, env, clear=False):
        for name in [n for n in os.environ if n.endswith(("_SECRET_ID", "_SSM_PARAMETER"))]:
            del os.environ[name]
        sys.modules.pop("handlers.aws.buffered", None)
        return importlib.import_module("handlers.aws.buffered")


def call(
    module: ModuleType, event: dict[str, Any]
) -> tuple[int, dict[str, str], bytes, dict[str, Any]]:
    """Invoke like Lambda does; return status, lower-case headers, decoded body, raw result."""
    result = module.handler(event, Context())
    json.dumps(result)  # Lambda serialises the result: it must be plain JSON
    headers = {k.lower(): str(v) for k, v in (result.get("headers") or {}).items()}
    for name, values in (result.get("multiValueHeaders") or {}).items():
        headers[name.lower()] = ", ".join(values)
    raw = result.get("body") or ""
    body = base64.b64decode(raw) if result.get("isBase64Encoded") else raw.encode()
    return int(result["statusCode"]), headers, body, result
