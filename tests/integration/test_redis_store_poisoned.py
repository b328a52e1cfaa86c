"""RedisStore against values in Redis that no instance wrote: whatever revisions they claim,
they never keep a genuine write out; every write path sets the TTL."""

from __future__ import annotations

import struct
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from freshkeep import Keeper
from freshkeep.core.codec import encode_entry
from freshkeep.core.entry import Entry, SectionEntry
from freshkeep.health import Level, env_names
from freshkeep.stores.redis import RedisStore
from freshkeep.testing import MemoryRevisions

pytestmark = pytest.mark.redis

SECRET = b"shared-secret"
HUGE = 10**12
TTL_MS = 60_000


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


@pytest.fixture
async def unsigned(redis_client: Any) -> AsyncIterator[RedisStore]:
    s = RedisStore(redis_client, prefix=redis_client.freshkeep_prefix, ttl=60.0)
    yield s
    await s.aclose()


async def assert_ttl(redis_client: Any, key: str) -> None:
    assert 0 < await redis_client.pttl(key) <= TTL_MS


async def test_a_forged_entry_claiming_a_huge_revision_does_not_block_genuine_writes(
    store: RedisStore, redis_client: Any
) -> None:
    key = store.key_for("summary", ("u1", 42))
    forged = make_entry({"table:a": HUGE}, body=b'{"admin":true}')
    await redis_client.set(key, encode_entry(forged, secret=b"not the secret"))  # no TTL
    assert await redis_client.pttl(key) == -1

    genuine = make_entry({"table:a": 1}, body=b'{"admin":false}')
    assert await store.put(key, genuine) is True
    await assert_ttl(redis_client, key)
    back = await store.get(key)
    assert back is not None
    assert (back.body, back.vector, back.etag) == (genuine.body, genuine.vector, genuine.etag)

    snap = store.snapshot()
    assert (snap.poisoned, snap.stored, snap.rejected, snap.corrupt) == (1, 1, 0, 0)
    assert snap.last_poisoned is not None and snap.last_poisoned.startswith(key)
    assert "signature" in snap.last_poisoned and snap.last_poisoned_at is not None
    # Design rule 3 still holds for what replaced it.
    assert await store.put(key, make_entry({"table:a": 0})) is False
    assert store.snapshot().rejected == 1 and store.snapshot().poisoned == 1


def _header_frame(flag: bytes, header: bytes, rest: bytes = b"") -> bytes:
    return b"FK1" + flag + struct.pack(">I", len(header)) + header + rest


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("unsigned", "unsigned"),  # refused by the script at once
        ("foreign", "signature"),  # read by the client
        ("wrong-etag", "signature"),
        ("header-not-json", "signature"),  # the script cannot parse it: the client decides
        ("header-without-vector", "no revision vector"),
        ("truncated-header", "truncated"),
        ("bad-flag", "flag"),
        ("garbage", "magic"),
        ("hash", "not a string"),
    ],
)
async def test_a_value_no_instance_wrote_is_replaced_and_counted(
    store: RedisStore, redis_client: Any, name: str, why: str
) -> None:
    key = store.key_for("summary", ("u1", 42))
    huge = make_entry({"table:a": HUGE})
    header = b'{"vec":{"table:a":%d}}' % HUGE
    values: dict[str, bytes] = {
        "unsigned": encode_entry(huge),
        "foreign": encode_entry(huge, secret=b"other"),
        "wrong-etag": encode_entry(huge, secret=SECRET).replace(
            huge.etag[3:-1].encode(), b"0" * len(huge.etag[3:-1])
        ),
        "header-not-json": _header_frame(b"S", b"{not json " + header, b"x" * 32),
        "header-without-vector": _header_frame(b"S", b'{"view":"summary"}', b"x" * 32),
        "truncated-header": _header_frame(b"S", header, b"x" * 29),
        "bad-flag": _header_frame(b"Z", header),
        "garbage": b"\x80\x04\x95 not an entry",
    }
    if name == "hash":
        await redis_client.hset(key, "vec", HUGE)
    else:
        await redis_client.set(key, values[name])

    assert await store.put(key, make_entry({"table:a": 1}, body=b'{"n":1}'))
    await assert_ttl(redis_client, key)
    back = await store.get(key)
    assert back is not None and back.vector == {"table:a": 1}
    snap = store.snapshot()
    assert snap.poisoned == 1 and snap.errors == 0, snap
    assert snap.last_poisoned is not None and why in snap.last_poisoned, snap.last_poisoned


async def test_an_entry_copied_under_another_key_does_not_block_it(
    store: RedisStore, redis_client: Any
) -> None:
    alice = store.key_for("summary", ("alice", 1))
    bob = store.key_for("summary", ("bob", 1))
    assert await store.put(alice, make_entry({"table:a": HUGE}, key=("alice", 1)))
    await redis_client.set(bob, await redis_client.get(alice))
    assert await store.put(bob, make_entry({"table:a": 1}, key=("bob", 1)))
    back = await store.get(bob)
    assert back is not None and back.key == ("bob", 1)
    assert "another key" in (store.snapshot().last_poisoned or "")


