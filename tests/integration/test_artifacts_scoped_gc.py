"""GC scoped to a key prefix (one tenant's, one topic's artifacts) on SQLite and PostgreSQL:
exactly the expired rows of the prefix and the objects only they used, nothing else; and
safe while builds of keys in the scope run (an object GC takes meanwhile is written again)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from freshkeep.artifacts import ArtifactCache, artifact_objects_table, artifacts_table
from freshkeep.exceptions import ConfigurationError
from tests.docs_blocks import python_block, run_block
from tests.integration.artifacts_helpers import (  # noqa: F401 - artifact_engine: a fixture
    Builder,
    MovableClock,
    StatementCounter,
    artifact_engine,
    make_cache,
    sha,
    stored_ids,
)


async def rows(engine: AsyncEngine, cache: str = "exports") -> dict[str, str]:
    """Each key's object id."""
    t = artifacts_table
    async with engine.connect() as conn:
        found = await conn.execute(select(t.c.key, t.c.artifact_id).where(t.c.cache == cache))
        return {k: i for k, i in found}


async def object_rows(engine: AsyncEngine, cache: str = "exports") -> set[str]:
    o = artifact_objects_table
    async with engine.connect() as conn:
        found = await conn.execute(select(o.c.artifact_id).where(o.c.cache == cache))
        return {i for (i,) in found}


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock()


@pytest.fixture
async def setup(
    artifact_engine: AsyncEngine,  # noqa: F811
    tmp_path: Path,
    clock: MovableClock,
) -> tuple[ArtifactCache, Builder, AsyncEngine]:
    build = Builder()
    cache = make_cache(artifact_engine, tmp_path, build, clock=clock)
    await cache.create_tables()
    return cache, build, artifact_engine


async def test_a_scoped_gc_takes_the_expired_rows_of_its_prefix_and_their_objects_only(
    setup: Any, clock: MovableClock
) -> None:
    cache, build, engine = setup
    build.content.update({"t1/shared": b"shared", "t2/shared": b"shared"})
    expired = ["t1/a", "t1/shared", "t2/a", "t2/shared", "t10/a", "T1/a"]
    await cache.prebuild(expired)
    clock.advance(61)  # all of them expire
    await cache.prebuild(["t1/fresh"])
    orphan = sha(b"an orphan")  # on storage, unknown to the index, old: not this run's business
    await cache.storage.put("exports", orphan, b"an orphan")
    path = cache.storage.local_path("exports", orphan)
    os.utime(path, (time.time() - 3600, time.time() - 3600))

    result = await cache.gc(now=clock.time() + 31, prefix="t1/")  # past the orphan grace
    assert (result["rows"], result["objects"]) == (2, 1)  # "shared" is still t2/shared's
    assert (result["orphans"], result["temp_files"]) == (0, 0)
    assert set(await rows(engine)) == {"t2/a", "t2/shared", "t10/a", "T1/a", "t1/fresh"}
    gone = sha(build.data("t1/a"))
    assert gone not in stored_ids(cache) and gone not in await object_rows(engine)
    assert {sha(b"shared"), orphan} <= stored_ids(cache)
    assert (await cache.get("t1/fresh")).status == "hit"
    again = await cache.gc(now=clock.time() + 31, prefix="t1/")  # idempotent
    assert (again["rows"], again["objects"]) == (0, 0)

    result = await cache.gc(now=clock.time() + 31, prefix="t2/")  # now "shared" goes too
    assert (result["rows"], result["objects"]) == (2, 2)
    assert sha(b"shared") not in stored_ids(cache)
    assert set(await rows(engine)) == {"t10/a", "T1/a", "t1/fresh"}
    assert cache.stats.gc_runs == 3 and cache.stats.gc_rows == 4 and cache.stats.gc_objects == 3
    assert cache.stats.last_gc_at is None  # a scoped run is not a collection of the cache


async def test_a_prefix_is_compared_exactly_wildcards_and_case_included(
    setup: Any, clock: MovableClock
) -> None:
    cache, _, engine = setup
    await cache.prebuild(["a_%/1", "ab%/1", "a_x/1", "abc/1", "A_%/1", "a_%"])
    clock.advance(61)
    result = await cache.gc(now=clock.time() + 31, prefix="a_%/")
    assert result["rows"] == 1
    assert set(await rows(engine)) == {"ab%/1", "a_x/1", "abc/1", "A_%/1", "a_%"}
    long_key = "é" * 5 + "/1"  # characters, not bytes
    await cache.prebuild([long_key, "ééééé"])
    clock.advance(61)
    assert (await cache.gc(now=clock.time() + 31, prefix="ééééé/"))["rows"] == 1
    assert "ééééé" in await rows(engine)


