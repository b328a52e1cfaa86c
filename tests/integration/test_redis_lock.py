"""RedisLock against a real Redis: one holder at a time, tokens fence release and extend."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from freshkeep.exceptions import ConfigurationError, StoreError
from freshkeep.ports import Lock
from freshkeep.stores.redis import RedisStore
from freshkeep.stores.redis_lock import RedisLock
from freshkeep.testing.conformance import LockSuite
from tests.conftest import REDIS_URL

pytestmark = pytest.mark.redis


@pytest.fixture
async def lock(redis_client: Any) -> AsyncIterator[RedisLock]:
    lk = RedisLock(redis_client, prefix=redis_client.freshkeep_prefix + "lock:")
    yield lk
    await lk.aclose()


async def wait_until_free(lock: RedisLock, name: str) -> str:
    """Poll every 20 ms, for at most 2 s, until ``name`` can be acquired."""
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        token = await lock.acquire(name, 5.0)
        if token is not None:
            return token
        await asyncio.sleep(0.02)
    raise AssertionError(f"lock {name!r} was not released within 2 s")


async def test_one_of_many_acquirers_gets_it(lock: RedisLock, redis_client: Any) -> None:
    other = RedisLock(REDIS_URL, prefix=lock.prefix)
    try:
        tokens = await asyncio.gather(
            *(lk.acquire("build:summary", 10.0) for lk in [lock, other] * 5)
        )
        held = [t for t in tokens if t is not None]
        assert len(held) == 1
        assert await redis_client.get(lock.key("build:summary")) == held[0].encode()
        assert 0 < await redis_client.pttl(lock.key("build:summary")) <= 10_000
        assert await lock.acquire("build:other", 10.0) is not None  # names are independent
    finally:
        await other.aclose()


async def test_only_the_holder_releases(lock: RedisLock) -> None:
    token = await lock.acquire("x", 10.0)
    assert token is not None
    assert await lock.release("x", "not-the-token") is False
    assert await lock.acquire("x", 10.0) is None
    assert await lock.release("x", token) is True
    assert await lock.release("x", token) is False
    assert await lock.acquire("x", 10.0) is not None


async def test_after_the_lease_expires_another_acquires_and_the_old_holder_is_fenced(
    lock: RedisLock,
) -> None:
    old = await lock.acquire("x", 0.2)
    assert old is not None
    new = await wait_until_free(lock, "x")
    assert new != old
    # The expired holder can neither release nor renew the new holder's lock.
    assert await lock.release("x", old) is False
    assert await lock.extend("x", old, 10.0) is False
    assert await lock.acquire("x", 1.0) is None
    assert await lock.release("x", new) is True


async def test_extend_renews_the_lease(lock: RedisLock, redis_client: Any) -> None:
    token = await lock.acquire("x", 0.5)
    assert token is not None
    assert await lock.extend("x", token, 30.0) is True
    assert 10_000 < await redis_client.pttl(lock.key("x")) <= 30_000


async def test_a_store_lends_its_client(redis_client: Any) -> None:
    store = RedisStore(redis_client, prefix=redis_client.freshkeep_prefix)
    lk = store.lock()
    assert lk.client is store.client and lk.prefix == store.prefix + "lock:"
    token = await lk.acquire("y", 1.0)
    assert token is not None and await lk.release("y", token)


async def test_failures_raise_store_error() -> None:
    lk = RedisLock("redis://127.0.0.1:1/0", timeout=0.2)
    try:
        with pytest.raises(StoreError, match="redis lock failed"):
            await lk.acquire("x", 1.0)
        with pytest.raises(StoreError):
            await lk.release("x", "t")
        with pytest.raises(ConfigurationError, match="lease"):
            await lk.acquire("x", 0)
    finally:
        await lk.aclose()


class TestRedisLock(LockSuite):
    """``other`` is a second lock on its own client, as another instance holds it."""

    @pytest.fixture
    async def lock(self, redis_client: Any) -> AsyncIterator[Lock]:
        lk = RedisLock(redis_client, prefix=redis_client.freshkeep_prefix + "lock:")
        yield lk
        await lk.aclose()

    @pytest.fixture
    async def other(self, redis_client: Any) -> AsyncIterator[Lock]:
        lk = RedisLock(REDIS_URL, prefix=redis_client.freshkeep_prefix + "lock:")
        yield lk
        await lk.aclose()
