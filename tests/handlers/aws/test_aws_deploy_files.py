"""serverless.yml and template.yaml, checked offline the way the platforms read them.

serverless.yml is packaged by the open-source framework (osls, from tools/lambda) and its
CloudFormation linted; template.yaml goes through the SAM transform and then cfn-lint.
Both must describe the same deployment: a streaming Function URL started through the
exec wrapper and a REST API whose integration streams from the same function, the
buffered handler behind an HTTP API, arm64, secrets by reference with
a role that may read exactly those, log retention. The packaged zip itself is then run,
on a clean Python 3.12 with nothing but the zip, against a fake Runtime API.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from handlers.aws.secrets import secret_references
from tests.support.lambda_events import HttpRequest, function_url
from tests.support.lambda_runtime_api import fake_runtime_api
from tests.support.servers import FAKE_TOKEN, FAKE_UPSTREAM_KEY, RunningServer, proxy_env

REPO = Path(__file__).resolve().parents[3]
OSLS = REPO / "tools" / "lambda" / "node_modules" / ".bin" / "osls"
WRAPPER_PATH = "/var/task/handlers/aws/exec_wrapper"
# Framework-generated, not ours: osls adds a DependsOn that a Ref already implies.
SERVERLESS_LINT_IGNORES = "W3005"


def cfn_lint(template: Path, *ignores: str) -> subprocess.CompletedProcess[str]:
    args = [str(Path(sys.executable).parent / "cfn-lint"), str(template)]
    if ignores:
        args += ["--ignore-checks", *ignores]
    return subprocess.run(args, capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def serverless_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    assert OSLS.exists(), "run `make lambda-tools` (npm ci in tools/lambda) first"
    out = tmp_path_factory.mktemp("serverless")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != "SLS_ORG"} | {
        "SLS_TELEMETRY_DISABLED": "1",
        "SLS_NOTIFICATIONS_MODE": "off",
        "CI": "true",
    }
    result = subprocess.run(
        [str(OSLS), "package", "--stage", "ci", "--region", "eu-west-1", "--package", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return out


@pytest.fixture(scope="module")
def serverless_template(serverless_package: Path) -> dict[str, Any]:
    return json.loads(
        (serverless_package / "cloudformation-template-update-stack.json").read_text()
    )


@pytest.fixture(scope="module")
def sam_template(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("sam") / "translated.json"
    check = REPO / "tools" / "lambda" / "check_sam_template.py"
    result = subprocess.run(
        [sys.executable, str(check), str(REPO / "template.yaml"), str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr  # translation + cfn-lint
    assert "E" not in {line[:1] for line in result.stdout.splitlines()}, result.stdout
    return dict(json.loads(out.read_text()))


def resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def functions(template: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(streaming function, buffered function) properties."""
    found = resources(template, "AWS::Lambda::Function")
    assert len(found) == 2, list(found)
    stream = [
        f["Properties"]
        for f in found.values()
        if "AWS_LAMBDA_EXEC_WRAPPER" in f["Properties"]["Environment"]["Variables"]
    ]
    api = [
        f["Properties"]
        for f in found.values()
        if "AWS_LAMBDA_EXEC_WRAPPER" not in f["Properties"]["Environment"]["Variables"]
    ]
    assert len(stream) == 1 and len(api) == 1
    return stream[0], api[0]


