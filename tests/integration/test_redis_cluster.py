"""The Redis store, lock and bus on a Redis Cluster of three masters that the test starts.

The store and the lock pass their conformance suites on the cluster; a view's entry and its
build lock hash to one slot, and entries spread over the masters; the bus uses sharded pub/sub
and carries revisions between two keepers.
"""

from __future__ import annotations

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
        s = RedisStore(cluster.url, prefix=prefix, secret=SECRET, ttl=60.0)
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
        s = RedisStore(cluster.url, prefix=prefix, ttl=60.0)
        yield s
        await s.aclose()


class TestClusterLock(LockSuite):
    """``other`` is a second lock on its own cluster client, as another instance holds it."""

    @pytest.fixture
    async def lock(self, cluster: Cluster, prefix: str) -> AsyncIterator[Lock]:
        lk = RedisLock(cluster.url, prefix=prefix + "lock:")
        yield lk
        await lk.aclose()

    @pytest.fixture
    async def other(self, lock: RedisLock, cluster: Cluster) -> AsyncIterator[Lock]:
        lk = RedisLock(cluster.url, prefix=lock.prefix)
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
    store = RedisStore(cluster.url, prefix=prefix, secret=SECRET)
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
    store = RedisStore(cluster.url, prefix=prefix, secret=SECRET)
    try:
        for n in range(30):
            entry = make_entry({"table:a": 1}, key=("k", n))
            assert await store.put(store.key_for(entry.view, entry.key), entry)
        counts = [m.client().dbsize() for m in cluster.masters]
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
