"""What a browser-facing deployment checks on top of the token check, decided at start.

`build_guard(settings, token_check)` returns None when nothing is configured, and the
proxy endpoint then skips this module entirely. Otherwise the guard:

1. identifies the caller: a JWT from the identity provider (JWT_JWKS_URL), no credential
   at all (ALLOW_ANONYMOUS, from an allowed origin only), or the usual proxy token;
2. applies the request policy (core/access/policy.py) to the body;
3. counts the request against the caller's rate limits (core/access/limits.py): a signed-in user
   by `sub`, a stored token by its id, anyone else (shared token, anonymous) by client IP;
4. wraps `send` to put the limit headers on the reply and to read the tokens the reply
   reports (only when a token limit is set), then adds them to the caller's window.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.access.client_ip import ClientIPRule, client_ip_rule, detect_platform
from core.access.credentials import SHARED_TOKEN_CALLER, Caller
from core.errors import Forbidden
from core.types import Message, Scope, Send

if TYPE_CHECKING:
    from core.access.credentials import TokenCheck
    from core.access.jwt_auth import JWTVerifier
    from core.access.limits import Admission, RateLimiter
    from core.access.policy import RequestPolicy
    from core.config import Settings
    from core.providers import Provider

logger = logging.getLogger("llm_proxy")

ANONYMOUS_CALLER = Caller("anonymous")
# A JSON reply is read for its usage only up to this size; larger ones are not metered.
_MAX_METERED_JSON = 4 * 1024 * 1024
_MAX_SSE_LINE = 1024 * 1024


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return value
    return None


# ---- usage reported by a reply ------------------------------------------------------


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


class UsageMeter:
    """The tokens a reply reports, in any provider's shape, JSON or event stream.

    OpenAI: `usage.total_tokens` (streams: only with stream_options.include_usage, which
    the guard turns on). Responses API: `response.usage.total_tokens`. Anthropic: input
    tokens in `message_start`, the running output count in `message_delta`. Gemini: the
    last `usageMetadata.totalTokenCount`.
    """

    def __init__(self) -> None:
        self.total = 0
        self.input = 0
        self.output = 0
        self._pending = b""
        self._json: list[bytes] | None = None
        self._json_size = 0
        self.stream = False

    def start(self, headers: list[tuple[bytes, bytes]]) -> None:
        for name, value in headers:
            if name == b"content-type":
                lowered = value.lower()
                if lowered.startswith(b"text/event-stream"):
                    self.stream = True
                elif b"json" in lowered:
                    self._json = []

    def feed(self, chunk: bytes) -> None:
        if self.stream:
            data = self._pending + chunk
            lines = data.split(b"\n")
            self._pending = lines.pop()
            if len(self._pending) > _MAX_SSE_LINE:
                self._pending = b""
            for line in lines:
                # Cheap test first: most events carry no usage.
                if b"sage" in line and line.startswith(b"data:"):
                    self._read(line[5:])
        elif self._json is not None:
            self._json_size += len(chunk)
            if self._json_size > _MAX_METERED_JSON:
                self._json = None
            else:
                self._json.append(chunk)

    def finish(self) -> int:
        if self.stream and self._pending.startswith(b"data:"):
            self._read(self._pending[5:])
        elif self._json:
            self._read(b"".join(self._json))
        return self.total or self.input + self.output

    def _read(self, raw: bytes) -> None:
        try:
            event = json.loads(raw)
        except ValueError:
            return
        if not isinstance(event, dict):
            return
        response = event.get("response")
        if isinstance(response, dict) and isinstance(response.get("usage"), dict):
            event = response  # OpenAI Responses API: response.completed
        message = event.get("message")
        if isinstance(message, dict) and isinstance(message.get("usage"), dict):
            event = message  # Anthropic message_start
        usage = event.get("usage")
        if isinstance(usage, dict):
            if "total_tokens" in usage:
                self.total = _int(usage["total_tokens"])
                return
            if "input_tokens" in usage:
                self.input = (
                    _int(usage["input_tokens"])
                    + _int(usage.get("cache_creation_input_tokens"))
                    + _int(usage.get("cache_read_input_tokens"))
                )
            if "output_tokens" in usage:
                self.output = _int(usage["output_tokens"])  # a running total in streams
            return
        metadata = event.get("usageMetadata")
        if isinstance(metadata, dict) and "totalTokenCount" in metadata:
            self.total = _int(metadata["totalTokenCount"])


def ask_openai_stream_for_usage(body: bytes) -> bytes:
    """An OpenAI chat stream reports usage only when asked; ask, so token limits see it."""
    try:
        document = json.loads(body)
    except ValueError:
        return body
    if not isinstance(document, dict) or document.get("stream") is not True:
        return body
    options = document.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") is True:
        return body
    document["stream_options"] = {
        **(options if isinstance(options, dict) else {}),
        "include_usage": True,
    }
    return json.dumps(document).encode()


# ---- the guard ------------------------------------------------------------------------


@dataclass
class Guard:
    token_check: TokenCheck
    client_ip: ClientIPRule
    jwt: JWTVerifier | None = None
    anonymous: bool = False
    allowed_origins: frozenset[bytes] = frozenset()
    policy: RequestPolicy | None = None
    limiter: RateLimiter | None = None

    async def identify(self, scope: Scope, credential: bytes | None) -> Caller:
        if credential is not None and self.jwt is not None:
            from core.access.jwt_auth import looks_like_jwt

            if looks_like_jwt(credential):
                claims = await self.jwt.verify(credential)
                return Caller("user:" + claims["sub"][:200])
        if credential is None and self.anonymous:
            origin = _header(scope, b"origin")
            # CORS alone only stops a page from *reading* the reply; a request from another
            # site's page, or none, would still spend the key. Anonymous calls need a page
            # on the list.
            if origin is None or origin not in self.allowed_origins:
                raise Forbidden(
                    "Calls without a credential are accepted only from the pages listed in "
                    "ALLOWED_ORIGINS."
                )
            return ANONYMOUS_CALLER
        return await self.token_check.identify(credential)

    def limit_identity(self, scope: Scope, caller: Caller) -> str:
        if caller.record is not None:
            return "token:" + caller.record.id
        if caller is SHARED_TOKEN_CALLER or caller is ANONYMOUS_CALLER:
            # A shared token may sit in every visitor's browser: limit each visitor.
            return "ip:" + self.client_ip(scope)
        return caller.label  # "user:<sub>"

    async def admit(
        self,
        scope: Scope,
        caller: Caller,
        provider: Provider,
        method: str,
        remainder: str,
        body: bytes,
        send: Send,
    ) -> tuple[bytes, Send]:
        """Check policy and limits; the body to send upstream and the `send` to reply with."""
        if self.policy is not None:
            self.policy.check(method, remainder, provider.model_in_path, body)
        limiter = self.limiter
        if limiter is None:
            return body, send
        admission = await limiter.admit(self.limit_identity(scope, caller))
        metering = limiter.tokens > 0 and admission.key is not None
        if metering and provider.error_shape == "openai" and remainder.endswith("chat/completions"):
            body = ask_openai_stream_for_usage(body)
        return body, self._send_with_limits(send, admission, metering)

    def _send_with_limits(self, send: Send, admission: Admission, metering: bool) -> Send:
        limiter = self.limiter
        assert limiter is not None
        meter = UsageMeter() if metering else None

        async def send_with_limits(message: Message) -> None:
            kind = message["type"]
            if kind == "http.response.start":
                # The provider's own x-ratelimit-* describe the key owner's account, not
                # this caller: ours replace them.
                headers = [
                    (n, v)
                    for n, v in message.get("headers", ())
                    if not n.lower().startswith(b"x-ratelimit-")
                ]
                headers.extend(admission.headers)
                message["headers"] = headers
                if meter is not None:
                    meter.start(headers)
                await send(message)
                return
            if meter is None or kind != "http.response.body":
                await send(message)
                return
            body = message.get("body", b"")
            if body:
                meter.feed(body)
            if not message.get("more_body", False):
                # Before the last message, not after: the caller's next request then sees
                # these tokens, and a function platform cannot freeze us before the write.
                await limiter.record_tokens(admission, meter.finish())
            await send(message)

        return send_with_limits


def build_guard(settings: Settings, token_check: TokenCheck) -> Guard | None:
    """The guard the settings describe, or None (and no per-request cost) if none."""
    config = settings.guard
    if not config.enabled:
        return None
    guard = Guard(token_check=token_check, client_ip=client_ip_rule(config.client_ip_source))
    if config.jwt_jwks_url:
        from core.access.jwt_auth import verifier_from_settings  # PyJWT loads only here

        guard.jwt = verifier_from_settings(
            config.jwt_jwks_url,
            config.jwt_issuer,
            config.jwt_audiences,
            config.jwt_algorithms,
            config.jwt_leeway,
            config.jwt_cache_seconds,
        )
    if config.allow_anonymous:
        guard.anonymous = True
        guard.allowed_origins = frozenset(o.encode() for o in settings.allowed_origins if o != "*")
    if config.policy_on:
        from core.access.policy import RequestPolicy

        guard.policy = RequestPolicy(
            allowed_models=config.allowed_models,
            max_tokens_cap=config.max_tokens_cap,
            max_messages=config.max_messages,
        )
    if config.limits_on:
        from core.access.limits import RateLimiter
        from core.stores import open_store

        guard.limiter = RateLimiter(
            open_store(config.limit_store),
            requests=config.rate_limit_requests,
            tokens=config.rate_limit_tokens,
            window=config.rate_limit_window,
            fail_open=config.limits_on_store_error == "open",
            timeout=settings.store_timeout,
        )
        scheme = config.limit_store.partition("://")[0]
        logger.info(
            "rate limits: %s requests, %s tokens per %gs per caller, counted in %s; "
            "if that store is unreachable: fail-%s",
            config.rate_limit_requests or "no limit on",
            config.rate_limit_tokens or "no limit on",
            config.rate_limit_window,
            scheme,
            config.limits_on_store_error,
        )
        if scheme == "memory" and detect_platform(os.environ) in ("aws", "vercel", "cloud-run"):
            logger.warning(
                "rate limits are counted in memory: each function instance keeps its own "
                "count; set LIMIT_STORE (or TOKEN_STORE) to DynamoDB or Redis"
            )
    return guard