def test_serverless_cloudformation_passes_cfn_lint(serverless_package: Path) -> None:
    result = cfn_lint(
        serverless_package / "cloudformation-template-update-stack.json", SERVERLESS_LINT_IGNORES
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("which", ["serverless", "sam"])
def test_both_files_describe_the_same_deployment(
    which: str, serverless_template: dict[str, Any], sam_template: dict[str, Any]
) -> None:
    template = serverless_template if which == "serverless" else sam_template
    stream, api = functions(template)
    for function in (stream, api):
        assert function["Runtime"] in ("python3.12", "python3.13")
        assert function["Architectures"] == ["arm64"]
        assert function["Handler"] == "handlers.aws.buffered.handler"
        assert 256 <= function["MemorySize"] <= 2048
    assert stream["Environment"]["Variables"]["AWS_LAMBDA_EXEC_WRAPPER"] == WRAPPER_PATH
    assert stream["Timeout"] == 900  # long generations need minutes
    assert api["Timeout"] < 30  # an HTTP API gives up after 30 s
    for function in (stream, api):
        read_timeout = float(function["Environment"]["Variables"]["UPSTREAM_READ_TIMEOUT"])
        assert read_timeout < function["Timeout"] or function is api

    (url,) = resources(template, "AWS::Lambda::Url").values()
    assert url["Properties"]["InvokeMode"] == "RESPONSE_STREAM"
    assert url["Properties"]["AuthType"] == "NONE"  # the proxy checks tokens itself
    assert resources(template, "AWS::ApiGatewayV2::Api"), "the buffered handler's HTTP API"

    for group in resources(template, "AWS::Logs::LogGroup").values():
        assert group["Properties"]["RetentionInDays"] in (14, {"Ref": "LogRetentionDays"})
    assert len(resources(template, "AWS::Logs::LogGroup")) == 2


def rest_api_integrations(template: dict[str, Any]) -> list[dict[str, Any]]:
    """Every REST API Lambda integration as {type, mode, uri}: from AWS::ApiGateway::Method
    resources (serverless.yml declares them) and from the OpenAPI body SAM writes."""
    found = []
    for method in resources(template, "AWS::ApiGateway::Method").values():
        integration = method["Properties"]["Integration"]
        found.append(
            {
                "type": integration["Type"],
                "mode": integration.get("ResponseTransferMode", "BUFFERED"),
                "uri": integration["Uri"],
            }
        )
    for api in resources(template, "AWS::ApiGateway::RestApi").values():
        for path in api["Properties"].get("Body", {}).get("paths", {}).values():
            for operation in path.values():
                integration = operation["x-amazon-apigateway-integration"]
                found.append(
                    {
                        "type": integration["type"].upper(),
                        "mode": integration.get("responseTransferMode", "BUFFERED"),
                        "uri": integration["uri"],
                    }
                )
    return found


@pytest.mark.parametrize("which", ["serverless", "sam"])
def test_the_rest_api_streams_from_the_streaming_function(
    which: str, serverless_template: dict[str, Any], sam_template: dict[str, Any]
) -> None:
    """API Gateway REST API response streaming: an AWS_PROXY integration with
    ResponseTransferMode STREAM, invoking through InvokeWithResponseStream (its own API
    version and action in the URI), on the function the exec wrapper makes stream."""
    template = serverless_template if which == "serverless" else sam_template
    assert len(resources(template, "AWS::ApiGateway::RestApi")) == 1
    (integration,) = rest_api_integrations(template)
    assert integration["type"] == "AWS_PROXY"
    assert integration["mode"] == "STREAM"
    uri = json.dumps(integration["uri"])
    assert ":lambda:path/2021-11-15/functions/" in uri
    assert uri.endswith('/response-streaming-invocations"}')
    streaming_function = next(
        name
        for name, resource in resources(template, "AWS::Lambda::Function").items()
        if "AWS_LAMBDA_EXEC_WRAPPER" in resource["Properties"]["Environment"]["Variables"]
    )
    assert f"${{{streaming_function}.Arn}}" in uri
    (api,) = resources(template, "AWS::ApiGateway::RestApi").values()
    assert api["Properties"]["EndpointConfiguration"]["Types"] == ["REGIONAL"]
    assert api["Properties"]["BinaryMediaTypes"] == ["*~1*"]  # request bodies arrive intact
    assert resources(template, "AWS::ApiGateway::Stage")
    permissions = [
        p["Properties"]
        for p in resources(template, "AWS::Lambda::Permission").values()
        if p["Properties"]["Principal"] == "apigateway.amazonaws.com"
        and streaming_function in json.dumps(p["Properties"]["FunctionName"])
    ]
    assert [p["Action"] for p in permissions] == ["lambda:InvokeFunction"]


def test_cfn_lint_knows_the_response_transfer_mode(tmp_path: Path) -> None:
    """cfn-lint's schema has Integration.ResponseTransferMode (BUFFERED | STREAM), so a
    misspelt mode fails the lint instead of the deployment."""
    method = {
        "Type": "AWS::ApiGateway::Method",
        "Properties": {
            "RestApiId": "abc123",
            "ResourceId": "def456",
            "HttpMethod": "ANY",
            "AuthorizationType": "NONE",
            "Integration": {
                "Type": "AWS_PROXY",
                "IntegrationHttpMethod": "POST",
                "ResponseTransferMode": "STREAM",
                "Uri": "arn:aws:apigateway:eu-west-1:lambda:path/2021-11-15/functions/"
                "arn:aws:lambda:eu-west-1:123456789012:function:f/response-streaming-invocations",
            },
        },
    }
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"Resources": {"Method": method}}))
    assert cfn_lint(good).returncode == 0, cfn_lint(good).stdout
    method["Properties"]["Integration"]["ResponseTransferMode"] = "STREAMING"  # type: ignore[index]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"Resources": {"Method": method}}))
    result = cfn_lint(bad)
    assert result.returncode != 0
    assert "E3030 'STREAMING' is not one of ['BUFFERED', 'STREAM']" in result.stdout


