"""Signed-in users through the real proxy on loopback: the openai SDK sends an identity
provider's JWT as its api_key, the proxy verifies it against the JWKS and limits by `sub`."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from core.app import create_app
from core.config import ConfigError, load_settings
from tests.access.jwt_keys import AUDIENCE, ISSUER, JWKSServer, KeyPair, jwks_served, mint, rsa_key
from tests.support.servers import (
    FAKE_UPSTREAM_KEY,
    LONG_WINDOW,
    RunningServer,
    proxy_env,
    reset_upstream,
    serve_in_thread,
    upstream_requests,
)


@pytest.fixture(scope="module")
def signing_key() -> KeyPair:
    return rsa_key("prod-1")


@pytest.fixture(scope="module")
def jwt_proxy(mock_upstream: RunningServer, signing_key: KeyPair) -> Iterator[RunningServer]:
    with jwks_served(JWKSServer(keys=[signing_key.jwk()])) as jwks:
        env = proxy_env(
            mock_upstream.url,
            PROXY_ACCESS_TOKEN="",  # browser-only: signed-in users need no shared token
            JWT_JWKS_URL=f"{jwks.url}/.well-known/jwks.json",
            JWT_ISSUER=ISSUER,
            JWT_AUDIENCE=AUDIENCE,
            RATE_LIMIT_REQUESTS="2",
            RATE_LIMIT_WINDOW=LONG_WINDOW,
        )
        with serve_in_thread(create_app(load_settings(env))) as server:
            yield server


def client(proxy: RunningServer, token: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=token, max_retries=0, timeout=10)


def ask(proxy: RunningServer, token: str) -> str:
    reply = client(proxy, token).chat.completions.create(
        model="mock-model", messages=[{"role": "user", "content": "hi"}]
    )
    return reply.choices[0].message.content or ""


def test_a_signed_in_user_reaches_the_model_and_the_jwt_stays_here(
    jwt_proxy: RunningServer, mock_upstream: RunningServer, signing_key: KeyPair
) -> None:
    reset_upstream(mock_upstream)
    token = mint(signing_key, sub="user-carol")
    assert ask(jwt_proxy, token).startswith("Hello")
    seen = upstream_requests(mock_upstream)[-1]["headers"]
    assert seen["authorization"] == f"Bearer {FAKE_UPSTREAM_KEY}"  # type: ignore[index]
    assert token not in str(seen)


def test_a_bad_jwt_is_a_401_the_sdk_understands(
    jwt_proxy: RunningServer, signing_key: KeyPair
) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        ask(jwt_proxy, mint(signing_key, iss="https://other-issuer.test"))
    assert "another issuer" in str(caught.value)
    forger = rsa_key("prod-1")  # same kid, not the provider's key
    with pytest.raises(openai.AuthenticationError) as caught:
        ask(jwt_proxy, mint(forger))
    assert "signature" in str(caught.value)


def test_without_a_shared_token_other_credentials_are_refused(jwt_proxy: RunningServer) -> None:
    with pytest.raises(openai.AuthenticationError):
        ask(jwt_proxy, "some-static-token-from-a-frontend")


def test_each_user_has_their_own_limit(jwt_proxy: RunningServer, signing_key: KeyPair) -> None:
    dave = mint(signing_key, sub="user-dave")
    ask(jwt_proxy, dave)
    ask(jwt_proxy, dave)
    with pytest.raises(openai.RateLimitError) as caught:
        ask(jwt_proxy, dave)
    assert caught.value.response.headers["x-ratelimit-remaining-requests"] == "0"
    # A fresh token of the same user is the same caller; another user is not.
    with pytest.raises(openai.RateLimitError):
        ask(jwt_proxy, mint(signing_key, sub="user-dave", jti="second-session"))
    assert ask(jwt_proxy, mint(signing_key, sub="user-erin"))


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"JWT_ISSUER": ""}, "JWT_ISSUER is not set"),
        ({"JWT_ALGORITHMS": "RS256,HS256"}, "refused: HS256"),
        ({"JWT_ALGORITHMS": "none"}, "refused: none"),
        ({"JWT_JWKS_URL": "http://idp.example.test/jwks"}, "must be an https:// URL"),
    ],
)
def test_unsafe_jwt_settings_refuse_to_start(extra: dict[str, str], needle: str) -> None:
    env = proxy_env(
        "http://127.0.0.1:9",
        JWT_JWKS_URL="https://idp.example.test/.well-known/jwks.json",
        JWT_ISSUER=ISSUER,
    )
    env.update(extra)
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    assert any(needle in problem for problem in caught.value.problems), caught.value.problems


def test_no_jwt_library_is_loaded_when_jwt_is_not_configured() -> None:
    import subprocess
    import sys

    code = (
        "import sys; from core.app import create_app; from core.config import load_settings; "
        "create_app(load_settings({'UPSTREAM_BASE_URL': 'http://127.0.0.1:9/v1', "
        "'UPSTREAM_API_KEY': 'sk-mock-upstream-key-not-real', "
        "'PROXY_ACCESS_TOKEN': 'test-caller-token-0123456789', 'ACCESS_LOG': 'false'})); "
        "print(sorted(m for m in sys.modules if m in "
        "('jwt', 'cryptography', 'core.access.jwt_auth', 'core.access.limits', "
        "'core.access.policy')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_users_whose_long_subjects_share_a_start_are_different_callers(
    mock_upstream: RunningServer, signing_key: KeyPair
) -> None:
    """A `sub` was cut to its first 200 characters to name the caller, so two users whose
    subjects began alike (GitHub Actions' `repo:<org>/<repo>:ref:refs/heads/<branch>` runs
    past 200 with a long branch name; a SAML subject with a long address) were one caller:
    one request limit and budget, and with CACHE_SCOPE=caller each was answered from the
    other's cached replies. Now a long subject keeps a digest of the whole of it."""
    shared_start = "repo:example-org/example-repo:ref:refs/heads/" + "feature-" * 25
    with jwks_served(JWKSServer(keys=[signing_key.jwk()])) as jwks:
        env = proxy_env(
            mock_upstream.url,
            PROXY_ACCESS_TOKEN="",
            JWT_JWKS_URL=f"{jwks.url}/.well-known/jwks.json",
            JWT_ISSUER=ISSUER,
            JWT_AUDIENCE=AUDIENCE,
            CACHE_URL="memory://",
        )
        with serve_in_thread(create_app(load_settings(env))) as proxy:
            ask_once = {
                "model": "mock-model",
                "temperature": 0,
                "messages": [{"role": "user", "content": "hi"}],
            }
            replies = []
            for branch in ("alice-work", "mallory-work"):
                token = mint(signing_key, sub=shared_start + branch)
                replies.append(
                    client(proxy, token).chat.completions.with_raw_response.create(**ask_once)  # type: ignore[arg-type]
                )
    # The second user's request is their own first: a miss, not the first user's reply.
    assert [reply.headers["x-proxy-cache"] for reply in replies] == ["miss", "miss"]
