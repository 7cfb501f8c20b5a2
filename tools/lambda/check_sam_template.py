"""Check template.yaml offline: run the SAM transform, then cfn-lint on what it produced.

cfn-lint (1.53 and newer) no longer expands AWS::Serverless resources itself, so a bad
InvokeMode or Runtime inside one would pass a plain lint. Translating first makes it see
the real AWS::Lambda::Function / AWS::Lambda::Url / AWS::IAM::Role resources.
Usage: python tools/lambda/check_sam_template.py [template.yaml] [out.json]
Exit status: non-zero on any cfn-lint error (warnings are printed).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from cfnlint.decode import cfn_yaml
from samtranslator.translator.transform import transform

REPO = Path(__file__).resolve().parents[2]


class NoManagedPolicies:
    """The template uses only inline statements: no managed policy ARNs to look up (which
    would need AWS credentials)."""

    def load(self) -> dict[str, str]:
        return {}


def translate(template_path: Path) -> dict[str, Any]:
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    template = cfn_yaml.load(str(template_path))
    # A placeholder S3 location stands in for what `sam package` uploads.
    for resource in template.get("Resources", {}).values():
        if resource.get("Type") == "AWS::Serverless::Function":
            resource.setdefault("Properties", {})["CodeUri"] = (
                "s3://placeholder-bucket/llm-proxy.zip"
            )
    template.get("Globals", {}).get("Function", {}).pop("CodeUri", None)
    return dict(transform(json.loads(json.dumps(template)), {}, NoManagedPolicies()))


def main() -> int:
    template_path = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "template.yaml"
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else REPO / "build" / "sam-translated.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(translate(template_path), indent=2))
    cfn_lint = Path(sys.executable).parent / "cfn-lint"
    lint = subprocess.run([str(cfn_lint), str(out)], check=False)
    # cfn-lint's status is a bit mask: 2 = error, 4 = warning, 8 = informational; 1 means
    # it could not run at all. Warnings are shown but do not fail the check.
    return 0 if lint.returncode in (0, 4, 8, 12) else 1


if __name__ == "__main__":
    sys.exit(main())
