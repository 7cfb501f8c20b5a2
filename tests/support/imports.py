"""What a cold start imports: a module imported in a fresh interpreter, with only the given
settings in its environment (no .env file), and every module that loaded on the way."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping

from tests.support.servers import PYTHON, REPO


def modules_imported(module: str, settings: Mapping[str, str]) -> set[str]:
    env = {"PATH": os.environ["PATH"], "LLM_PROXY_ENV_FILE": os.devnull + ".absent", **settings}
    done = subprocess.run(
        [PYTHON, "-X", "importtime", "-c", f"import {module}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()}
