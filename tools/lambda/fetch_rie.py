"""Put AWS's Lambda Runtime Interface Emulator in tools/lambda/rie/ for the conformance tests.

The emulator is a Go binary that AWS ships inside the `aws-sam-cli` wheel on PyPI
(samcli/local/rapid/aws-lambda-rie-<arch>); only that file is taken from the wheel, so
nothing of SAM CLI is installed. Usage: python tools/lambda/fetch_rie.py
"""

from __future__ import annotations

import platform
import stat
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

SAM_CLI_VERSION = "1.170.0"
HERE = Path(__file__).resolve().parent
ARCH = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}[
    platform.machine().lower()
]
TARGET = HERE / "rie" / f"aws-lambda-rie-{ARCH}"


def main() -> None:
    if TARGET.is_file():
        print(TARGET)
        return
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--only-binary=:all:",
                f"aws-sam-cli=={SAM_CLI_VERSION}",
                "-d",
                folder,
            ],
            check=True,
        )
        (wheel,) = Path(folder).glob("aws_sam_cli-*.whl")
        with zipfile.ZipFile(wheel) as archive:
            data = archive.read(f"samcli/local/rapid/aws-lambda-rie-{ARCH}")
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    partial = TARGET.with_suffix(".partial")
    partial.write_bytes(data)
    partial.chmod(partial.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    partial.rename(TARGET)
    print(TARGET)


if __name__ == "__main__":
    main()