async def test_an_object_touched_within_the_grace_stays_and_the_cache_wide_gc_takes_it(
    setup: Any, clock: MovableClock
) -> None:
    cache, _, engine = setup
    cache.ttl = 10.0
    await cache.prebuild(["t1/a"])
    clock.advance(20)
    result = await cache.gc(prefix="t1/")  # row expired 10 s ago, object touched 20 s ago
    assert (result["rows"], result["objects"]) == (1, 0)
    assert stored_ids(cache) == {sha(b"artifact:t1/a")} == await object_rows(engine)
    clock.advance(11)
    assert (await cache.gc(prefix="t1/"))["objects"] == 0  # no row names it any more
    assert (await cache.gc())["objects"] == 1
    assert stored_ids(cache) == set() and await object_rows(engine) == set()


async def test_a_scoped_gc_in_batches_issues_few_statements(
    setup: Any, clock: MovableClock
) -> None:
    cache, build, engine = setup
    cache.gc_batch = 4
    keys = [f"t1/{i}" for i in range(10)] + [f"t2/{i}" for i in range(5)]
    for i, k in enumerate(keys):
        build.content[k] = f"content {i % 3} of {k[:2]}".encode()  # t1: 3 objects, t2: 3
    await cache.prebuild(keys)
    clock.advance(61)
    counter = StatementCounter(engine)
    result = await cache.gc(now=clock.time() + 31, prefix="t1/")
    assert (result["rows"], result["objects"]) == (10, 3)
    deletes = [s for s in counter.statements if s.lstrip().upper().startswith("DELETE")]
    selects = [s for s in counter.statements if s.lstrip().upper().startswith("SELECT")]
    assert len(deletes) == 3 + 1  # rows: 4 + 4 + 2; objects: 3 ids in one batch
    assert len(selects) == 3  # one query finds each batch of rows; the objects need none
    assert result["statements"] == len(deletes) + len(selects)
    assert set(await rows(engine)) == {f"t2/{i}" for i in range(5)}
    assert len(stored_ids(cache)) == 3


async def test_a_bad_prefix_is_refused_before_any_query(setup: Any) -> None:
    cache, _, engine = setup
    counter = StatementCounter(engine)
    for bad in ("", "k" * 1025, 7, b"t1/"):
        with pytest.raises(ConfigurationError, match="leave it out to collect the whole cache"):
            await cache.gc(prefix=bad)
    assert counter.count == 0


# -- builds in flight for keys in the scope -------------------------------------------------


async def test_a_build_in_the_scope_whose_object_the_scoped_gc_took_writes_it_again(
    setup: Any, clock: MovableClock
) -> None:
    """The key's expired row and its object go while the key is rebuilt with the same bytes
    (as if the write took longer than the grace): the build's row is not written for a
    missing object; it starts over and writes both."""
    cache, _, engine = setup
    await cache.prebuild(["t1/a"])
    clock.advance(61)
    put = cache.storage.put
    results: list[dict[str, int]] = []

    async def put_then_scoped_gc(name: str, oid: str, data: bytes) -> None:
        await put(name, oid, data)
        if not results:
            results.append(await cache.gc(now=clock.time() + 3600, prefix="t1/"))

    cache.storage.put = put_then_scoped_gc  # type: ignore[method-assign]
    await cache.storage.delete("exports", [sha(b"artifact:t1/a")])  # so the build writes it
    art = await cache.get("t1/a")
    assert (results[0]["rows"], results[0]["objects"]) == (1, 1)
    assert cache.stats.rewrites == 1 and cache.stats.built == 2
    assert await cache.storage.exists("exports", art.id)
    assert await rows(engine) == {"t1/a": art.id}
    assert await object_rows(engine) == {art.id}


async def test_a_build_in_the_scope_that_touched_its_object_keeps_it(
    setup: Any, clock: MovableClock
) -> None:
    """The scoped GC runs between a rebuild's first touch and its row: the expired row goes,
    the object (touched now) stays, and the build's row lands on a stored object."""
    cache, build, engine = setup
    build.content["t1/a"] = b"v1"
    await cache.prebuild(["t1/a"])
    clock.advance(61)
    build.content["t1/a"] = b"v2"
    touch = cache.index.touch_object
    results: list[dict[str, int]] = []

    async def touch_then_scoped_gc(name: str, oid: str, size: int, now: float) -> None:
        await touch(name, oid, size, now)
        if not results:
            results.append(await cache.gc(prefix="t1/"))

    cache.index.touch_object = touch_then_scoped_gc  # type: ignore[method-assign]
    art = await cache.get("t1/a")
    assert (results[0]["rows"], results[0]["objects"]) == (1, 1)  # v1 goes, v2 stays
    assert art.id == sha(b"v2") and cache.stats.rewrites == 0
    assert stored_ids(cache) == {sha(b"v2")} == await object_rows(engine)
    assert await rows(engine) == {"t1/a": sha(b"v2")}


