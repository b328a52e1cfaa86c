"""Views behind a shared Redis store (L2): instances share builds, one build at a time.

Two keepers on one set of revisions stand for two processes: each has its own memory L1, and
they share a RedisStore and its lock, as instances behind a load balancer do.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from freshkeep import BuildContext, Keeper, Policy, Section
from freshkeep.stores.redis import RedisStore
from freshkeep.testing import MemoryRevisions

pytestmark = pytest.mark.redis

SECRET = b"test-secret"


class Counting:
    def __init__(self) -> None:
        self.calls = 0
        self.gate: asyncio.Event | None = None
        self.started = asyncio.Event()

    async def __call__(self, ctx: BuildContext) -> dict[str, Any]:
        self.calls += 1
        self.started.set()
        if self.gate is not None:
            await self.gate.wait()
        return {"who": ctx.principal, "rev": ctx.revisions["t:a"], "calls": self.calls}


class Instance:
    def __init__(self, revs: MemoryRevisions, client: Any, *, locked: bool = True) -> None:
        self.store = RedisStore(client, prefix=client.freshkeep_prefix, secret=SECRET)
        self.keeper = Keeper(
            revs,
            probe="always",
            shared=self.store,
            lock=self.store.lock() if locked else None,
            policy=Policy.strict(),
        )
        self.build = Counting()
        self.view = self.keeper.view("v", sections={"s": Section(self.build, ["t:a"])})
        self.mine = self.keeper.view("mine", self.build, sources=["t:a"], per_principal=True)


@pytest.fixture
async def pair(redis_client: Any) -> AsyncIterator[tuple[Instance, Instance, MemoryRevisions]]:
    revs = MemoryRevisions()
    a, b = Instance(revs, redis_client), Instance(revs, redis_client)
    yield a, b, revs
    for i in (a, b):
        await i.keeper.wait_idle()
        i.keeper.tracker.close()


async def test_an_instance_serves_what_another_built(pair: Any) -> None:
    a, b, revs = pair
    built = await a.view.get()
    assert built.status == "miss"
    shared = await b.view.get()
    assert shared.status == "hit" and b.build.calls == 0
    assert (shared.body, shared.etag, shared.revision) == (built.body, built.etag, built.revision)
    assert (await b.view.get()).status == "hit"  # now from b's own memory
    revs.revisions["t:a"] = 1
    assert (await b.view.get()).status == "miss" and b.build.calls == 1
    assert (await a.view.get()).status == "hit" and a.build.calls == 1  # b's build, shared


async def test_concurrent_misses_on_two_instances_build_once(pair: Any) -> None:
    a, b, _ = pair
    a.build.gate = b.build.gate = asyncio.Event()
    first = asyncio.create_task(a.view.get())
    await a.build.started.wait()
    second = asyncio.create_task(b.view.get())
    for _ in range(500):  # bounded: until b found the lock held and waits for a's build
        if b.view.stats.shared_waits:
            break
        await asyncio.sleep(0.01)
    assert b.view.stats.shared_waits == 1
    a.build.gate.set()
    ra, rb = await asyncio.gather(first, second)
    assert (a.build.calls, b.build.calls) == (1, 0)
    assert ra.status == "miss" and rb.status == "hit" and ra.body == rb.body


async def test_per_principal_entries_never_cross_users(pair: Any) -> None:
    a, b, _ = pair
    alice = await a.mine.get("k", principal="alice")
    bob = await b.mine.get("k", principal="bob")
    assert alice.value["who"] == "alice" and bob.value["who"] == "bob"
    reads = await asyncio.gather(
        *(inst.mine.get("k", principal=who) for inst in (a, b) for who in ("alice", "bob") * 5)
    )
    for i, read in enumerate(reads):
        assert read.value["who"] == ("alice", "bob")[i % 2]


async def test_a_tampered_shared_entry_is_rebuilt_not_served(pair: Any, redis_client: Any) -> None:
    a, b, _ = pair
    await a.view.get()
    key = a.store.key_for("v", None)
    raw = bytearray(await redis_client.get(key))
    raw[-40] ^= 0xFF
    await redis_client.set(key, bytes(raw))
    read = await b.view.get()
    assert read.status == "miss" and b.build.calls == 1
    assert b.store.snapshot().corrupt >= 1


async def test_redis_down_never_fails_a_read() -> None:
    revs = MemoryRevisions()
    store = RedisStore("redis://127.0.0.1:1/0", secret=SECRET, timeout=0.2)
    keeper = Keeper(revs, probe="always", shared=store, lock=store.lock(), policy=Policy.strict())
    build = Counting()
    view = keeper.view("v", build, sources=["t:a"])
    try:
        assert (await view.get()).status == "miss"
        assert (await view.get()).status == "hit"
        revs.revisions["t:a"] = 1
        read = await view.get()
        assert read.status == "miss" and read.value["rev"] == 1
        assert store.snapshot().reachable is False
    finally:
        await keeper.aclose()


async def test_a_holder_that_lets_go_without_storing_hands_the_build_over(pair: Any) -> None:
    a, b, _ = pair
    b.keeper.lock_wait = 60.0  # were the waiter to wait it out, the test would time out
    lock = a.store.lock()
    skey = a.store.key_for("v", None)
    token = await lock.acquire(skey, 30.0)  # "another instance" holds the build lock
    assert token is not None
    reader = asyncio.create_task(b.view.get())
    for _ in range(500):  # bounded: until b waits for the holder
        if b.view.stats.shared_waits:
            break
        await asyncio.sleep(0.01)
    assert await lock.release(skey, token)  # ...and lets go without storing anything
    read = await asyncio.wait_for(reader, 10)
    assert read.status == "miss" and b.build.calls == 1
