"""Secrets from AWS Secrets Manager and SSM Parameter Store (moto), fetched at cold start."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import httpx
import pytest
from moto import mock_aws
from moto.core import set_initial_no_auth_action_count
from moto.server import ThreadedMotoServer

from handlers.aws.secrets import SecretError, create_app_with_secrets, environ_with_secrets
from tests.support.lambda_events import HttpRequest, function_url
from tests.support.lambda_runtime_api import fake_runtime_api
from tests.support.servers import (
    FAKE_TOKEN,
    FAKE_UPSTREAM_KEY,
    RunningServer,
    free_port,
    proxy_env,
    upstream_requests,
)

from .runtime_process import running_runtime

SECRET_NAME = "llm-proxy/openai"
PARAMETER_NAME = "/llm-proxy/access-tokens"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with mock_aws():
        yield


def put_secret(value: str, name: str = SECRET_NAME) -> str:
    return str(boto3.client("secretsmanager").create_secret(Name=name, SecretString=value)["ARN"])


def put_parameter(value: str, name: str = PARAMETER_NAME) -> None:
    boto3.client("ssm").put_parameter(Name=name, Value=value, Type="SecureString")


def test_no_reference_means_the_environment_as_it_is() -> None:
    env = {"UPSTREAM_API_KEY": FAKE_UPSTREAM_KEY, "PATH": "/bin"}
    assert environ_with_secrets(env) == env


def test_secrets_manager_value_by_name_and_by_arn(aws: None) -> None:
    arn = put_secret(FAKE_UPSTREAM_KEY)
    for reference in (SECRET_NAME, arn):
        env = environ_with_secrets({"UPSTREAM_API_KEY_SECRET_ID": reference})
        assert env["UPSTREAM_API_KEY"] == FAKE_UPSTREAM_KEY


def test_secrets_manager_json_secret_gives_the_field_named_like_the_variable(aws: None) -> None:
    put_secret(json.dumps({"UPSTREAM_API_KEY": FAKE_UPSTREAM_KEY, "OTHER": "x"}))
    env = environ_with_secrets({"UPSTREAM_API_KEY_SECRET_ID": SECRET_NAME})
    assert env["UPSTREAM_API_KEY"] == FAKE_UPSTREAM_KEY


def test_json_secret_without_the_field_is_a_clear_error(aws: None) -> None:
    put_secret(json.dumps({"api_key": FAKE_UPSTREAM_KEY}))
    with pytest.raises(SecretError) as caught:
        environ_with_secrets({"UPSTREAM_API_KEY_SECRET_ID": SECRET_NAME})
    assert "without a 'UPSTREAM_API_KEY' field" in str(caught.value)
    assert FAKE_UPSTREAM_KEY not in str(caught.value)


def test_ssm_secure_string_is_decrypted(aws: None) -> None:
    put_parameter(f"{FAKE_TOKEN},another-token-abcdefghijkl")
    env = environ_with_secrets({"PROXY_ACCESS_TOKEN_SSM_PARAMETER": PARAMETER_NAME})
    assert env["PROXY_ACCESS_TOKEN"] == f"{FAKE_TOKEN},another-token-abcdefghijkl"


def test_missing_secret_and_parameter_name_the_variable_and_the_reference(aws: None) -> None:
    with pytest.raises(SecretError) as caught:
        environ_with_secrets({"UPSTREAM_API_KEY_SECRET_ID": "llm-proxy/nope"})
    assert str(caught.value) == (
        "UPSTREAM_API_KEY: Secrets Manager secret 'llm-proxy/nope' does not exist"
    )
    with pytest.raises(SecretError) as caught:
        environ_with_secrets({"PROXY_ACCESS_TOKEN_SSM_PARAMETER": "/llm-proxy/nope"})
    assert str(caught.value) == "PROXY_ACCESS_TOKEN: SSM parameter '/llm-proxy/nope' does not exist"


@set_initial_no_auth_action_count(5)
def test_access_denied_says_which_permission_is_missing(
    aws: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Set-up calls run unauthenticated; after them moto enforces IAM for a role-less user
    # whose only permission is an unrelated one.
    put_secret(FAKE_UPSTREAM_KEY)
    put_parameter(FAKE_TOKEN)
    iam = boto3.client("iam")
    iam.create_user(UserName="function")
    key = iam.create_access_key(UserName="function")["AccessKey"]
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "sqs:ListQueues", "Resource": "*"}],
    }
    iam.put_user_policy(
        UserName="function", PolicyName="unrelated", PolicyDocument=json.dumps(policy)
    )
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])

    with pytest.raises(SecretError) as caught:
        environ_with_secrets({"UPSTREAM_API_KEY_SECRET_ID": SECRET_NAME})
    assert "may not read Secrets Manager secret 'llm-proxy/openai'" in str(caught.value)
    assert "secretsmanager:GetSecretValue" in str(caught.value)
    with pytest.raises(SecretError) as caught:
        environ_with_secrets({"PROXY_ACCESS_TOKEN_SSM_PARAMETER": PARAMETER_NAME})
    assert "ssm:GetParameters" in str(caught.value)


def test_a_value_and_a_reference_for_one_variable_is_refused() -> None:
    with pytest.raises(SecretError, match="set only one"):
        environ_with_secrets({"UPSTREAM_API_KEY": "x", "UPSTREAM_API_KEY_SECRET_ID": SECRET_NAME})
    with pytest.raises(SecretError, match="two sources"):
        environ_with_secrets(
            {"UPSTREAM_API_KEY_SECRET_ID": SECRET_NAME, "UPSTREAM_API_KEY_SSM_PARAMETER": "/x"}
        )


def test_no_region_is_a_setup_error_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    with pytest.raises(SecretError, match="NoRegionError"):
        environ_with_secrets({"UPSTREAM_API_KEY_SECRET_ID": SECRET_NAME})


async def ask(app: Any, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
    if headers is None:
        headers = {"authorization": f"Bearer {FAKE_TOKEN}"}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://lambda.test") as client:
        return await client.get(path, headers=headers)


MISSING_ARN = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:llm-proxy/prod/openai-AbCdEf"
MISSING_PARAMETER = "/llm-proxy/prod/access-tokens"


@pytest.mark.parametrize(
    ("variable", "reference", "target"),
    [
        ("UPSTREAM_API_KEY_SECRET_ID", "llm-proxy/missing", "UPSTREAM_API_KEY"),
        ("UPSTREAM_API_KEY_SECRET_ID", MISSING_ARN, "UPSTREAM_API_KEY"),
        ("PROXY_ACCESS_TOKEN_SSM_PARAMETER", MISSING_PARAMETER, "PROXY_ACCESS_TOKEN"),
    ],
    ids=["secret-name", "secret-arn", "ssm-parameter"],
)
async def test_unreadable_secret_makes_every_request_a_500_naming_only_the_variable(
    aws: None, mock_upstream: RunningServer, variable: str, reference: str, target: str
) -> None:
    """Every caller, signed in or not, gets the 500: it names the variable to fix, never
    the secret's ARN or the parameter's path (the AWS account, region and naming). The
    operator's log keeps them."""
    env = proxy_env(mock_upstream.url)
    del env[target]
    env[variable] = reference
    app = create_app_with_secrets(env)
    reply = await ask(app, "/v1/models")
    anonymous = await ask(app, "/v1/models", headers={})
    for answer in (reply, anonymous):
        assert answer.status_code == 500
        message = answer.json()["error"]["message"]
        assert target in message
        for part in (reference, "123456789012", "eu-west-1", "llm-proxy"):
            assert part not in answer.text, part
    assert any(reference in problem for problem in app.problems)  # type: ignore[attr-defined]


def test_streaming_runtime_reads_its_key_from_secrets_manager_at_cold_start(
    mock_upstream: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runtime process, boto3 and all, against moto's server on loopback."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{server._port}"
        boto3.client(
            "secretsmanager",
            endpoint_url=endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        ).create_secret(Name=SECRET_NAME, SecretString=FAKE_UPSTREAM_KEY)
        env = proxy_env(mock_upstream.url)
        del env["UPSTREAM_API_KEY"]
        env.update(
            UPSTREAM_API_KEY_SECRET_ID=SECRET_NAME,
            AWS_ENDPOINT_URL=endpoint,
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_DEFAULT_REGION="eu-west-1",
        )
        httpx.post(f"{mock_upstream.url}/_mock/reset")
        with fake_runtime_api() as api, running_runtime(api.address, env) as runtime:
            auth = [("authorization", f"Bearer {FAKE_TOKEN}")]
            reply = api.invoke(function_url(HttpRequest("GET", "/v1/models", headers=auth)))
            assert reply.status == 200, (reply.body, runtime.output())
        (seen,) = upstream_requests(mock_upstream)
        assert seen["headers"]["authorization"] == f"Bearer {FAKE_UPSTREAM_KEY}"  # type: ignore[index]
    finally:
        server.stop()