async def test_scoped_gcs_running_with_builds_that_share_objects_never_lose_one(
    artifact_engine: AsyncEngine,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Builds of keys under two prefixes, whose bytes collide within and across the
    prefixes, run while scoped GC loops (one per prefix, and a second one of the first) race
    them with a grace of 50 ms. After every read its object is stored; at the end every row's
    object is stored and every stored object is known to the index (no orphan), and once
    everything expired the scoped runs leave no row of their prefix."""
    build = Builder(delay=0.001)
    keys = [f"{p}/{i}" for p in ("a", "b") for i in range(12)]
    for n, k in enumerate(keys):
        build.content[k] = f"content {n % 8}".encode()  # 3 keys per object, across prefixes
    cache = make_cache(
        artifact_engine, tmp_path, build, ttl=0.05, orphan_grace=0.05, max_stale_on_error=0.0
    )
    await cache.create_tables()
    stop = asyncio.Event()
    runs: dict[str, int] = {"a/": 0, "b/": 0}
    missing = 0

    async def collector(prefix: str) -> None:
        while not stop.is_set():
            await cache.gc(prefix=prefix)
            runs[prefix] += 1
            await asyncio.sleep(0)

    async def builder(offset: int) -> None:
        nonlocal missing
        for round_ in range(6):
            wanted = [keys[(offset + round_ + j) % len(keys)] for j in range(6)]
            await cache.prebuild(wanted)
            for k in wanted[:2]:
                art = await cache.get(k)
                if not await cache.storage.exists("exports", art.id):
                    missing += 1
            await asyncio.sleep(0.04)

    gc_tasks = [asyncio.create_task(collector(p)) for p in ("a/", "b/", "a/")]
    try:
        await asyncio.gather(*(builder(i * 5) for i in range(4)))
    finally:
        stop.set()
        await asyncio.gather(*gc_tasks)
    assert missing == 0 and cache.stats.failed == 0
    assert runs["a/"] > 2 and runs["b/"] > 2
    assert cache.stats.gc_objects > 0  # objects were collected, and built again, meanwhile
    stored = stored_ids(cache)
    assert set((await rows(artifact_engine)).values()) <= stored
    assert stored <= await object_rows(artifact_engine)  # nothing only a storage sweep finds

    await asyncio.sleep(0.11)  # everything expired, every object past the grace
    await cache.gc(prefix="a/")
    assert all(k.startswith("b/") for k in await rows(artifact_engine))
    await cache.gc(prefix="b/")
    assert await rows(artifact_engine) == {}
    left = stored_ids(cache)  # objects a scoped run found touched: the cache-wide GC's
    assert left <= await object_rows(artifact_engine)
    result = await cache.gc()
    assert result["objects"] == len(left) and result["orphans"] == 0
    assert stored_ids(cache) == set() and await object_rows(artifact_engine) == set()


async def test_an_index_shared_by_two_caches_keeps_the_other_caches_rows(
    setup: Any, clock: MovableClock, tmp_path: Path
) -> None:
    cache, build, engine = setup
    other = make_cache(engine, tmp_path, build, name="reports", clock=clock)
    await cache.prebuild(["t1/a"])
    await other.prebuild(["t1/a"])
    clock.advance(61)
    assert (await cache.gc(prefix="t1/", now=clock.time() + 31))["rows"] == 1
    assert await rows(engine, "reports") == {"t1/a": sha(b"artifact:t1/a")}
    assert await cache.storage.exists("reports", sha(b"artifact:t1/a"))


async def test_the_docs_example_collects_one_tenant(
    artifact_engine: AsyncEngine,  # noqa: F811
    tmp_path: Path,
    clock: MovableClock,
) -> None:
    """docs/artifacts.md, "GC of one prefix": two of tenant 7's reports, one of whose bytes
    tenant 70 shares, expired; its GC takes both rows and the object only they used."""
    build = Builder()
    build.content.update({"tenant-7/q2@1": b"empty report", "tenant-70/q1@1": b"empty report"})
    reports = make_cache(artifact_engine, tmp_path, build, name="reports", clock=clock)
    await reports.create_tables()
    await reports.prebuild(["tenant-7/q1@3", "tenant-7/q2@1", "tenant-70/q1@1"])
    clock.advance(61 + 31)  # expired, and untouched for longer than the grace
    block = python_block("artifacts.md", "gc-prefix")
    found = await run_block(block, {"reports": reports})
    assert (found["counts"]["rows"], found["counts"]["objects"]) == (2, 1)
    assert set(await rows(artifact_engine, "reports")) == {"tenant-70/q1@1"}