@pytest.mark.parametrize("which", ["serverless", "sam"])
def test_no_key_in_the_files_and_the_role_reads_exactly_the_secrets(
    which: str, serverless_template: dict[str, Any], sam_template: dict[str, Any]
) -> None:
    template = serverless_template if which == "serverless" else sam_template
    stream, api = functions(template)
    for function in (stream, api):
        variables = function["Environment"]["Variables"]
        assert "UPSTREAM_API_KEY" not in variables and "PROXY_ACCESS_TOKEN" not in variables
        # Values are CloudFormation references or names here; the proxy resolves them.
        names = {k: json.dumps(v) for k, v in variables.items()}
        assert set(secret_references(names)) == {"UPSTREAM_API_KEY", "PROXY_ACCESS_TOKEN"}
    statements = [
        statement
        for role in resources(template, "AWS::IAM::Role").values()
        for policy in role["Properties"].get("Policies", [])
        for statement in policy["PolicyDocument"]["Statement"]
    ]

    def actions(statement: dict[str, Any]) -> list[str]:
        action = statement["Action"]
        return [str(a) for a in (action if isinstance(action, list) else [action])]

    def is_secret_read(statement: dict[str, Any]) -> bool:
        return all(a.startswith(("ssm:", "secretsmanager:")) for a in actions(statement))

    def is_table_access(statement: dict[str, Any]) -> bool:
        return all(a.startswith("dynamodb:") for a in actions(statement))

    secret_statements = [st for st in statements if is_secret_read(st)]
    table_statements = [st for st in statements if is_table_access(st)]
    others = [
        st
        for st in statements
        if not (is_secret_read(st) or is_table_access(st))
        and not all(a.startswith("logs:") for a in actions(st))
    ]
    assert not others, others
    secret_actions = {a for st in secret_statements for a in actions(st)}
    assert secret_actions in ({"ssm:GetParameters"}, {"secretsmanager:GetSecretValue"})
    for statement in secret_statements:
        # Exactly the two named secrets: no wildcard resource.
        assert len(statement["Resource"]) == 2, statement
        assert "*" not in json.dumps(statement["Resource"]), statement
    # The token and rate-limit table: read a token, update it or a counter, nothing else.
    assert table_statements
    for statement in table_statements:
        assert set(actions(statement)) == {"dynamodb:GetItem", "dynamodb:UpdateItem"}
        assert "TokensTable" in json.dumps(statement["Resource"]), statement
        assert "*" not in json.dumps(statement["Resource"]), statement


