"""Drivers that run the proxy the way each platform runs it, behind one small interface.

A driver starts its platform's process or runtime once (`start`), then turns one HTTP
request into a `Reply` (`send`): status, headers and the body as the chunks that arrived,
each with its arrival time, so tests can see whether a stream was streamed. Adding a
platform is one class with those two methods and one entry in `ADAPTERS`.
"""

from __future__ import annotations

import base64
import contextlib
import importlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest

from core.app import create_app
from core.config import load_settings
from tests.support.servers import run_process, serve_in_thread, stop_process

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

# A client address and trace ids the platform's front end would add; none may reach upstream.
CLIENT_IP = "203.0.113.7"
GENERIC_FRONT_HEADERS = {
    "x-forwarded-for": CLIENT_IP,
    "x-forwarded-proto": "https",
    "x-real-ip": CLIENT_IP,
    "forwarded": f"for={CLIENT_IP};proto=https",
}


@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]]
    # (monotonic arrival time, bytes) for every piece the client received.
    chunks: list[tuple[float, bytes]]
    sent_at: float

    @property
    def body(self) -> bytes:
        return b"".join(data for _, data in self.chunks)

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name.lower()), None)


@dataclass
class Request:
    method: str
    path: str  # with the query string, exactly as sent
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


class Adapter:
    """One platform's way of running the proxy."""

    name: ClassVar[str]
    # Headers the platform's edge adds in front of the function.
    front_headers: ClassVar[Mapping[str, str]] = GENERIC_FRONT_HEADERS
    # Why this platform cannot stream a response, or None if it can.
    cannot_stream: ClassVar[str | None] = None
    # A long-running server (many requests at once) rather than a one-at-a-time function.
    concurrent: ClassVar[bool] = False
    # Why the query string reaches the proxy rebuilt from decoded parameters rather than
    # byte for byte, or None if it arrives verbatim.
    query_rebuilt: ClassVar[str | None] = None
    # Why some requests are answered by the platform's framework before the proxy sees
    # them (its own text/plain 404 or 405), or None if the proxy answers every request.
    framework_answers: ClassVar[str | None] = None

    def start(self, env: Mapping[str, str]) -> contextlib.AbstractContextManager[None]:
        raise NotImplementedError

    def send(self, request: Request) -> Reply:
        raise NotImplementedError


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# The platform's front end: a new connection for every request, as from a load balancer
# that does not pool (the strictest case for a server's connection handling).
_EDGE = httpx.Client(timeout=15, trust_env=False, limits=httpx.Limits(max_keepalive_connections=0))


class HttpAdapter(Adapter):
    """Platforms that hand the request to a server over HTTP: the test is the edge."""

    base_url: str

    def send(self, request: Request) -> Reply:
        headers = {**self.front_headers, **request.headers}
        chunks: list[tuple[float, bytes]] = []
        sent_at = time.monotonic()
        with _EDGE.stream(
            request.method, self.base_url + request.path, headers=headers, content=request.body
        ) as reply:
            for data in reply.iter_raw():
                if data:
                    chunks.append((time.monotonic(), data))
            return Reply(
                reply.status_code,
                [(k.lower(), v) for k, v in reply.headers.multi_items()],
                chunks,
                sent_at,
            )


class UvicornInProcess(HttpAdapter):
    """The ASGI app in uvicorn, in this process: the reference every platform must match."""

    name = "asgi-uvicorn"
    concurrent = True

    @contextlib.contextmanager
    def start(self, env: Mapping[str, str]) -> Iterator[None]:
        with serve_in_thread(create_app(load_settings(env))) as server:
            self.base_url = server.url
            yield


class PlainHttpServer(HttpAdapter):
    """`python -m handlers.http`: containers, Cloud Run, Fly, Alibaba FC custom runtime."""

    name = "handlers.http"
    concurrent = True

    @contextlib.contextmanager
    def start(self, env: Mapping[str, str]) -> Iterator[None]:
        port = free_port()
        self.base_url = f"http://127.0.0.1:{port}"
        server_env = {**env, "HOST": "127.0.0.1", "PORT": str(port)}
        with run_process(
            [sys.executable, "-m", "handlers.http"], server_env, f"{self.base_url}/health"
        ):
            yield


class TencentScfBootstrap(HttpAdapter):
    """CloudBase / SCF web function: the platform executes ./scf_bootstrap."""

    name = "scf_bootstrap"
    concurrent = True
    front_headers: ClassVar[Mapping[str, str]] = {
        **GENERIC_FRONT_HEADERS,
        "x-scf-request-id": "scf-req-1",
        "x-tcb-source": "web",
    }

    @contextlib.contextmanager
    def start(self, env: Mapping[str, str]) -> Iterator[None]:
        port = free_port()
        self.base_url = f"http://127.0.0.1:{port}"
        # The platform's interpreter is a layer's python3.12; here it is this venv's.
        server_env = {**env, "PYTHON_BIN": sys.executable, "HOST": "127.0.0.1", "PORT": str(port)}
        with run_process([str(REPO / "scf_bootstrap")], server_env, f"{self.base_url}/health"):
            yield


