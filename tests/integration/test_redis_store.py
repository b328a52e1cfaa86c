"""RedisStore against a real Redis: round trip, compare-and-set, TTL, garbage, outages."""

from __future__ import annotations

import asyncio
import pickle
import random
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from freshkeep.core.codec import encode_entry
from freshkeep.core.entry import Entry, SectionEntry
from freshkeep.exceptions import ConfigurationError
from freshkeep.ports import SharedStore
from freshkeep.stores.base import store_from_url
from freshkeep.stores.redis import RedisStore
from freshkeep.testing import FakeClock
from freshkeep.testing.conformance import Plant, SharedStoreSuite
from tests.conftest import REDIS_URL
from tests.proxy import CuttableProxy

pytestmark = pytest.mark.redis

SECRET = b"shared-secret"


def make_entry(
    revs: dict[str, Any], key: object = ("u1", 42), *, body: bytes = b'{"n":1}'
) -> Entry:
    sources = tuple(sorted(revs))
    part = SectionEntry(body, tuple(revs[s] for s in sources), time.time(), time.monotonic())
    return Entry("summary", key, {"main": part}, {"main": sources})


@pytest.fixture
async def store(redis_client: Any) -> AsyncIterator[RedisStore]:
    s = RedisStore(redis_client, prefix=redis_client.freshkeep_prefix, secret=SECRET, ttl=60.0)
    yield s
    await s.aclose()


async def test_round_trip_with_ttl(store: RedisStore, redis_client: Any) -> None:
    entry = make_entry({"table:a": 3, "table:b": "w1"})
    key = store.key_for("summary", ("u1", 42))
    assert key.startswith(redis_client.freshkeep_prefix + "summary:")
    assert await store.get(key) is None
    assert await store.put(key, entry) is True
    back = await store.get(key)
    assert back is not None
    assert (back.body, back.etag, back.revision, back.vector) == (
        entry.body,
        entry.etag,
        entry.revision,
        entry.vector,
    )
    assert back.key == ("u1", 42)
    assert 0 < await redis_client.pttl(key) <= 60_000
    assert store.snapshot().hits == 1 and store.snapshot().misses == 1
    assert await store.delete(key) is True
    assert await store.delete(key) is False
    assert await store.get(key) is None


async def test_keys_differ_by_view_identity_and_version(store: RedisStore) -> None:
    keys = {
        store.key_for("summary", None),
        store.key_for("summary", "a"),
        store.key_for("summary", ("a",)),
        store.key_for("summary", "a", version="2"),
        store.key_for("other", "a"),
    }
    assert len(keys) == 5
    assert store.key_for("summary", ("a", 1)) == store.key_for("summary", ("a", 1))


async def test_an_older_entry_never_replaces_a_newer_one(store: RedisStore) -> None:
    key = store.key_for("summary", ("u1", 42))
    assert await store.put(key, make_entry({"table:a": 5, "table:b": 1}, body=b'{"v":5}'))
    assert not await store.put(key, make_entry({"table:a": 4, "table:b": 9}, body=b'{"v":4}'))
    assert store.stats.rejected == 1
    got = await store.get(key)
    assert got is not None and got.body == b'{"v":5}'
    assert await store.put(key, make_entry({"table:a": 6, "table:b": 1}, body=b'{"v":6}'))
    # Same revisions, string watermarks and new sources replace.
    assert await store.put(key, make_entry({"table:a": 6, "table:b": 1}, body=b'{"v":7}'))
    assert await store.put(key, make_entry({"table:a": 6, "w": "x"}, body=b'{"v":8}'))
    assert await store.put(key, make_entry({"table:a": 6, "w": "a"}, body=b'{"v":9}'))
    got = await store.get(key)
    assert got is not None and got.body == b'{"v":9}'


async def test_the_script_agrees_with_entry_is_older_than(store: RedisStore) -> None:
    rng = random.Random(11)
    key = store.key_for("summary", ("u1", 42))

    def vector() -> dict[str, Any]:
        names = rng.sample(["t:a", "t:b", "t:c", "w"], rng.randint(1, 4))
        return {n: rng.choice(["x", "y"]) if n == "w" else rng.randint(0, 3) for n in names}

    for _ in range(150):
        old, new = make_entry(vector()), make_entry(vector())
        await store.client.delete(key)
        assert await store.put(key, old)
        assert await store.put(key, new) is (not new.is_older_than(old)), (old.vector, new.vector)


