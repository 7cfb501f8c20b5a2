"""The deploy files do what the platforms require, checked offline.

Vercel: the real `vercel build` (pinned CLI) turns the repository into a Python function
that streams when started the way Fluid compute starts it. CloudBase/SCF: scf_bootstrap
meets the platform's rules. Containers: the Dockerfile runs handlers.http as non-root.
Cloud Run functions: the default start command (no --asgi flag) still picks ASGI mode.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import time
import tomllib
import types
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.support.servers import FAKE_TOKEN, RunningServer, proxy_env
from tests.support.vercel_output import (
    REPO,
    RunningFunction,
    materialized_function,
    run_vercel_function,
    vercel_build,
)


def git_mode(path: str) -> str:
    listed = subprocess.run(
        ["git", "ls-files", "-s", "--", path], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    return listed.split()[0] if listed else ""


# ---- Vercel ------------------------------------------------------------------------------


def test_vercel_json_routes_everything_to_one_streaming_function() -> None:
    config = json.loads((REPO / "vercel.json").read_text())
    assert config["fluid"] is True  # the only mode in which the Python runtime streams
    assert "builds" not in config  # cannot be combined with `functions`
    (pattern, function), *others = config["functions"].items()
    assert others == []
    assert (REPO / pattern).is_file()
    assert 60 <= function["maxDuration"] <= 800
    assert config["rewrites"] == [{"source": "/(.*)", "destination": "/api/index"}]
    assert (REPO / ".python-version").read_text().strip() == "3.12"


def test_vercel_build_output_is_one_python_function_and_no_public_source() -> None:
    build = vercel_build()
    function = build.function_config
    assert function["runtime"] == "python3.12"
    assert function["supportsResponseStreaming"] is True
    assert function["maxDuration"] == 300
    shipped = set(function["filePathMap"])
    assert {"api/index.py", "handlers/vercel.py", "core/app.py"} <= shipped
    assert "_vendor/vercel_runtime/vc_init.py" in shipped
    assert not any(name.startswith(("tests/", "bench/", "tools/")) for name in shipped)
    # Only robots.txt is static: the repository's files are never served as pages.
    static = sorted(p.name for p in (build.output / "static").rglob("*") if p.is_file())
    assert static == ["robots.txt"]
    routes = json.loads((build.output / "config.json").read_text())["routes"]
    assert {"src": "^(?:/(.*))$", "dest": "/api/index", "check": True} in routes


@pytest.fixture(scope="module")
def vercel_function(mock_upstream: RunningServer) -> Iterator[RunningFunction]:
    with run_vercel_function(materialized_function(), proxy_env(mock_upstream.url)) as running:
        yield running


def test_built_vercel_function_streams_over_the_ipc_protocol(
    vercel_function: RunningFunction,
) -> None:
    started = time.monotonic()
    arrivals: list[float] = []
    with httpx.stream(
        "POST",
        f"{vercel_function.url}/v1/chat/completions",
        json={"model": "m", "stream": True, "messages": []},
        headers={
            "authorization": f"Bearer {FAKE_TOKEN}",
            "x-mock-chunks": "5",
            "x-mock-delay-ms": "150",
            "x-vercel-internal-request-id": "7",
            "x-vercel-internal-invocation-id": "inv-7",
        },
        timeout=15,
        trust_env=False,
    ) as reply:
        assert reply.status_code == 200
        body = b""
        for data in reply.iter_raw():
            arrivals.append(time.monotonic() - started)
            body += data
    assert body.endswith(b"data: [DONE]\n\n")
    # 5 events 150 ms apart: buffered, they would all arrive within a few milliseconds.
    assert arrivals[-1] - arrivals[0] > 0.4, arrivals
    # Fluid mode: the runtime announced its port, then reported this invocation's start
    # and end with the ids the platform sent.
    context = {"invocationId": "inv-7", "requestId": 7}
    deadline = time.monotonic() + 5  # "end" follows the last byte, a moment later
    while time.monotonic() < deadline:
        kinds = [(m["type"], m["payload"].get("context")) for m in vercel_function.ipc.messages]
        if ("end", context) in kinds:
            break
        time.sleep(0.02)
    assert kinds[0][0] == "server-started"
    assert ("handler-started", context) in kinds
    assert ("end", context) in kinds


# ---- Tencent CloudBase / SCF ---------------------------------------------------------------


def test_scf_bootstrap_follows_the_platform_rules() -> None:
    path = REPO / "scf_bootstrap"
    raw = path.read_bytes()
    assert raw.startswith(b"#!/bin/bash\n")
    assert b"\r" not in raw  # LF line endings only
    assert os.access(path, os.X_OK)
    assert git_mode("scf_bootstrap") in ("100755", "")  # "" until first committed
    text = raw.decode()
    default_python = re.search(r'python_bin="\$\{PYTHON_BIN:-([^}]+)\}"', text)
    assert default_python is not None and default_python.group(1).startswith("/")
    assert 'PORT="${PORT:-9000}"' in text
    assert 'HOST="${HOST:-0.0.0.0}"' in text
    assert re.search(r'^exec "\$\{python_bin\}" -m handlers\.http$', text, re.MULTILINE)
    syntax = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr


# ---- Containers ----------------------------------------------------------------------------


def dockerfile_final_stage() -> list[str]:
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    instructions = [line for line in lines if line and not line.startswith("#")]
    last_from = max(i for i, line in enumerate(instructions) if line.startswith("FROM "))
    return instructions[last_from:]


def test_dockerfile_runs_handlers_http_as_non_root() -> None:
    stage = dockerfile_final_stage()
    command = next(line for line in reversed(stage) if line.startswith("CMD "))
    assert json.loads(command.removeprefix("CMD ")) == ["python", "-m", "handlers.http"]
    user = next(line for line in stage if line.startswith("USER "))
    assert stage.index(user) < stage.index(command)
    uid = user.split()[1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0
    env = " ".join(line for line in stage if line.startswith("ENV "))
    assert "PORT=9000" in env and "HOST=0.0.0.0" in env


def test_dockerfile_ships_every_package_and_its_python_fits() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    packages = [p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]]
    text = (REPO / "Dockerfile").read_text()
    copied = {shlex.split(m)[0] for m in re.findall(r"^COPY (?!--from)(.+)$", text, re.MULTILINE)}
    for package in packages:
        assert package in copied, f"{package}/ is not copied into the image"
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    for package in packages:
        assert f"!{package}/" in ignore
    versions = set(re.findall(r"^FROM python:(\d+\.\d+)", text, re.MULTILINE))
    minimum = project["project"]["requires-python"].removeprefix(">=")
    assert versions and all(
        tuple(map(int, v.split("."))) >= tuple(map(int, minimum.split("."))) for v in versions
    )


# ---- Cloud Run functions -------------------------------------------------------------------


def test_functions_framework_picks_asgi_mode_without_the_flag(
    monkeypatch: pytest.MonkeyPatch, mock_upstream: RunningServer
) -> None:
    """The platform starts `functions-framework --target proxy` (no --asgi): the mark on
    `proxy` must make it serve the ASGI app, not wrap it in Flask."""
    from functions_framework import create_app

    for name, value in proxy_env(mock_upstream.url).items():
        monkeypatch.setenv(name, value)
    source = str(REPO / "handlers" / "gcp.py")
    app = create_app(target="proxy", source=source)
    assert type(app).__module__.startswith("starlette"), type(app)
    module = __import__("sys").modules["gcp"]
    assert isinstance(module.proxy, types.FunctionType)  # functions-framework requires one


def _deadline_in(seconds: float) -> str:
    """The invocation deadline as Vercel's platform sends it (RFC 3339)."""
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


