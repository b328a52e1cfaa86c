"""``refresh_on_push`` over the real buses: a write published by one keeper is rebuilt by the
other when the message arrives, before anything reads it there."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from freshkeep import BuildContext, Keeper, Section
from freshkeep.buses.base import RemoteBus
from freshkeep.buses.postgres import PostgresBus
from freshkeep.buses.redis import RedisBus
from freshkeep.settings import Settings
from freshkeep.testing import MemoryRevisions
from tests.conftest import POSTGRES_URL, REDIS_URL, need_service

TIMEOUT = 10.0
FAST = {"reconnect_backoff": 0.05, "max_reconnect_backoff": 0.2}


@pytest.fixture(params=["redis", "postgres"])
async def make_bus(request: pytest.FixtureRequest) -> AsyncIterator[Callable[[], RemoteBus]]:
    channel = f"fk_{uuid.uuid4().hex[:16]}"
    buses: list[RemoteBus] = []
    if request.param == "redis":
        need_service("Redis", REDIS_URL, 6379)
    else:
        need_service("PostgreSQL", POSTGRES_URL, 5432)

    def make() -> RemoteBus:
        bus: RemoteBus
        if request.param == "redis":
            bus = RedisBus(REDIS_URL, channel, **FAST)
        else:
            bus = PostgresBus(POSTGRES_URL, channel, **FAST)
        buses.append(bus)
        return bus

    try:
        yield make
    finally:
        for bus in buses:
            await bus.aclose()


async def test_a_remote_write_is_rebuilt_when_its_message_arrives(
    make_bus: Callable[[], RemoteBus],
) -> None:
    revs = MemoryRevisions()
    writer = Keeper(revs, bus=make_bus(), probe="interval")
    reader = Keeper(revs, bus=make_bus(), probe="interval", settings=Settings(refresh_on_push=True))
    await writer.start()
    await reader.start()
    rows = {"n": 0}
    builds: asyncio.Queue[int] = asyncio.Queue()

    async def build(ctx: BuildContext) -> dict[str, Any]:
        builds.put_nowait(rows["n"])
        return dict(rows)

    view = reader.view("v", sections={"s": Section(build, ["t:a"])})
    await view.get()
    assert builds.get_nowait() == 0
    for n in range(1, 4):
        rows["n"] = n
        await writer.bump("t:a")  # committed by the other keeper, published on the bus
        assert await asyncio.wait_for(builds.get(), TIMEOUT) == n  # no read asked for it
        await reader.wait_idle()
        read = await view.read()
        assert read.status == "hit" and read.value == {"n": n}
    delivery = reader.bus.snapshot()
    assert getattr(delivery, "last_delivery_ms", None) is not None
    await writer.aclose()
    await reader.aclose()
