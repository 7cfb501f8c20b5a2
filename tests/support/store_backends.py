"""Real store backends for tests: SQLite on a temp file, DynamoDB under moto, and a real
Debian `redis-server` started on a free loopback port (installed by `make redis-server`)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from tests.support.servers import free_port, stop_process

DYNAMODB_TABLE = "llm-proxy-tokens-test"
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    """A throwaway redis-server on 127.0.0.1; yields its redis:// URL."""
    if not Path(REDIS_SERVER).exists():
        raise RuntimeError(
            "redis-server is not installed: run `make redis-server` (Debian package)"
        )
    port = free_port()
    proc = subprocess.Popen(
        [
            REDIS_SERVER,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
            "--protected-mode",
            "yes",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        import redis

        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    out = proc.stdout.read().decode() if proc.stdout else ""
                    raise RuntimeError(f"redis-server did not start: {out[-1000:]}") from None
                time.sleep(0.05)
        client.close()
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop_process(proc)


@contextlib.contextmanager
def dynamodb_table() -> Iterator[str]:
    """moto's DynamoDB with the table serverless.yml / template.yaml declare; yields its URL."""
    from moto import mock_aws

    fake = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {k: os.environ.get(k) for k in fake}
    os.environ.update(fake)
    try:
        with mock_aws():
            import boto3

            client = boto3.client("dynamodb", region_name="us-east-1")
            client.create_table(
                TableName=DYNAMODB_TABLE,
                KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                BillingMode="PAY_PER_REQUEST",
            )
            client.update_time_to_live(
                TableName=DYNAMODB_TABLE,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"},
            )
            yield f"dynamodb://{DYNAMODB_TABLE}?region=us-east-1"
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def fresh_store_url(kind: str, tmp_path: Path, redis_url: Callable[[], str]) -> Iterator[str]:
    """An empty store of one backend kind: memory, sqlite, dynamodb (moto) or redis (the
    session's server, flushed). `redis_url` is called only for redis."""
    if kind == "memory":
        yield "memory://"
    elif kind == "sqlite":
        yield f"sqlite:///{tmp_path}/{kind}-store.db"
    elif kind == "dynamodb":
        with dynamodb_table() as url:
            yield url
    else:
        url = redis_url()
        import redis

        redis.Redis.from_url(url).flushdb()
        yield url