def test_built_vercel_function_answers_its_own_504_before_the_deadline(
    vercel_function: RunningFunction,
) -> None:
    """A reply not begun when maxDuration nears is a 504 in the route's shape with the
    request id, made by the proxy (handlers/deadline.py), not Vercel's own non-JSON one."""
    started = time.monotonic()
    reply = httpx.post(
        f"{vercel_function.url}/v1/chat/completions",
        json={"model": "m", "messages": []},
        headers={
            "authorization": f"Bearer {FAKE_TOKEN}",
            "x-mock-chunks": "4",
            "x-mock-delay-ms": "1000",  # the whole reply after 4 s
            "x-vercel-internal-deadline": _deadline_in(1.5),
        },
        timeout=15,
        trust_env=False,
    )
    seconds = time.monotonic() - started
    assert reply.status_code == 504, reply.text
    assert reply.json()["error"]["code"] == "upstream_timeout"  # OpenAI's shape, the route's
    assert reply.json()["error"]["message"] == "The function reached its time limit."
    assert reply.headers.get("x-proxy-request-id")
    assert seconds < 2.5, seconds  # at the deadline less its margin, not after the upstream


def test_built_vercel_function_cuts_a_stream_at_the_deadline(
    vercel_function: RunningFunction,
) -> None:
    started = time.monotonic()
    body = b""
    with httpx.stream(
        "POST",
        f"{vercel_function.url}/v1/chat/completions",
        json={"model": "m", "stream": True, "messages": []},
        headers={
            "authorization": f"Bearer {FAKE_TOKEN}",
            "x-mock-chunks": "60",
            "x-mock-delay-ms": "100",  # 6 s of events
            "x-vercel-internal-deadline": _deadline_in(1.5),
        },
        timeout=15,
        trust_env=False,
    ) as reply:
        assert reply.status_code == 200
        with pytest.raises(httpx.RemoteProtocolError):
            for data in reply.iter_raw():
                body += data
    assert body.startswith(b"data: ") and b"[DONE]" not in body
    assert time.monotonic() - started < 2.5