async def test_concurrent_puts_leave_the_newest(store: RedisStore, redis_client: Any) -> None:
    other = RedisStore(REDIS_URL, prefix=redis_client.freshkeep_prefix, secret=SECRET)
    try:
        key = store.key_for("summary", ("u1", 42))
        revs = list(range(1, 41))
        random.Random(7).shuffle(revs)
        stores = [store, other]
        results = await asyncio.gather(
            *(
                stores[i % 2].put(key, make_entry({"table:a": r}, body=b'{"r":%d}' % r))
                for i, r in enumerate(revs)
            )
        )
        assert any(results)
        got = await other.get(key)
        assert got is not None and got.vector == {"table:a": 40} and got.body == b'{"r":40}'
        assert not await store.put(key, make_entry({"table:a": 39}))
    finally:
        await other.aclose()


async def test_a_tampered_entry_is_a_counted_miss(store: RedisStore, redis_client: Any) -> None:
    key = store.key_for("summary", ("u1", 42))
    await store.put(key, make_entry({"table:a": 1}, body=b'{"admin":false}'))
    raw = await redis_client.get(key)
    await redis_client.set(key, raw.replace(b"false", b"true "))
    assert await store.get(key) is None
    status = store.snapshot().to_dict()
    assert status["corrupt"] == 1 and "signature" in status["last_corrupt"]
    assert status["errors"] == 0 and status["reachable"] is True


@pytest.mark.parametrize("secret", [None, b"other-secret"])
async def test_unsigned_or_foreign_entries_are_misses(
    store: RedisStore, redis_client: Any, secret: bytes | None
) -> None:
    key = store.key_for("summary", ("u1", 42))
    await redis_client.set(key, encode_entry(make_entry({"table:a": 1}), secret=secret))
    assert await store.get(key) is None
    assert store.stats.corrupt == 1


async def test_a_planted_pickle_is_a_miss_and_is_overwritten(
    store: RedisStore, redis_client: Any
) -> None:
    key = store.key_for("summary", ("u1", 42))
    await redis_client.set(key, pickle.dumps(make_entry({"table:a": 1}).body))
    assert await store.get(key) is None
    assert store.stats.corrupt == 1
    assert await store.put(key, make_entry({"table:a": 1}))
    assert await store.get(key) is not None


async def test_a_value_of_another_type_is_a_miss_and_is_overwritten(
    store: RedisStore, redis_client: Any
) -> None:
    key = store.key_for("summary", ("u1", 42))
    await redis_client.hset(key, "x", "1")
    assert await store.get(key) is None
    assert store.stats.corrupt == 1 and store.stats.errors == 0
    assert await store.put(key, make_entry({"table:a": 1}))
    assert await store.get(key) is not None


async def test_an_entry_copied_under_another_key_is_a_miss(
    store: RedisStore, redis_client: Any
) -> None:
    alice = store.key_for("summary", ("alice", 1))
    bob = store.key_for("summary", ("bob", 1))
    await store.put(alice, make_entry({"table:a": 1}, key=("alice", 1)))
    await redis_client.set(bob, await redis_client.get(alice))
    assert await store.get(bob) is None
    assert "another key" in (store.stats.last_corrupt or "")


async def test_an_unencodable_key_is_not_stored(store: RedisStore) -> None:
    key = store.key_for("summary", "k")
    assert not await store.put(key, make_entry({"table:a": 1}, key=frozenset({1})))
    assert store.stats.unencodable == 1


async def test_a_put_under_a_key_of_another_entry_is_refused(store: RedisStore) -> None:
    key = store.key_for("summary", "k")
    with pytest.raises(ConfigurationError, match="key_for"):
        await store.put(key, make_entry({"table:a": 1}, key="other"))


async def test_unreachable_redis_answers_misses_fast_and_shows_the_outage() -> None:
    clock = FakeClock()
    store = RedisStore("redis://127.0.0.1:1/0", timeout=0.25, backoff=5.0, clock=clock)
    try:
        key = store.key_for("summary", ("u1", 42))
        entry = make_entry({"table:a": 1})
        started = time.monotonic()
        assert await store.get(key) is None
        assert await store.put(key, entry) is False  # within the backoff: not even tried
        assert time.monotonic() - started < 1.0
        status = store.snapshot().to_dict()
        assert status["reachable"] is False
        assert status["errors"] == 1 and status["outages"] == 1 and status["skipped"] == 1
        assert "ConnectionError" in status["last_error"]
        assert status["outage_started_at"] == clock.time()
        clock.advance(5.0)  # the backoff ended: the next operation tries again
        assert await store.put(key, entry) is False
        clock.advance(5.0)
        assert await store.delete(key) is False
        assert store.stats.errors == 3 and store.stats.outages == 1
        assert store.snapshot().outage_seconds == 10.0
    finally:
        await store.aclose()


