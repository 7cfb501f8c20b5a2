"""ALLOW_ANONYMOUS: a public demo without a credential, only with an origin list and a
per-IP limit; refused at start otherwise."""

from __future__ import annotations

import httpx
import pytest

from core.app import MisconfiguredApp, create_app
from core.config import ConfigError, load_settings
from tests.support.servers import RunningServer, proxy_env, serve_in_thread

PAGE = "http://app.example.test"
CHAT = {"model": "mock-model", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"ALLOWED_ORIGINS": ""}, "needs ALLOWED_ORIGINS"),
        ({"ALLOWED_ORIGINS": "*"}, "needs ALLOWED_ORIGINS"),
        ({"RATE_LIMIT_REQUESTS": ""}, "needs RATE_LIMIT_REQUESTS"),
        ({"RATE_LIMIT_REQUESTS": "0"}, "needs RATE_LIMIT_REQUESTS"),
    ],
)
def test_anonymous_mode_refuses_to_start_without_origins_and_limits(
    extra: dict[str, str], needle: str
) -> None:
    env = proxy_env("http://127.0.0.1:9", ALLOW_ANONYMOUS="true", RATE_LIMIT_REQUESTS="10")
    env.update(extra)
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    assert any(needle in p for p in caught.value.problems), caught.value.problems


def test_the_misconfigured_app_names_the_problem_instead_of_serving(monkeypatch) -> None:
    for name, value in proxy_env("http://127.0.0.1:9", ALLOW_ANONYMOUS="true").items():
        monkeypatch.setenv(name, value)
    assert isinstance(create_app(), MisconfiguredApp)


def test_anonymous_calls_only_from_a_listed_page(mock_upstream: RunningServer) -> None:
    env = proxy_env(
        mock_upstream.url,
        PROXY_ACCESS_TOKEN="",
        ALLOW_ANONYMOUS="true",
        ALLOWED_ORIGINS=PAGE,
        RATE_LIMIT_REQUESTS="100",
    )
    with serve_in_thread(create_app(load_settings(env))) as proxy:
        url = f"{proxy.url}/v1/chat/completions"
        assert httpx.post(url, json=CHAT, headers={"origin": PAGE}).status_code == 200
        # No Origin (curl, a server) and another site's page are both refused before
        # anything is spent; CORS alone would only hide the reply from the page.
        for headers in ({}, {"origin": "https://evil.example.test"}):
            reply = httpx.post(url, json=CHAT, headers=headers)
            assert reply.status_code == 403
            assert "ALLOWED_ORIGINS" in reply.json()["error"]["message"]
        # A credential that is present but wrong is a 401, not a silent anonymous call.
        wrong = httpx.post(
            url, json=CHAT, headers={"origin": PAGE, "authorization": "Bearer wrong-token-value"}
        )
        assert wrong.status_code == 401