async def test_every_write_path_sets_the_ttl(store: RedisStore, redis_client: Any) -> None:
    key = store.key_for("summary", ("u1", 42))
    # An absent key.
    assert await store.put(key, make_entry({"table:a": 1}))
    await assert_ttl(redis_client, key)
    # Over an older genuine entry (the script stores at once).
    await redis_client.persist(key)
    assert await store.put(key, make_entry({"table:a": 2}))
    await assert_ttl(redis_client, key)
    # A refused put leaves the stored entry and its TTL alone.
    assert not await store.put(key, make_entry({"table:a": 1}))
    await assert_ttl(redis_client, key)
    # Over a value that is not an entry (the script replaces it at once).
    await redis_client.set(key, b"garbage")
    assert await store.put(key, make_entry({"table:a": 3}))
    await assert_ttl(redis_client, key)
    # Over a forged entry claiming newer revisions (replaced after the client read it).
    await redis_client.set(key, encode_entry(make_entry({"table:a": HUGE}), secret=b"x"))
    assert await store.put(key, make_entry({"table:a": 4}))
    await assert_ttl(redis_client, key)
    assert store.snapshot().poisoned == 2


async def test_a_value_that_changes_while_it_is_replaced_is_compared_again(
    store: RedisStore, redis_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client reads a forged value; before it replaces it, another instance stores a
    genuine entry built from newer revisions: the replacement must not overwrite that one."""
    key = store.key_for("summary", ("u1", 42))
    await redis_client.set(key, encode_entry(make_entry({"table:a": HUGE}), secret=b"x"))
    newer = encode_entry(make_entry({"table:a": 9}, body=b'{"n":9}'), secret=SECRET)
    replace = store._replace
    calls = 0

    async def racing(**kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            await redis_client.set(key, newer, px=TTL_MS)
        return await replace(**kwargs)

    monkeypatch.setattr(store, "_replace", racing)
    assert await store.put(key, make_entry({"table:a": 5}, body=b'{"n":5}')) is False
    back = await store.get(key)
    assert back is not None and back.body == b'{"n":9}'
    snap = store.snapshot()
    assert (calls, snap.rejected, snap.poisoned, snap.stored) == (1, 1, 0, 0)


async def test_a_value_deleted_while_it_is_replaced_is_stored_on_the_next_round(
    store: RedisStore, redis_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = store.key_for("summary", ("u1", 42))
    await redis_client.set(key, encode_entry(make_entry({"table:a": HUGE}), secret=b"x"))
    replace = store._replace

    async def racing(**kwargs: Any) -> Any:
        await redis_client.delete(key)
        return await replace(**kwargs)

    monkeypatch.setattr(store, "_replace", racing)
    assert await store.put(key, make_entry({"table:a": 5}))
    await assert_ttl(redis_client, key)
    snap = store.snapshot()
    assert (snap.stored, snap.poisoned) == (1, 0)  # it was gone before it could be replaced


async def test_a_genuine_newer_entry_is_read_and_still_refuses(
    store: RedisStore, redis_client: Any
) -> None:
    key = store.key_for("summary", ("u1", 42))
    assert await store.put(key, make_entry({"table:a": 5, "table:b": 1}, body=b'{"v":5}'))
    assert not await store.put(key, make_entry({"table:a": 4, "table:b": 9}, body=b'{"v":4}'))
    got = await store.get(key)
    assert got is not None and got.body == b'{"v":5}'
    snap = store.snapshot()
    assert (snap.stored, snap.rejected, snap.poisoned) == (1, 1, 0)


async def test_without_a_secret_a_well_formed_entry_in_redis_is_trusted(
    unsigned: RedisStore, redis_client: Any
) -> None:
    """What the docs say: without a secret, whoever can write to Redis can plant an entry that
    is served and refuses older writes. One that cannot be decoded still never blocks."""
    key = unsigned.key_for("summary", ("u1", 42))
    planted = make_entry({"table:a": HUGE}, body=b'{"planted":1}')
    await redis_client.set(key, encode_entry(planted))
    assert await unsigned.put(key, make_entry({"table:a": 1})) is False
    got = await unsigned.get(key)
    assert got is not None and got.body == b'{"planted":1}'

    broken = encode_entry(planted).replace(b'{"planted":1}', b'{"planted":2}')  # ETag holds,
    broken = broken.replace(planted.etag[3:-1].encode(), b"0" * 24)  # but not this one
    await redis_client.set(key, broken)
    assert await unsigned.put(key, make_entry({"table:a": 1})) is True
    await assert_ttl(redis_client, key)
    assert unsigned.snapshot().poisoned == 1 and "ETag" in (unsigned.stats.last_poisoned or "")


async def test_the_store_check_warns_about_a_replaced_forgery(
    store: RedisStore, redis_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in env_names():
        monkeypatch.delenv(var, raising=False)
    keeper = Keeper(MemoryRevisions(), shared=store)
    try:
        check = (await keeper.health.run()).get("store")
        assert check is not None and check.level is Level.OK
        key = store.key_for("summary", ("u1", 42))
        await redis_client.set(key, encode_entry(make_entry({"table:a": HUGE}), secret=b"x"))
        assert await store.put(key, make_entry({"table:a": 1}))
        report = await keeper.health.run()
        check = report.get("store")
        assert check is not None and check.level is Level.WARNING, check
        assert report.status == "degraded"
        assert "RedisStore" in check.detail and key in check.detail
        assert check.data["poisoned"] == 1 and check.data["reachable"] is True
        assert keeper.snapshot().shared is not None and keeper.snapshot().shared.poisoned == 1
    finally:
        await keeper.aclose()
