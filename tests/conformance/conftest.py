"""One proxy per adapter, started once per module, all pointed at the shared mock upstream
through a relay the tests can take down."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conformance.adapters import ADAPTER_PARAMS, Adapter
from tests.conformance.switchable_upstream import SwitchableRelay
from tests.support.servers import RunningServer, proxy_env, reset_upstream


@pytest.fixture(scope="session")
def relay(mock_upstream: RunningServer) -> Iterator[SwitchableRelay]:
    relay = SwitchableRelay(mock_upstream.port)
    relay.start()
    yield relay
    relay.stop()


@pytest.fixture(scope="module", params=ADAPTER_PARAMS)
def adapter(request: pytest.FixtureRequest, relay: SwitchableRelay) -> Iterator[Adapter]:
    instance: Adapter = request.param()
    with instance.start(proxy_env(relay.url)):
        yield instance


@pytest.fixture(autouse=True)
def clean_upstream(mock_upstream: RunningServer) -> None:
    reset_upstream(mock_upstream)
