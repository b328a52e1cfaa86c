"""The Redis store, lock and bus on a primary watched by Sentinel, which the test starts (a
primary, a replica and three Sentinels).

The store and the lock pass their conformance suites through a ``redis+sentinel://`` URL, the
bus carries revisions between two keepers, and after a failover (``SENTINEL FAILOVER``, or the
primary killed) the store writes to the new primary and the bus reconnects to it and re-reads
the revisions.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from freshkeep import Keeper
from freshkeep.buses.redis import RedisBus
from freshkeep.ports import Bus, Lock, SharedStore
from freshkeep.settings import Settings
from freshkeep.stores.redis import RedisStore
from freshkeep.stores.redis_client import close, connect
from freshkeep.stores.redis_lock import RedisLock
from freshkeep.testing.conformance import BusSuite, LockSuite, Plant, SharedStoreSuite
from tests.integration.test_buses import FAST, Inbox
from tests.integration.test_redis_store import make_entry
from tests.redis_servers import SentinelSet, Servers, start_sentinels

pytestmark = pytest.mark.redis

TIMEOUT = 2.0
"""``timeout`` of the stores and locks under test: a client's first command also learns the
topology, which on a busy machine can outlast the default 0.25 s (a miss, not what these
tests are about)."""

SECRET = b"sentinel-secret"
FAILOVER_TIMEOUT = 30.0
"""Seconds a failover, and the clients following it, may take."""


@pytest.fixture(scope="module")
def sentinels(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelSet]:
    """A set-up shared by the tests that do not fail it over."""
    servers = Servers(Path(tmp_path_factory.mktemp("redis-sentinel")))
    try:
        yield start_sentinels(servers)
    finally:
        servers.stop()


@pytest.fixture
def own_sentinels(tmp_path: Path) -> Iterator[SentinelSet]:
    """A set-up of one test, which may fail it over."""
    servers = Servers(tmp_path / "redis")
    try:
        yield start_sentinels(servers)
    finally:
        servers.stop()


@pytest.fixture
def prefix() -> str:
    return f"fk-test:{uuid.uuid4().hex[:12]}:"


class TestSentinelStore(SharedStoreSuite):
    @pytest.fixture
    async def store(self, sentinels: SentinelSet, prefix: str) -> AsyncIterator[SharedStore]:
        s = RedisStore(sentinels.url, prefix=prefix, secret=SECRET, ttl=60.0, timeout=TIMEOUT)
        assert not s.hash_tags  # one primary: the single-server key format
        yield s
        await s.aclose()

    @pytest.fixture
    async def plant(self, sentinels: SentinelSet) -> AsyncIterator[Plant]:
        client = connect(sentinels.url)

        async def plant(key: str, data: bytes) -> None:
            await client.set(key, data)

        yield plant
        await close(client)


class TestSentinelLock(LockSuite):
    @pytest.fixture
    async def lock(self, sentinels: SentinelSet, prefix: str) -> AsyncIterator[Lock]:
        lk = RedisLock(sentinels.url, prefix=prefix + "lock:", timeout=TIMEOUT)
        yield lk
        await lk.aclose()

    @pytest.fixture
    async def other(self, lock: RedisLock, sentinels: SentinelSet) -> AsyncIterator[Lock]:
        lk = RedisLock(sentinels.url, prefix=lock.prefix, timeout=TIMEOUT)
        yield lk
        await lk.aclose()


class TestSentinelBus(BusSuite):
    @pytest.fixture
    async def buses(self, sentinels: SentinelSet) -> AsyncIterator[tuple[Bus, Bus]]:
        channel = f"fk-test:{uuid.uuid4().hex[:12]}"
        a, b = RedisBus(sentinels.url, channel, **FAST), RedisBus(sentinels.url, channel, **FAST)
        assert not a.sharded
        assert await a.start() and await b.start()
        yield a, b
        await a.aclose()
        await b.aclose()


async def until(what: str, check: Any, timeout: float = FAILOVER_TIMEOUT) -> None:
    """Await ``check()`` (every 50 ms) until it is true, for at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"{what}: not true after {timeout}s"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("how", ["failover", "kill"])
async def test_store_and_bus_follow_a_failover(
    own_sentinels: SentinelSet, prefix: str, how: str
) -> None:
    s = own_sentinels
    channel = f"fk-test:{uuid.uuid4().hex[:12]}"
    settings = Settings(
        store_url=s.url,
        store_prefix=prefix,
        store_secret="s",
        store_backoff=0.05,
        store_timeout=1.0,
        bus_url=s.url,
        bus_channel=channel,
        bus_reconnect_backoff=0.05,
        bus_max_reconnect_backoff=0.2,
        bus_ping_interval=0.5,
        bus_connect_timeout=1.0,
    )
    ka, kb = Keeper.from_settings(settings=settings), Keeper.from_settings(settings=settings)
    assert isinstance(ka.shared, RedisStore) and isinstance(kb.bus, RedisBus)
    store = ka.shared
    resyncs: list[float] = []
    kb.bus.on_connect(lambda: resyncs.append(time.monotonic()))
    try:
        await ka.start()
        await kb.start()
        inbox = Inbox()
        kb.bus.subscribe(inbox)
        old = s.primary_port()
        assert old == s.primary.port
        first = make_entry({"table:a": 1}, key="before")
        assert await store.put(store.key_for(first.view, first.key), first)

        if how == "failover":
            s.failover()
        else:
            s.primary.kill()
        await until("the Sentinels name a new primary", _async(lambda: s.primary_port() != old))
        new = s.primary_port()
        assert new == s.replica.port

        # The store writes to the new primary, and reads what was written before. (A put may
        # still reach the old primary until the Sentinels turn it into a replica: that entry
        # is lost with the old primary's data, a miss. Entries are a cache.)
        later = make_entry({"table:a": 2}, key="after")
        key = store.key_for(later.view, later.key)

        async def landed() -> bool:
            return await store.put(key, later) and s.replica.client().get(key) is not None

        await until("a put that lands on the new primary", landed)
        assert await store.get(store.key_for(first.view, first.key)) is not None

        # The bus reconnected to the new primary (a resync ran) and delivers again.
        await until("the bus reconnected", _async(lambda: kb.bus.snapshot().reconnects >= 1))
        assert resyncs
        await until("a publish arrives", lambda: _delivered(ka, inbox))
    finally:
        await ka.aclose()
        await kb.aclose()


def _async(check: Any) -> Any:
    async def run() -> bool:
        return bool(check())

    return run


async def _delivered(keeper: Keeper, inbox: Inbox) -> bool:
    """Publish a marker; whether it arrives within 0.5 s."""
    marker = time.monotonic_ns()
    await keeper.publish({"table:marker": marker})
    try:
        while True:
            revisions, _ = await asyncio.wait_for(inbox.queue.get(), 0.5)
            if revisions.get("table:marker") == marker:
                return True
    except TimeoutError:
        return False
