"""The store and bus checks against a real Redis, and against a port where nothing listens."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator

import pytest

from freshkeep import Keeper, Settings
from freshkeep.buses import bus_from_url
from freshkeep.health import Level, env_names
from freshkeep.stores.redis import RedisStore
from freshkeep.testing import MemoryRevisions
from tests.conftest import REDIS_URL, need_service


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in env_names():
        monkeypatch.delenv(var, raising=False)


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"redis://127.0.0.1:{s.getsockname()[1]}/0"


SETTINGS = Settings(bus_connect_timeout=0.2, bus_reconnect_backoff=0.05)


@pytest.fixture
async def keepers() -> AsyncIterator[list[Keeper]]:
    made: list[Keeper] = []
    yield made
    for k in made:
        await k.aclose()


async def test_a_connected_redis_bus_and_store_are_ok(keepers: list[Keeper]) -> None:
    need_service("Redis", REDIS_URL, 6379)
    channel = f"fk-test:{uuid.uuid4().hex[:12]}"
    store = RedisStore(REDIS_URL, prefix=f"{channel}:")
    keeper = Keeper(
        MemoryRevisions(),
        bus=bus_from_url(REDIS_URL, channel=channel, settings=SETTINGS),
        shared=store,
        settings=SETTINGS,
    )
    keepers.append(keeper)
    await keeper.start()
    await store.get("probe")
    report = await keeper.health.run()
    bus, st = report.get("bus"), report.get("store")
    assert bus is not None and bus.level is Level.OK and "connected" in bus.detail
    assert st is not None and st.level is Level.OK and "reachable" in st.detail
    assert report.status == "ok"


async def test_a_bus_that_is_down_is_a_warning_while_reads_can_probe(keepers: list[Keeper]) -> None:
    keeper = Keeper(
        MemoryRevisions(),
        bus=bus_from_url(_closed_port_url(), settings=SETTINGS),
        settings=SETTINGS,
    )
    keepers.append(keeper)
    await keeper.start()
    report = await keeper.health.run()
    bus = report.get("bus")
    assert bus is not None and bus.level is Level.WARNING
    assert "down" in bus.detail and "reads probe revisions" in bus.detail
    assert bus.data["connected"] is False and report.status == "degraded"

    keeper.health.configure({"FRESHKEEP_HEALTH_BUSES_ERROR_AFTER": "0"})
    bus = (await keeper.health.run()).get("bus")
    assert bus is not None and bus.level is Level.ERROR and "BUSES_ERROR_AFTER" in bus.detail


async def test_a_bus_that_is_down_without_revisions_to_probe_is_an_error(
    keepers: list[Keeper],
) -> None:
    keeper = Keeper(bus=bus_from_url(_closed_port_url(), settings=SETTINGS), settings=SETTINGS)
    keepers.append(keeper)
    await keeper.start()
    report = await keeper.health.run()
    bus = report.get("bus")
    assert bus is not None and bus.level is Level.ERROR and "not seen" in bus.detail
    assert report.status == "unhealthy"


async def test_an_unreachable_shared_store_is_a_warning(keepers: list[Keeper]) -> None:
    store = RedisStore(_closed_port_url(), timeout=0.2)
    keeper = Keeper(MemoryRevisions(), shared=store)
    keepers.append(keeper)
    assert await store.get("k") is None  # a miss, and the outage starts
    report = await keeper.health.run()
    check = report.get("store")
    assert check is not None and check.level is Level.WARNING and "unreachable" in check.detail
    assert check.data["reachable"] is False and check.data["outages"] >= 1
