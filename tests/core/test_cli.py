"""The commands a user runs first: `llm-proxy check` and `llm-proxy demo`."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys

import httpx
import openai

from tests.support.demo import running_demo
from tests.support.servers import free_port

CLI = [sys.executable, "-m", "core.cli"]
CLEAN_ENV = {
    k: v
    for k, v in os.environ.items()
    if not k.startswith(("UPSTREAM_", "PROXY_", "ALLOWED_", "TOKEN_"))
}


def test_check_names_every_bad_variable_one_line_each() -> None:
    env = {
        **CLEAN_ENV,
        "UPSTREAM_BASE_URL": "not a url",
        "PROXY_ACCESS_TOKEN": "tiny-tok",
        "UPSTREAM_READ_TIMEOUT": "soon",
    }
    result = subprocess.run([*CLI, "check"], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    lines = result.stdout.strip().splitlines()
    assert all(line.startswith("error: ") for line in lines)
    for name in (
        "UPSTREAM_BASE_URL",
        "UPSTREAM_API_KEY",
        "PROXY_ACCESS_TOKEN",
        "UPSTREAM_READ_TIMEOUT",
    ):
        assert sum(name in line for line in lines) == 1, name
    assert "tiny-tok" not in result.stdout  # a token is never echoed


def test_check_ok_summarises_without_secrets() -> None:
    env = {
        **CLEAN_ENV,
        "UPSTREAM_BASE_URL": "https://api.openai.com/v1",
        "UPSTREAM_API_KEY": "sk-mock-upstream-key-not-real",
        "PROXY_ACCESS_TOKEN": "test-caller-token-0123456789",
    }
    result = subprocess.run([*CLI, "check"], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("ok: ")
    assert "sk-mock" not in result.stdout and "test-caller-token" not in result.stdout


def test_check_ok_without_a_default_route_names_the_routes_it_serves() -> None:
    # Provider routes alone are a valid deployment (docs/model-routing.md): the summary
    # says there is no default route instead of an empty "/v1 -> ".
    env = {
        **CLEAN_ENV,
        "ANTHROPIC_API_KEY": "fake-anthropic-key-not-real",
        "PROXY_ACCESS_TOKEN": "test-caller-token-0123456789",
    }
    env.pop("ANTHROPIC_UPSTREAM", None)
    result = subprocess.run([*CLI, "check"], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no default route (UPSTREAM_BASE_URL unset)" in result.stdout
    assert "provider routes: /anthropic;" in result.stdout
    assert "-> ;" not in result.stdout and "fake-anthropic" not in result.stdout


def test_serve_refuses_to_start_on_bad_config() -> None:
    result = subprocess.run(
        [*CLI, "serve", "--port", str(free_port())],
        env=CLEAN_ENV,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "UPSTREAM_BASE_URL" in result.stderr
    assert "Traceback" not in result.stderr


def serve_with_two_workers(**settings: str) -> subprocess.CompletedProcess[str]:
    env = {
        **CLEAN_ENV,
        "UPSTREAM_BASE_URL": "https://api.openai.com/v1",
        "UPSTREAM_API_KEY": "fake-upstream-key-for-tests",
        "PROXY_ACCESS_TOKEN": "test-caller-token-0123456789",
        **settings,
    }
    return subprocess.run(
        [*CLI, "serve", "--port", str(free_port()), "--workers", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_several_workers_refuse_limits_counted_in_memory() -> None:
    """Each worker would keep its own count: N workers, N times the limit, silently."""
    result = serve_with_two_workers(RATE_LIMIT_REQUESTS="10")
    assert result.returncode == 2
    assert "a store the processes share" in result.stderr and "LIMIT_STORE" in result.stderr


def test_several_workers_refuse_a_kill_switch_kept_in_memory() -> None:
    """The dashboard's switch would stop only the worker that served it."""
    result = serve_with_two_workers(ADMIN_TOKEN="admin-token-for-tests-0123456789abcdef")
    assert result.returncode == 2
    assert "ADMIN_TOKEN" in result.stderr and "TOKEN_STORE" in result.stderr


def test_demo_works_as_printed_with_the_openai_sdk() -> None:
    with running_demo("--delay-ms", "5") as demo:
        banner, port = demo.banner, demo.port
        token = re.search(r"token:\s+(\S+)", banner).group(1)  # type: ignore[union-attr]
        assert f"curl -N http://127.0.0.1:{port}/v1/chat/completions" in banner
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=token, max_retries=0)
        stream = client.chat.completions.create(
            model="mock-model", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert text.startswith("Hello from the mock upstream")
        # What the banner promises beyond the relay: the cache, the budget, the dashboard.
        same = {
            "model": "mock-model",
            "temperature": 0,
            "messages": [{"role": "user", "content": "x"}],
        }
        auth = {"Authorization": f"Bearer {token}"}
        base = f"http://127.0.0.1:{port}"
        first = httpx.post(f"{base}/v1/chat/completions", json=same, headers=auth)
        second = httpx.post(f"{base}/v1/chat/completions", json=same, headers=auth)
        assert first.headers["x-proxy-cache"] == "miss"
        assert second.headers["x-proxy-cache"] == "hit" and second.json() == first.json()
        usage = httpx.get(f"{base}/proxy/usage", headers=auth).json()
        assert usage["limit_usd"] == 1.0 and 0 < usage["remaining_usd"] < 1.0
        admin_token = re.search(r"admin token:\s+(\S+)", banner).group(1)  # type: ignore[union-attr]
        assert f"{base}/admin/sign-in" in banner
        with httpx.Client(base_url=base) as browser:
            signed_in = browser.post("/admin/sign-in", data={"token": admin_token})
            assert signed_in.status_code == 303
            assert browser.get("/admin/tokens").status_code == 200
        # The mock's realtime sessions, through the proxy, with the openai SDK's client.
        assert asyncio.run(realtime_turn(base, token)) == "Hello from the mock realtime upstream."


def test_env_file_is_read_and_the_environment_wins(tmp_path) -> None:
    env_file = tmp_path / "settings.env"
    env_file.write_text(
        "# comment\n"
        "export UPSTREAM_BASE_URL='https://api.openai.com/v1'\n"
        'UPSTREAM_API_KEY="sk-mock-upstream-key-not-real"\n'
        "PROXY_ACCESS_TOKEN=from-the-file-0123456789\n"
        "ALLOWED_ORIGINS=https://file.example\n"
    )
    env = {**CLEAN_ENV, "ALLOWED_ORIGINS": "https://env.example"}
    result = subprocess.run(
        [*CLI, "--env-file", str(env_file), "check"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "/v1 -> https://api.openai.com/v1" in result.stdout
    assert "https://env.example" in result.stdout and "file.example" not in result.stdout


async def realtime_turn(base: str, token: str) -> str:
    client = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key=token, max_retries=0)
    text = ""
    async with client.realtime.connect(model="mock-realtime") as connection:
        await connection.response.create()
        async for event in connection:
            if event.type == "response.output_text.delta":
                text += event.delta
            elif event.type == "response.done":
                break
    return text