class GoogleFunctionsFramework(HttpAdapter):
    """Cloud Run functions: the functions-framework CLI (gunicorn + uvicorn worker)."""

    name = "gcp-functions-framework"
    framework_answers = (
        "functions-framework routes the target only for GET, POST, PUT, DELETE, OPTIONS, "
        "HEAD and PATCH, and answers /favicon.ico and /robots.txt itself (its aio module's "
        "fixed Starlette routes): text/plain, no CORS header, no request id."
    )
    front_headers: ClassVar[Mapping[str, str]] = {
        **GENERIC_FRONT_HEADERS,
        "x-cloud-trace-context": "105445aa7843bc8bf206b12000100000/1;o=1",
        "traceparent": "00-105445aa7843bc8bf206b12000100000-0000000000000001-01",
    }

    @contextlib.contextmanager
    def start(self, env: Mapping[str, str]) -> Iterator[None]:
        port = free_port()
        self.base_url = f"http://127.0.0.1:{port}"
        args = [
            str(BIN / "functions-framework"),
            "--source",
            "handlers/gcp.py",
            "--target",
            "proxy",
            "--asgi",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
        with run_process(args, dict(env), f"{self.base_url}/health"):
            yield


class VercelFluid(HttpAdapter):
    """`vercel build` output started as Fluid compute starts it (IPC socket, real bootstrap)."""

    name = "vercel-fluid"
    front_headers: ClassVar[Mapping[str, str]] = {
        **GENERIC_FRONT_HEADERS,
        "x-vercel-forwarded-for": CLIENT_IP,
        "x-vercel-ip-country": "NL",
        "x-vercel-id": "fra1::abcde-1700000000000-0123456789ab",
        "x-vercel-internal-request-id": "1",
        "x-vercel-internal-invocation-id": "inv-1",
    }

    @contextlib.contextmanager
    def start(self, env: Mapping[str, str]) -> Iterator[None]:
        from tests.support.vercel_output import materialized_function, run_vercel_function

        with run_vercel_function(materialized_function(), env) as function:
            self.base_url = function.url
            yield


@contextlib.contextmanager
def environment(env: Mapping[str, str]) -> Iterator[None]:
    """os.environ with `env` applied, restored afterwards (in-process function handlers
    read their settings from the environment, as on the platform)."""
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


ALB_TARGET_GROUP = (
    "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/llm-proxy/6d0ecf831eec9f09"
)
AWS_FRONT_HEADERS = {
    "x-forwarded-for": CLIENT_IP,
    "x-forwarded-proto": "https",
    "x-amzn-trace-id": "Root=1-67891233-abcdef012345678912345678",
}


# Header names as a REST API passes them: as sent, not lower-cased.
REST_API_FRONT_HEADERS = {
    "X-Forwarded-For": CLIENT_IP,
    "X-Forwarded-Proto": "https",
    "X-Amzn-Trace-Id": "Root=1-67891233-abcdef012345678912345678",
}


class AwsLambdaMangum(Adapter):
    """handlers/aws/buffered.py (Mangum) fed Function URL events in this process."""

    name = "aws-lambda-mangum"
    module = "handlers.aws.buffered"
    front_headers = AWS_FRONT_HEADERS
    cannot_stream = (
        "Mangum returns the whole response at once: the managed Python runtime buffers "
        "(AWS docs; Kludex/mangum#299). Streaming on Lambda is aws-lambda-stream's job."
    )

    @contextlib.contextmanager
    def start(self, env: Mapping[str, str]) -> Iterator[None]:
        with environment(env):
            sys.modules.pop(self.module, None)  # import anew: settings are read at import
            self.handler: Any = importlib.import_module(self.module).handler
            try:
                yield
            finally:
                sys.modules.pop(self.module, None)

    def send(self, request: Request) -> Reply:
        from tests.conformance.lambda_runtime import (
            LambdaContext,
            function_url_event,
            reply_from_buffered_result,
        )

        event = function_url_event(request, dict(self.front_headers))
        sent_at = time.monotonic()
        return reply_from_buffered_result(self.handler(event, LambdaContext()), sent_at)


class AwsLambdaMangumRestApi(AwsLambdaMangum):
    """The same buffered handler behind a REST API (proxy events, payload 1.0): Mangum reads
    these by other code than payload 2.0 (its `APIGateway` handler: the path, the query from
    `multiValueQueryStringParameters`, `multiValueHeaders` joined)."""

    name = "aws-lambda-mangum-rest"
    front_headers = REST_API_FRONT_HEADERS
    query_rebuilt = (
        "A REST API hands Lambda the query decoded and grouped by name "
        "(multiValueQueryStringParameters), and Mangum encodes it again form-style (a space "
        "as `+`), so `flag` arrives as `flag=`."
    )

    def send(self, request: Request) -> Reply:
        from tests.conformance.lambda_runtime import (
            LambdaContext,
            reply_from_buffered_result,
            rest_api_event,
        )

        event = rest_api_event(request, dict(self.front_headers))
        sent_at = time.monotonic()
        return reply_from_buffered_result(self.handler(event, LambdaContext()), sent_at)


class AwsLambdaMangumAlb(AwsLambdaMangum):
    """The same buffered handler behind an ALB with multi-value headers on (Mangum's `ALB`
    handler: query values as the caller sent them, still URL-encoded)."""

    name = "aws-lambda-mangum-alb"
    query_rebuilt = (
        "An ALB groups the query by name (multiValueQueryStringParameters), so it is joined "
        "again name by name (handlers/aws/buffered.py) and `flag` arrives as `flag=`."
    )

    def send(self, request: Request) -> Reply:
        from tests.conformance.lambda_runtime import LambdaContext, reply_from_buffered_result

        path, _, query = request.path.partition("?")
        pairs = [part.partition("=") for part in query.split("&")] if query else []
        headers = [*self.front_headers.items(), *request.headers.items()]
        multi_headers: dict[str, list[str]] = {}
        for name, value in [("host", "llm-proxy-123.eu-west-1.elb.amazonaws.com"), *headers]:
            multi_headers.setdefault(name.lower(), []).append(value)
        multi_query: dict[str, list[str]] = {}
        for name, _, value in pairs:
            multi_query.setdefault(name, []).append(value)
        event = {
            "requestContext": {"elb": {"targetGroupArn": ALB_TARGET_GROUP}},
            "httpMethod": request.method,
            "path": path,
            "multiValueHeaders": multi_headers,
            "multiValueQueryStringParameters": multi_query,
            "body": base64.b64encode(request.body).decode(),
            "isBase64Encoded": True,
        }
        sent_at = time.monotonic()
        return reply_from_buffered_result(self.handler(event, LambdaContext()), sent_at)


class AwsLambdaStreaming(Adapter):
    """handlers/aws/stream.py started as Lambda starts it through
    AWS_LAMBDA_EXEC_WRAPPER (handlers/aws/exec_wrapper), behind a fake Runtime API that
    hands it Function URL events and reads its streamed replies."""

    name = "aws-lambda-stream"
    module = "handlers.aws.stream"
    front_headers = AWS_FRONT_HEADERS

    @contextlib.contextmanager
    def start(self, env: Mapping[str, str]) -> Iterator[None]:
        from tests.support.lambda_runtime_api import fake_runtime_api

        with fake_runtime_api() as api:
            self.api = api
            runtime_env = {
                **env,
                "AWS_LAMBDA_RUNTIME_API": api.address,
                "AWS_LAMBDA_FUNCTION_NAME": "llm-proxy",
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
                "AWS_REGION": "eu-west-1",
                "LAMBDA_TASK_ROOT": str(REPO),
                # The wrapper runs `python3`: the managed runtime's, here this venv's.
                "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            }
            with tempfile.NamedTemporaryFile(prefix="lambda-", suffix=".log", delete=False) as log:
                process = subprocess.Popen(
                    [str(REPO / "handlers" / "aws" / "exec_wrapper"), "/var/runtime/bootstrap"],
                    cwd=REPO,
                    env={**os.environ, **runtime_env},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            try:
                yield
            finally:
                stop_process(process)
                Path(log.name).unlink(missing_ok=True)

    def event(self, request: Request) -> dict[str, Any]:
        from tests.conformance.lambda_runtime import function_url_event

        return function_url_event(request, dict(self.front_headers))

    def send(self, request: Request) -> Reply:
        from tests.conformance.lambda_runtime import reply_from_stream

        sent_at = time.monotonic()
        return reply_from_stream(self.api.invoke(self.event(request)), sent_at)


class AwsLambdaRestApiStreaming(AwsLambdaStreaming):
    """The same streaming runtime behind an API Gateway REST API whose Lambda proxy
    integration has `ResponseTransferMode: STREAM`: proxy (v1) events in, the Function URL
    prelude (with multiValueHeaders) out."""

    name = "aws-lambda-rest-stream"
    front_headers = REST_API_FRONT_HEADERS
    query_rebuilt = (
        "A REST API hands Lambda the query decoded and grouped by name "
        "(multiValueQueryStringParameters), so `flag` arrives as `flag=`."
    )

    def event(self, request: Request) -> dict[str, Any]:
        from tests.conformance.lambda_runtime import rest_api_event

        return rest_api_event(request, dict(self.front_headers))


ADAPTERS: list[type[Adapter]] = [
    UvicornInProcess,
    PlainHttpServer,
    TencentScfBootstrap,
    GoogleFunctionsFramework,
    VercelFluid,
    AwsLambdaMangum,
    AwsLambdaMangumRestApi,
    AwsLambdaMangumAlb,
    AwsLambdaStreaming,
    AwsLambdaRestApiStreaming,
]
ADAPTER_PARAMS = [pytest.param(adapter, id=adapter.name) for adapter in ADAPTERS]
