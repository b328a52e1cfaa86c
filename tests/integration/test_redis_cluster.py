"""The Redis store, lock and bus on a Redis Cluster of three masters that the test starts.

The store and the lock pass their conformance suites on the cluster; a view's entry and its
build lock hash to one slot, and entries spread over the masters; the bus uses sharded pub/sub
and carries revisions between two keepers. On a cluster whose masters have replicas, the store
and the bus follow a master that fails over.
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
from freshkeep.buses import bus_from_url
from freshkeep.buses.redis import RedisBus
from freshkeep.ports import Bus, Lock, SharedStore
from freshkeep.settings import Settings
from freshkeep.stores.base import store_from_settings
from freshkeep.stores.redis import RedisStore
from freshkeep.stores.redis_client import close, connect
from freshkeep.stores.redis_lock import RedisLock
from freshkeep.testing.conformance import BusSuite, LockSuite, Plant, SharedStoreSuite
from tests.integration.test_buses import FAST, Inbox
from tests.integration.test_redis_store import make_entry
from tests.redis_servers import Cluster, Servers, start_cluster

pytestmark = pytest.mark.redis

TIMEOUT = 2.0
"""``timeout`` of the stores and locks under test: a client's first command also learns the
topology, which on a busy machine can outlast the default 0.25 s (a miss, not what these
tests are about)."""

SECRET = b"cluster-secret"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    servers = Servers(Path(tmp_path_factory.mktemp("redis-cluster")))
    try:
        yield start_cluster(servers)
    finally:
        servers.stop()


@pytest.fixture
def prefix() -> str:
    return f"fk-test:{uuid.uuid4().hex[:12]}:"


@pytest.fixture
async def client(cluster: Cluster) -> AsyncIterator[Any]:
    c = connect(cluster.url)
    yield c
    await close(c)


class TestClusterStore(SharedStoreSuite):
    @pytest.fixture
    async def store(self, cluster: Cluster, prefix: str) -> AsyncIterator[SharedStore]:
        s = RedisStore(cluster.url, prefix=prefix, secret=SECRET, ttl=60.0, timeout=TIMEOUT)
        assert s.hash_tags
        yield s
        await s.aclose()

    @pytest.fixture
    def plant(self, client: Any) -> Plant:
        async def plant(key: str, data: bytes) -> None:
            await client.set(key, data)

        return plant


class TestUnsignedClusterStore(TestClusterStore):
    @pytest.fixture
    async def store(self, cluster: Cluster, prefix: str) -> AsyncIterator[SharedStore]:
        s = RedisStore(cluster.url, prefix=prefix, ttl=60.0, timeout=TIMEOUT)
        yield s
        await s.aclose()


class TestClusterLock(LockSuite):
    """``other`` is a second lock on its own cluster client, as another instance holds it."""

    @pytest.fixture
    async def lock(self, cluster: Cluster, prefix: str) -> AsyncIterator[Lock]:
        lk = RedisLock(cluster.url, prefix=prefix + "lock:", timeout=TIMEOUT)
        yield lk
        await lk.aclose()

    @pytest.fixture
    async def other(self, lock: RedisLock, cluster: Cluster) -> AsyncIterator[Lock]:
        lk = RedisLock(cluster.url, prefix=lock.prefix, timeout=TIMEOUT)
        yield lk
        await lk.aclose()


class TestClusterBus(BusSuite):
    @pytest.fixture
    async def buses(self, cluster: Cluster) -> AsyncIterator[tuple[Bus, Bus]]:
        channel = f"fk-test:{uuid.uuid4().hex[:12]}"
        a, b = RedisBus(cluster.url, channel, **FAST), RedisBus(cluster.url, channel, **FAST)
        assert a.sharded and b.sharded
        assert await a.start() and await b.start()
        yield a, b
        await a.aclose()
        await b.aclose()


async def test_an_entry_and_its_build_lock_share_a_slot(cluster: Cluster, prefix: str) -> None:
    store = RedisStore(cluster.url, prefix=prefix, secret=SECRET, timeout=TIMEOUT)
    lock = store.lock()
    try:
        slots: set[int] = set()
        views = ["summary", "topic", "odd{view}", "odd}view{", "{", "}"]
        for view in views:
            for identity in [None, "a", ("u1", 42), 7]:
                key = store.key_for(view, identity)
                slot = cluster.keyslot(key)
                assert cluster.keyslot(lock.key(key)) == slot, (view, identity)
                slots.add(slot)
        assert len(slots) > len(views)  # keys spread over the slots, not one per view
        # And the build takes its lock on the node that holds the entry: both in one slot.
        key = store.key_for("summary", "a")
        token = await lock.acquire(key, 5.0)
        assert token is not None
        assert await lock.release(key, token)
    finally:
        await store.aclose()


def test_a_hash_tagged_prefix_must_hold_no_brace(cluster: Cluster) -> None:
    from freshkeep.exceptions import ConfigurationError

    with pytest.raises(ConfigurationError, match="hold no"):
        RedisStore(cluster.url, prefix="{app}:")


async def test_entries_spread_over_the_masters(cluster: Cluster, prefix: str) -> None:
    store = RedisStore(cluster.url, prefix=prefix, secret=SECRET, timeout=TIMEOUT)
    try:
        for n in range(30):
            entry = make_entry({"table:a": 1}, key=("k", n))
            assert await store.put(store.key_for(entry.view, entry.key), entry)
        counts = [m.client().dbsize() for m in cluster.nodes]
        assert all(c > 0 for c in counts), counts
    finally:
        await store.aclose()


async def test_keepers_share_entries_and_revisions_through_the_cluster(
    cluster: Cluster, prefix: str
) -> None:
    channel = f"fk-test:{uuid.uuid4().hex[:12]}"
    settings = Settings(
        store_url=cluster.url,
        store_prefix=prefix,
        store_secret="s",
        bus_url=cluster.url,
        bus_channel=channel,
        bus_reconnect_backoff=0.05,
    )
    ka, kb = Keeper.from_settings(settings=settings), Keeper.from_settings(settings=settings)
    assert isinstance(ka.bus, RedisBus) and ka.bus.sharded
    assert isinstance(ka.shared, RedisStore) and ka.shared.hash_tags
    try:
        await ka.start()
        await kb.start()
        inbox = Inbox()
        kb.bus.subscribe(inbox)
        await ka.publish({"table:t": 4})
        assert await inbox.next() == ({"table:t": 4}, ka.instance_id)
        assert kb.tracker.snapshot.get("table:t") == 4
    finally:
        await ka.aclose()
        await kb.aclose()


def test_urls_choose_the_cluster(cluster: Cluster) -> None:
    settings = Settings(store_url=cluster.url, bus_url=cluster.url)
    store = store_from_settings(settings)
    bus = bus_from_url(cluster.url, settings=settings)
    assert isinstance(store, RedisStore) and store.hash_tags
    assert isinstance(bus, RedisBus) and bus.sharded


async def test_store_and_bus_follow_a_master_that_fails_over(tmp_path: Path, prefix: str) -> None:
    """Three masters with a replica each: the master that owns the bus's channel (and an
    entry) is killed, its replica takes over, and the store and the bus follow."""
    servers = Servers(tmp_path / "redis")
    try:
        c = start_cluster(servers, replicas=1)
        channel = f"fk-test:{uuid.uuid4().hex[:12]}"
        settings = Settings(
            store_url=c.url,
            store_prefix=prefix,
            store_secret="s",
            store_backoff=0.05,
            store_timeout=1.0,
            bus_url=c.url,
            bus_channel=channel,
            bus_reconnect_backoff=0.05,
            bus_max_reconnect_backoff=0.2,
            bus_ping_interval=0.5,
            bus_connect_timeout=1.0,
        )
        ka, kb = Keeper.from_settings(settings=settings), Keeper.from_settings(settings=settings)
        assert isinstance(ka.shared, RedisStore) and isinstance(kb.bus, RedisBus)
        store = ka.shared
        try:
            await ka.start()
            await kb.start()
            inbox = Inbox()
            kb.bus.subscribe(inbox)
            victim = c.owner(channel)
            assert victim is not None
            # An entry on the same master as the channel.
            entry = next(
                e
                for e in (make_entry({"table:a": 1}, key=("k", n)) for n in range(10_000))
                if c.owner(store.key_for(e.view, e.key)) is victim
            )
            key = store.key_for(entry.view, entry.key)
            assert await store.put(key, entry)
            assert await _delivered(ka, inbox)

            victim.kill()
            took_over = _sync(lambda: c.owner(key) is not None and c.owner(channel) is not None)
            await until("a replica takes over", took_over)
            assert c.owner(key) is c.owner(channel) is not victim

            newer = make_entry({"table:a": 2}, key=entry.key)
            await until("a put on the new master", lambda: store.put(key, newer))
            got = await store.get(key)
            assert got is not None and got.vector == newer.vector
            await until("the bus delivers again", lambda: _delivered(ka, inbox))
            assert kb.bus.snapshot().reconnects >= 1  # it resubscribed, and re-read revisions
        finally:
            await ka.aclose()
            await kb.aclose()
    finally:
        servers.stop()


async def until(what: str, check: Any, timeout: float = 30.0) -> None:
    """Await ``check()`` (every 50 ms) until it is true, for at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"{what}: not true after {timeout}s"
        await asyncio.sleep(0.05)


def _sync(check: Any) -> Any:
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
