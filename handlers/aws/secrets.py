"""Secrets from AWS Secrets Manager or SSM Parameter Store, fetched once per cold start.

Any variable the proxy reads may name where its value lives instead of holding it:

    UPSTREAM_API_KEY_SECRET_ID=llm-proxy/openai          (Secrets Manager name or ARN)
    PROXY_ACCESS_TOKEN_SSM_PARAMETER=/llm-proxy/tokens   (SSM SecureString, decrypted)

A Secrets Manager secret may hold the plain value, or a JSON object with a field named
like the variable (`{"UPSTREAM_API_KEY": "sk-..."}`). The function's role needs
`secretsmanager:GetSecretValue` on the secret or `ssm:GetParameters` on the parameter
(plus `kms:Decrypt` only when a customer-managed KMS key encrypts it).

boto3 costs about 0.3 s to import, so it is imported only when a reference is present.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import Any

from core.app import MisconfiguredApp, create_app
from core.config import ConfigError, load_settings
from core.proxy.access_log import configure_logging
from core.types import ASGIApp

logger = logging.getLogger("llm_proxy")

SECRETS_MANAGER_SUFFIX = "_SECRET_ID"
SSM_SUFFIX = "_SSM_PARAMETER"


class SecretError(Exception):
    """A secret could not be read; the message names the variable and the reason, never a value."""


def secret_references(environ: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """{target variable: (store, reference)} for every non-empty *_SECRET_ID / *_SSM_PARAMETER."""
    found: dict[str, tuple[str, str]] = {}
    for name, value in environ.items():
        for suffix, store in ((SECRETS_MANAGER_SUFFIX, "secretsmanager"), (SSM_SUFFIX, "ssm")):
            if name.endswith(suffix) and value.strip() and len(name) > len(suffix):
                target = name[: -len(suffix)]
                if target in found:
                    raise SecretError(f"{target} names two sources; set only one of them")
                found[target] = (store, value.strip())
    return found


def environ_with_secrets(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of the environment with every secret reference resolved to its value."""
    env = dict(os.environ if environ is None else environ)
    references = secret_references(env)
    for target in references:
        if env.get(target, "").strip():
            raise SecretError(f"{target} is set and also names a secret; set only one of them")
    if not references:
        return env
    import boto3  # heavy: only when a secret is referenced

    clients: dict[str, Any] = {}

    def client(store: str) -> Any:
        if store not in clients:
            try:
                clients[store] = boto3.client(store)  # type: ignore[call-overload]
            except Exception as exc:  # NoRegionError and friends: a setup problem
                raise SecretError(f"cannot reach AWS {store}: {type(exc).__name__}") from None
        return clients[store]

    for target, (store, reference) in references.items():
        if store == "secretsmanager":
            env[target] = _secrets_manager_value(client(store), target, reference)
        else:
            env[target] = _ssm_value(client(store), target, reference)
    return env


def _explain(exc: Exception, target: str, what: str) -> SecretError:
    response = getattr(exc, "response", None) or {}
    code = response.get("Error", {}).get("Code") or type(exc).__name__
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if code in ("ResourceNotFoundException", "ParameterNotFound"):
        reason = f"{what} does not exist"
    elif code in ("AccessDeniedException", "AccessDenied") or status == 403:
        action = "secretsmanager:GetSecretValue" if "Secrets" in what else "ssm:GetParameters"
        reason = f"the function's role may not read {what} (it needs {action})"
    elif code == "DecryptionFailure":
        reason = f"the function's role may not decrypt {what} (it needs kms:Decrypt)"
    else:
        reason = f"reading {what} failed ({code})"
    return SecretError(f"{target}: {reason}")


def _secrets_manager_value(client: Any, target: str, secret_id: str) -> str:
    what = f"Secrets Manager secret {secret_id!r}"
    try:
        reply = client.get_secret_value(SecretId=secret_id)
    except Exception as exc:  # botocore's errors are generated classes; sort by code
        raise _explain(exc, target, what) from None
    raw = reply.get("SecretString")
    if raw is None:
        raise SecretError(f"{target}: {what} is binary; store the value as a string")
    if raw.lstrip().startswith("{"):
        try:
            fields = json.loads(raw)
        except ValueError:
            return str(raw)
        if not isinstance(fields, dict) or target not in fields:
            raise SecretError(f"{target}: {what} is a JSON object without a {target!r} field")
        return str(fields[target])
    return str(raw)


def _ssm_value(client: Any, target: str, name: str) -> str:
    what = f"SSM parameter {name!r}"
    try:
        reply = client.get_parameters(Names=[name], WithDecryption=True)
    except Exception as exc:
        raise _explain(exc, target, what) from None
    if reply.get("InvalidParameters") or not reply.get("Parameters"):
        raise SecretError(f"{target}: {what} does not exist")
    return str(reply["Parameters"][0]["Value"])


def create_app_with_secrets(environ: Mapping[str, str] | None = None) -> ASGIApp:
    """The proxy for a function platform (one request at a time), secrets resolved.

    A secret that cannot be read gives the same answer as a bad variable: every request
    gets a 500 JSON error naming the variable, and the log says why.
    """
    configure_logging()
    try:
        settings = load_settings(environ_with_secrets(environ))
    except SecretError as exc:
        logger.error("config: %s", exc)
        return MisconfiguredApp([str(exc)])
    except ConfigError as exc:
        for problem in exc.problems:
            logger.error("config: %s", problem)
        return MisconfiguredApp(exc.problems)
    return create_app(settings, concurrent=False)
