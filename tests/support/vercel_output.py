"""`vercel build` offline, and the built Python function started the way Fluid compute
starts it: its trampoline imported with VERCEL_IPC_PATH set, the test playing the
platform's side of that Unix socket.

Recipe (shared/PLATFORMS.md): npm vercel@60.1.3 from tools/vercel, `.vercel/project.json`
with placeholder ids and framework null, `uv` and python3.12 on PATH, `.python-version`.
The build runs in a copy of the repository so it never writes into the working tree.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.servers import stop_process

REPO = Path(__file__).resolve().parents[2]
VERCEL_CLI = REPO / "tools" / "vercel" / "node_modules" / ".bin" / "vercel"
FUNCTION_DIR = Path(".vercel/output/functions/api/index.func")


class VercelToolsMissing(RuntimeError):
    pass


def _tool_path() -> str:
    """PATH for the build: the venv's bin (uv) first, then the system (node, python3.12)."""
    return os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


def python312() -> str:
    found = shutil.which("python3.12", path=_tool_path())
    if found is None:
        raise VercelToolsMissing("python3.12 is not on PATH (Vercel's Python runtime is 3.12)")
    return found


def _copy_repository(target: Path) -> None:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    for raw in listed:
        if not raw:
            continue
        relative = raw.decode()
        source = REPO / relative
        if not source.is_file() or relative.startswith("tools/vercel/node_modules/"):
            continue
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, destination)


@dataclass
class VercelBuild:
    workdir: Path
    log: str

    @property
    def output(self) -> Path:
        return self.workdir / ".vercel" / "output"

    @property
    def function_config(self) -> dict[str, Any]:
        config: dict[str, Any] = json.loads(
            (self.workdir / FUNCTION_DIR / ".vc-config.json").read_text()
        )
        return config


@functools.cache
def vercel_build() -> VercelBuild:
    """Run `vercel build` once per test session on a copy of the repository."""
    if not VERCEL_CLI.exists():
        raise VercelToolsMissing("tools/vercel/node_modules is missing: run `make vercel-tools`")
    python312()
    if shutil.which("uv", path=_tool_path()) is None:
        raise VercelToolsMissing("uv is not installed in the venv: run `make setup`")
    workdir = Path(tempfile.mkdtemp(prefix="llm-proxy-vercel-build-"))
    _copy_repository(workdir)
    (workdir / ".vercel").mkdir(exist_ok=True)
    (workdir / ".vercel" / "project.json").write_text(
        json.dumps(
            {
                "projectId": "prj_placeholder",
                "orgId": "team_placeholder",
                "settings": {"framework": None},
            }
        )
    )
    env = {**os.environ, "PATH": _tool_path(), "VERCEL_TELEMETRY_DISABLED": "1"}
    result = subprocess.run(
        [str(VERCEL_CLI), "build", "--yes"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = result.stdout + result.stderr
    if result.returncode != 0:
        raise RuntimeError(f"vercel build failed ({result.returncode}):\n{log[-4000:]}")
    return VercelBuild(workdir, log)


@functools.cache
def materialized_function() -> Path:
    """The function directory as Vercel deploys it: every file of its filePathMap in place."""
    build = vercel_build()
    function_dir = build.workdir / FUNCTION_DIR
    deployed = Path(tempfile.mkdtemp(prefix="llm-proxy-vercel-func-"))
    for name in os.listdir(function_dir):
        if name != ".vc-config.json":
            shutil.copy2(function_dir / name, deployed / name)
    for target, source in build.function_config["filePathMap"].items():
        destination = deployed / target
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(build.workdir / source, destination)
    return deployed


@dataclass
class IpcPlatformSide:
    """The platform's end of VERCEL_IPC_PATH: collects the runtime's NUL-delimited JSON."""

    path: Path
    messages: list[dict[str, Any]] = field(default_factory=list)
    _started: threading.Event = field(default_factory=threading.Event)

    def serve(self) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
            server.bind(str(self.path))
            server.listen(1)
            server.settimeout(60)
            try:
                connection, _ = server.accept()
            except TimeoutError:
                return
            with connection:
                pending = b""
                while data := connection.recv(65536):
                    pending += data
                    *complete, pending = pending.split(b"\0")
                    for raw in complete:
                        message = json.loads(raw)
                        self.messages.append(message)
                        if message.get("type") == "server-started":
                            self._started.set()

    def wait_for_port(self, timeout: float) -> int:
        if not self._started.wait(timeout):
            raise RuntimeError(f"no server-started message in {timeout}s: {self.messages}")
        started = next(m for m in self.messages if m.get("type") == "server-started")
        return int(started["payload"]["httpPort"])


@dataclass
class RunningFunction:
    url: str
    ipc: IpcPlatformSide
    process: subprocess.Popen[bytes]


@contextlib.contextmanager
def run_vercel_function(function_dir: Path, env: Mapping[str, str]) -> Iterator[RunningFunction]:
    """Start the built function as Fluid compute does and yield its loopback URL."""
    config = json.loads((vercel_build().workdir / FUNCTION_DIR / ".vc-config.json").read_text())
    module = config["handler"].rsplit(".", 1)[0]
    with tempfile.TemporaryDirectory(prefix="vc-ipc-") as socket_dir:
        ipc = IpcPlatformSide(Path(socket_dir) / "ipc.sock")
        listener = threading.Thread(target=ipc.serve, daemon=True)
        listener.start()
        while not ipc.path.exists():
            time.sleep(0.01)
        # A function sees only the platform's variables and the project's, not this shell's.
        process_env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            **config.get("environment", {}),
            **env,
            "VERCEL_IPC_PATH": str(ipc.path),
        }
        log_path = Path(socket_dir) / "function.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [python312(), "-s", "-c", f"import {module}"],
                cwd=function_dir,
                env=process_env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            try:
                port = ipc.wait_for_port(timeout=30)
            except RuntimeError:
                process.kill()
                output = log_path.read_text(errors="replace")
                raise RuntimeError(
                    f"the Vercel function did not start:\n{output[-3000:]}"
                ) from None
            yield RunningFunction(f"http://127.0.0.1:{port}", ipc, process)
        finally:
            stop_process(process)