@pytest.mark.parametrize("which", ["serverless", "sam"])
def test_token_table_has_ttl_and_is_the_token_store(
    which: str, serverless_template: dict[str, Any], sam_template: dict[str, Any]
) -> None:
    template = serverless_template if which == "serverless" else sam_template
    (table,) = resources(template, "AWS::DynamoDB::Table").values()
    properties = table["Properties"]
    assert properties["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}]
    assert properties["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert properties["BillingMode"] == "PAY_PER_REQUEST"
    for function in functions(template):
        store = json.dumps(function["Environment"]["Variables"]["TOKEN_STORE"])
        assert "dynamodb://" in store


def test_package_holds_the_code_the_wrapper_and_no_stray_files(serverless_package: Path) -> None:
    with zipfile.ZipFile(serverless_package / "llm-proxy.zip") as archive:
        names = archive.namelist()
        wrapper = archive.getinfo("handlers/aws/exec_wrapper")
    top = {name.split("/")[0] for name in names}
    assert {"core", "handlers", "httpx", "mangum"} <= top
    assert not top & {"tests", ".venv", "tools", "bench", "node_modules", ".git", "serverless.yml"}
    assert (wrapper.external_attr >> 16) & 0o111, "the exec wrapper must stay executable"
    assert not any(name.endswith(".env") for name in names)


def test_compiled_dependencies_are_built_for_the_functions_arm64(serverless_package: Path) -> None:
    """PyJWT's crypto backend is compiled: its objects must be Linux arm64 (ELF machine
    183), the function's architecture, not the build machine's."""
    with zipfile.ZipFile(serverless_package / "llm-proxy.zip") as archive:
        names = archive.namelist()
        objects = [n for n in names if n.endswith(".so")]
        assert {"jwt", "cryptography"} <= {name.split("/")[0] for name in names}
        assert objects
        for name in objects:
            header = archive.read(name)[:20]
            assert header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == 183, name


def clean_python() -> str:
    """A Python 3.12 (Lambda's) with no site-packages: only the zip can supply imports."""
    return shutil.which("python3.12") or sys.executable


@pytest.fixture(scope="module")
def unpacked(serverless_package: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("lambda")
    task_root = root / "task"
    with zipfile.ZipFile(serverless_package / "llm-proxy.zip") as archive:
        for info in archive.infolist():
            archive.extract(info, task_root)
            mode = info.external_attr >> 16
            if mode:
                (task_root / info.filename).chmod(mode & 0o777)
    subprocess.run(
        [clean_python(), "-m", "venv", "--without-pip", str(root / "python")],
        check=True,
        timeout=120,
    )
    yield task_root


def test_the_packaged_zip_streams_on_a_bare_python(
    unpacked: Path, mock_upstream: RunningServer
) -> None:
    """The zip as Lambda unpacks it into /var/task, started through its own wrapper by an
    interpreter that has nothing installed."""
    bare_bin = unpacked.parent / "python" / "bin"
    env = {
        "PATH": f"{bare_bin}:/usr/bin:/bin",
        "LAMBDA_TASK_ROOT": str(unpacked),
        **proxy_env(mock_upstream.url),
    }
    with fake_runtime_api() as api:
        env["AWS_LAMBDA_RUNTIME_API"] = api.address
        process = subprocess.Popen(
            [str(unpacked / "handlers" / "aws" / "exec_wrapper"), "/var/runtime/bootstrap"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            body = {"model": "m", "stream": True, "messages": []}
            request = HttpRequest(
                "POST",
                "/v1/chat/completions",
                headers=[
                    ("authorization", f"Bearer {FAKE_TOKEN}"),
                    ("content-type", "application/json"),
                ],
                body=json.dumps(body).encode(),
            )
            reply = api.invoke(function_url(request), timeout=60)
        finally:
            process.terminate()
            output = process.communicate(timeout=10)[0].decode(errors="replace")
    assert reply.status == 200, output
    assert reply.body.decode().rstrip().endswith("data: [DONE]")
    assert FAKE_UPSTREAM_KEY not in output