async def test_a_server_that_does_not_answer_is_bounded_by_the_timeout() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # never answers; returns when the client closes
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    store = RedisStore(f"redis://127.0.0.1:{port}/0", timeout=0.2)
    try:
        started = time.monotonic()
        assert await store.get("k") is None
        assert time.monotonic() - started < 1.0
        assert store.snapshot().reachable is False
        assert "Timeout" in (store.stats.last_error or "")
    finally:
        await store.aclose()
        server.close()
        await server.wait_closed()


async def test_an_outage_is_shown_and_ends_by_itself(redis_client: Any) -> None:
    parts = urlsplit(REDIS_URL)
    proxy = CuttableProxy((parts.hostname or "127.0.0.1", parts.port or 6379))
    port = await proxy.start()
    url = f"redis://127.0.0.1:{port}/{parts.path.strip('/') or 0}"
    clock = FakeClock()
    store = RedisStore(url, prefix=redis_client.freshkeep_prefix, backoff=1.0, clock=clock)
    try:
        key = store.key_for("summary", ("u1", 42))
        assert await store.put(key, make_entry({"table:a": 1}))
        proxy.cut()
        assert await store.get(key) is None
        assert await store.put(key, make_entry({"table:a": 2})) is False
        status = store.snapshot().to_dict()
        assert status["reachable"] is False and status["errors"] == 1 and status["skipped"] == 1
        proxy.restore()
        clock.advance(1.0)
        got = await store.get(key)
        assert got is not None and got.vector == {"table:a": 1}
        status = store.snapshot().to_dict()
        assert status["reachable"] is True and status["outage_started_at"] is None
        assert status["outages"] == 1 and status["errors"] == 1
    finally:
        await store.aclose()
        await proxy.aclose()


async def test_recovers_when_the_server_kills_its_connection(redis_client: Any) -> None:
    store = RedisStore(REDIS_URL, prefix=redis_client.freshkeep_prefix, secret=SECRET)
    try:
        key = store.key_for("summary", ("u1", 42))
        assert await store.put(key, make_entry({"table:a": 1}))
        for _ in range(2):
            client_id = await store.client.client_id()
            assert await redis_client.client_kill_filter(_id=client_id) == 1
            assert await store.get(key) is not None
            assert await store.client.client_id() != client_id
        assert await store.put(key, make_entry({"table:a": 2}))
        assert store.snapshot().errors == 0 and store.snapshot().reachable is True
    finally:
        await store.aclose()


async def test_a_decoding_client_is_refused() -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        with pytest.raises(ConfigurationError, match="decode"):
            RedisStore(client)
    finally:
        await client.aclose()


async def test_store_from_url() -> None:
    assert store_from_url("memory://") is None
    store = store_from_url("redis://127.0.0.1:1/0", prefix="x:", timeout=0.1)
    assert isinstance(store, RedisStore) and store.prefix == "x:"
    await store.aclose()
    with pytest.raises(ConfigurationError, match="memcached"):
        store_from_url("memcached://127.0.0.1")


async def test_store_from_settings() -> None:
    from freshkeep.settings import Settings
    from freshkeep.stores.base import store_from_settings

    assert store_from_settings(Settings(store_url="memory://")) is None
    settings = Settings(
        store_url="redis://127.0.0.1:1/0", store_secret="k", store_prefix="p:", store_ttl=5
    )
    store = store_from_settings(settings)
    assert isinstance(store, RedisStore)
    assert (store.secret, store.prefix, store.ttl) == (b"k", "p:", 5.0)
    await store.aclose()


class TestRedisStore(SharedStoreSuite):
    @pytest.fixture
    async def store(self, redis_client: Any) -> AsyncIterator[SharedStore]:
        s = RedisStore(redis_client, prefix=redis_client.freshkeep_prefix, secret=SECRET, ttl=60.0)
        yield s
        await s.aclose()

    @pytest.fixture
    def plant(self, redis_client: Any) -> Plant:
        async def plant(key: str, data: bytes) -> None:
            await redis_client.set(key, data)

        return plant


class TestUnsignedRedisStore(TestRedisStore):
    @pytest.fixture
    async def store(self, redis_client: Any) -> AsyncIterator[SharedStore]:
        s = RedisStore(redis_client, prefix=redis_client.freshkeep_prefix, ttl=60.0)
        yield s
        await s.aclose()
