"""Artifact caches on SQLite and on PostgreSQL with local storage: prebuild, get, GC (also
while builds run), stale-if-error, health, and the jobs that drive them."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from freshkeep import Keeper
from freshkeep.artifacts import ArtifactCache, artifact_objects_table, artifacts_table
from freshkeep.exceptions import ArtifactBuildError, ConfigurationError, StoreError
from freshkeep.settings import Settings
from tests.integration.artifacts_helpers import (  # noqa: F401 - artifact_engine: a fixture
    Builder,
    MovableClock,
    StatementCounter,
    artifact_engine,
    make_cache,
    sha,
    stored_ids,
)


async def rows(engine: AsyncEngine, cache: str = "exports") -> dict[str, Any]:
    t = artifacts_table
    async with engine.connect() as conn:
        found = await conn.execute(select(t).where(t.c.cache == cache))
        return {r.key: r for r in found}


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


# -- prebuild ------------------------------------------------------------------------------


async def test_prebuild_two_keys_builds_both_and_writes_their_rows(setup: Any) -> None:
    cache, build, engine = setup
    result = await cache.prebuild(["topic-1", "topic-2"])
    assert result == {"requested": 2, "built": 2, "skipped": 0, "failed": 0}
    assert sorted(build.calls) == ["topic-1", "topic-2"]
    found = await rows(engine)
    assert set(found) == {"topic-1", "topic-2"}
    for key, row in found.items():
        data = build.data(key)
        assert row.artifact_id == sha(data) and row.size == len(data)
        assert row.expires_at == pytest.approx(row.created_at + 60.0)
        assert row.attempts == 1 and row.last_error is None and row.build_seconds >= 0
    assert stored_ids(cache) == {sha(build.data("topic-1")), sha(build.data("topic-2"))}
    assert await cache.storage.read("exports", sha(build.data("topic-1"))) == b"artifact:topic-1"


async def test_prebuild_skips_a_fresh_key(setup: Any) -> None:
    cache, build, _ = setup
    await cache.prebuild(["a"])
    build.calls.clear()
    before = cache.snapshot().to_dict()
    result = await cache.prebuild(["a", "b"])
    assert result == {"requested": 2, "built": 1, "skipped": 1, "failed": 0}
    assert build.calls == ["b"]
    after = cache.snapshot().to_dict()
    assert (after["built"] - before["built"], after["skipped"] - before["skipped"]) == (1, 1)


async def test_prebuild_of_nothing_queries_and_builds_nothing(setup: Any) -> None:
    cache, build, engine = setup
    counter = StatementCounter(engine)
    assert await cache.prebuild([]) == {"requested": 0, "built": 0, "skipped": 0, "failed": 0}
    assert build.calls == [] and counter.count == 0


async def test_prebuild_rebuilds_an_expired_key(setup: Any, clock: MovableClock) -> None:
    cache, build, engine = setup
    await cache.prebuild(["a"])
    clock.advance(61)
    assert (await cache.prebuild(["a"]))["built"] == 1
    assert build.calls == ["a", "a"]
    assert (await rows(engine))["a"].expires_at > clock.time()


# -- get -----------------------------------------------------------------------------------


async def test_get_on_a_fresh_row_returns_its_url_without_building(setup: Any) -> None:
    cache, build, _ = setup
    await cache.prebuild(["a"])
    build.calls.clear()
    art = await cache.get("a")
    assert build.calls == []
    assert art.status == "hit" and art.id == sha(b"artifact:a") and art.size == len(b"artifact:a")
    assert art.url.startswith(f"/artifacts/exports/{art.id}?expires=")
    assert art.url_expires_at > time.time()
    assert cache.stats.hits == 1 and cache.stats.misses == 0


async def test_a_miss_builds_once_for_twenty_concurrent_gets(
    setup: Any, clock: MovableClock
) -> None:
    cache, build, engine = setup
    build.delay = 0.05
    arts = await asyncio.gather(*(cache.get("hot") for _ in range(20)))
    assert build.calls == ["hot"]
    assert {a.id for a in arts} == {sha(b"artifact:hot")}
    # The builder ran once; a reader that arrives after the row is written rightly sees a
    # hit, so only the mix is checked, and at least the builder's own caller saw the miss.
    statuses = [a.status for a in arts]
    assert set(statuses) <= {"miss", "hit"} and "miss" in statuses
    row = (await rows(engine))["hot"]
    assert row.artifact_id == sha(b"artifact:hot") and row.expires_at > clock.time()
    assert (await cache.get("hot")).status == "hit" and build.calls == ["hot"]


async def test_keys_with_the_same_bytes_share_one_object(setup: Any) -> None:
    cache, build, engine = setup
    build.content.update({"a": b"same", "b": b"same"})
    await cache.prebuild(["a", "b"])
    found = await rows(engine)
    assert found["a"].artifact_id == found["b"].artifact_id == sha(b"same")
    assert stored_ids(cache) == {sha(b"same")}


# -- GC ------------------------------------------------------------------------------------


async def test_gc_deletes_exactly_the_expired_rows_and_their_objects(
    setup: Any, clock: MovableClock
) -> None:
    cache, build, engine = setup
    await cache.prebuild(["old-1", "old-2"])
    clock.advance(61)  # the first two expire
    await cache.prebuild(["fresh"])
    fresh_id = sha(build.data("fresh"))
    result = await cache.gc(now=clock.time() + 31)  # past the orphan grace
    assert result["rows"] == 2 and result["objects"] == 2
    assert set(await rows(engine)) == {"fresh"}
    assert stored_ids(cache) == {fresh_id}
    assert await object_rows(engine) == {fresh_id}
    assert (await cache.get("fresh")).status == "hit"
    again = await cache.gc(now=clock.time() + 31)  # idempotent
    assert (again["rows"], again["objects"], again["orphans"]) == (0, 0, 0)
    assert stored_ids(cache) == {fresh_id}


async def test_gc_keeps_an_object_a_fresh_row_shares(setup: Any, clock: MovableClock) -> None:
    cache, build, engine = setup
    build.content.update({"old": b"shared", "new": b"shared"})
    await cache.prebuild(["old"])
    clock.advance(61)
    await cache.prebuild(["new"])
    result = await cache.gc(now=clock.time() + 31)
    assert (result["rows"], result["objects"]) == (1, 0)
    assert set(await rows(engine)) == {"new"}
    assert stored_ids(cache) == {sha(b"shared")}


async def test_gc_keeps_a_touched_object_for_the_grace_period(
    setup: Any, clock: MovableClock
) -> None:
    cache, _, _ = setup
    await cache.prebuild(["a"])
    clock.advance(61)
    result = await cache.gc()  # the row goes; its object was touched 61 s ago > 30 s grace
    assert (result["rows"], result["objects"]) == (1, 1)
    cache.ttl = 10.0
    await cache.prebuild(["b"])
    clock.advance(20)
    result = await cache.gc()  # row expired 10 s ago, object touched 20 s ago: kept
    assert (result["rows"], result["objects"]) == (1, 0)
    assert stored_ids(cache) == {sha(b"artifact:b")}
    clock.advance(11)
    assert (await cache.gc())["objects"] == 1
    assert stored_ids(cache) == set()


async def test_gc_deletes_orphans_older_than_the_grace_and_keeps_younger_ones(
    setup: Any,
) -> None:
    cache, _, engine = setup
    old, young = sha(b"orphan-old"), sha(b"orphan-young")
    await cache.storage.put("exports", old, b"orphan-old")
    await cache.storage.put("exports", young, b"orphan-young")
    path = cache.storage.local_path("exports", old)
    os.utime(path, (time.time() - 3600, time.time() - 3600))
    tmp = Path(path).parent / ".tmp-leftover"
    tmp.write_bytes(b"half")
    os.utime(tmp, (time.time() - 3600, time.time() - 3600))
    result = await cache.gc(now=time.time())
    assert (result["orphans"], result["objects"], result["temp_files"]) == (1, 1, 1)
    assert stored_ids(cache) == {young}
    assert not tmp.exists()
    assert await object_rows(engine) == set()


async def test_the_object_a_key_was_rebuilt_away_from_is_collected(
    setup: Any, clock: MovableClock
) -> None:
    cache, build, _ = setup
    await cache.prebuild(["a"])
    clock.advance(61)
    build.content["a"] = b"version 2"
    await cache.prebuild(["a"])
    result = await cache.gc(now=clock.time() + 31)
    assert (result["rows"], result["objects"]) == (0, 1)
    assert stored_ids(cache) == {sha(b"version 2")}


async def test_gc_in_batches_issues_few_statements(setup: Any, clock: MovableClock) -> None:
    cache, build, engine = setup
    cache.gc_batch = 4
    keys = [f"k{i}" for i in range(10)]
    for i, k in enumerate(keys):
        build.content[k] = f"content {i % 3}".encode()  # 10 rows share 3 objects
    await cache.prebuild(keys)
    clock.advance(61)
    counter = StatementCounter(engine)
    result = await cache.gc(now=clock.time() + 31, orphans=False)
    assert (result["rows"], result["objects"]) == (10, 3)
    deletes = [s for s in counter.statements if s.lstrip().upper().startswith("DELETE")]
    assert len(deletes) == 3 + 1  # rows: 4 + 4 + 2; objects: 3 in one batch
    # and one query finds each batch: 3 for the rows, 1 for the objects
    selects = [s for s in counter.statements if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) == 3 + 1
    assert result["statements"] == len(deletes) + len(selects) == 8
    assert stored_ids(cache) == set() and await rows(engine) == {}


# -- concurrency: GC while builds reuse the same objects -----------------------------------


async def test_gc_running_with_builds_that_reuse_its_objects_never_loses_one(
    artifact_engine: AsyncEngine,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Builds of keys whose bytes collide run while GC loops with a grace so short that it
    races every build. No artifact's object is missing while the artifact is fresh, and after
    each step every row's object is stored."""
    build = Builder(delay=0.001)
    for i in range(24):
        build.content[f"k{i}"] = f"content {i % 8}".encode()  # 3 keys per object
    cache = make_cache(
        artifact_engine, tmp_path, build, ttl=0.05, orphan_grace=0.05, max_stale_on_error=0.0
    )
    await cache.create_tables()
    stop = asyncio.Event()
    gc_runs = 0

    async def collector() -> None:
        nonlocal gc_runs
        while not stop.is_set():
            await cache.gc()
            gc_runs += 1
            await asyncio.sleep(0)

    async def builder(offset: int) -> None:
        for round_ in range(6):
            keys = [f"k{(offset + round_ + j) % 24}" for j in range(6)]
            await cache.prebuild(keys)
            for k in keys[:2]:
                art = await cache.get(k)
                if not await cache.storage.exists("exports", art.id):
                    # an artifact handed out just before it expired may be collected at its
                    # expiry (max_stale_on_error is 0): never while it is fresh
                    assert cache.clock.time() >= art.expires_at, (k, art)
            await asyncio.sleep(0.04)

    gc_tasks = [asyncio.create_task(collector()) for _ in range(2)]
    try:
        await asyncio.gather(*(builder(i * 5) for i in range(4)))
    finally:
        stop.set()
        await asyncio.gather(*gc_tasks)
    assert gc_runs > 2
    assert cache.stats.failed == 0
    assert cache.stats.gc_objects > 0  # objects were collected, and built again, meanwhile
    stored = stored_ids(cache)
    for row in (await rows(artifact_engine)).values():
        assert row.artifact_id in stored
    await asyncio.sleep(0.11)
    await cache.gc()
    assert stored_ids(cache) == set() and await rows(artifact_engine) == {}


# -- stale-if-error and failures -----------------------------------------------------------


async def test_a_failing_builder_is_counted_and_writes_no_row(setup: Any) -> None:
    cache, build, engine = setup
    build.failing.add("bad")
    with pytest.raises(ArtifactBuildError) as err:
        await cache.prebuild(["bad", "good"])
    assert err.value.cache == "exports" and err.value.key == "bad"
    assert err.value.counts == {"requested": 2, "built": 1, "skipped": 0, "failed": 1}
    assert set(await rows(engine)) == {"good"}
    assert cache.stats.failed == 1
    with pytest.raises(ArtifactBuildError, match="cannot build bad"):
        await cache.get("bad")
    assert cache.stats.failed == 2 and cache.stats.unavailable == 1
    health = asdict(await cache.health_data())
    assert health["failing_keys"] == 1 and "cannot build bad" in health["last_error"]
    build.failing.clear()
    assert (await cache.get("bad")).status == "miss"
    assert (await cache.health_data()).failing_keys == 0


async def test_stale_if_error_serves_the_last_good_artifact_within_the_bound(
    artifact_engine: AsyncEngine,  # noqa: F811
    tmp_path: Path,
    clock: MovableClock,
) -> None:
    build = Builder()
    cache = make_cache(artifact_engine, tmp_path, build, clock=clock, max_stale_on_error=100.0)
    await cache.create_tables()
    first = await cache.get("a")
    clock.advance(60 + 50)  # expired 50 s ago: within the bound
    build.failing.add("a")
    art = await cache.get("a")
    assert art.status == "error-stale" and art.id == first.id
    assert cache.stats.stale_served == 1
    with pytest.raises(ArtifactBuildError):
        await cache.prebuild(["a"])  # the job still fails, so it is retried
    result = await cache.gc()  # the stale row is kept within the bound
    assert (result["rows"], result["objects"]) == (0, 0)
    health = asdict(await cache.health_data())
    assert health["stale_rows"] == 1 and health["gc_backlog"] == 0
    assert health["prebuild_backlog"] == 0
    assert health["oldest_expired_age"] is None and health["failing_keys"] == 1
    clock.advance(51)  # beyond the bound
    with pytest.raises(ArtifactBuildError, match="max_stale_on_error"):
        await cache.get("a")
    health = asdict(await cache.health_data())
    assert health["gc_backlog"] == 1 and health["oldest_expired_age"] == pytest.approx(1.0)
    assert (await cache.gc())["rows"] == 1
    row = (await rows(artifact_engine)).get("a")
    assert row is None


async def test_last_error_and_attempts_are_recorded_on_the_next_good_row(setup: Any) -> None:
    cache, build, engine = setup
    build.failing.add("a")
    with pytest.raises(ArtifactBuildError):
        await cache.prebuild(["a"], attempt=1)
    build.failing.clear()
    await cache.prebuild(["a"], attempt=2)
    row = (await rows(engine))["a"]
    assert row.attempts == 2 and "cannot build a" in row.last_error


# -- keeper, stats -------------------------------------------------------------------------


async def test_a_cache_registers_on_its_keeper(
    artifact_engine: AsyncEngine,  # noqa: F811
    tmp_path: Path,
) -> None:
    keeper = Keeper(settings=Settings())
    cache = make_cache(artifact_engine, tmp_path, Builder(), clock=None, keeper=keeper)
    await cache.create_tables()
    await cache.get("a")
    stats = keeper.snapshot().artifacts["exports"]
    assert stats.misses == 1 and stats.built == 1
    assert keeper.artifacts == {"exports": cache}
    with pytest.raises(ConfigurationError, match="exports"):
        make_cache(artifact_engine, tmp_path, Builder(), keeper=keeper)
    await keeper.aclose()


# -- the real job queue --------------------------------------------------------------------


async def test_prebuild_jobs_on_the_sql_job_queue_retry_with_backoff(
    artifact_engine: AsyncEngine,  # noqa: F811
    tmp_path: Path,
    clock: MovableClock,
) -> None:
    from freshkeep.jobs import SQLJobQueue

    build = Builder()
    build.fail_times["b"] = 2
    cache = make_cache(artifact_engine, tmp_path, build, clock=clock)
    await cache.create_tables()
    queue = SQLJobQueue(artifact_engine, clock=clock, create_tables=True, poll_interval=0.05)
    cache.register_jobs(queue, backoff=1.0, max_backoff=10.0)
    await queue.create_tables()
    async with artifact_engine.begin() as conn:  # the job commits with the caller's write
        first = await cache.enqueue_prebuild(queue, ["a", "b"], change_id="c-1", connection=conn)
    again = await cache.enqueue_prebuild(queue, ["a", "b"], change_id="c-1")
    assert first.enqueued and (again.enqueued, again.reason) == (False, "deduplicated")
    assert first.job_id is not None
    try:
        await queue.drain()
        job = await queue.get_job(first.job_id)
        assert job is not None and job.status == "waiting" and job.attempts == 1
        assert job.run_at == pytest.approx(clock.time() + 1.0)
        assert "cannot build b" in (job.last_error or "")
        assert set(await rows(artifact_engine)) == {"a"}  # no row for the failed key
        clock.advance(1.0)
        await queue.drain()
        job = await queue.get_job(first.job_id)
        assert job is not None and job.status == "waiting" and job.attempts == 2
        assert job.run_at == pytest.approx(clock.time() + 2.0)  # the backoff doubles
        clock.advance(2.0)
        await queue.drain()
        job = await queue.get_job(first.job_id)
        assert job is not None and job.status == "done"
    finally:
        await queue.aclose()
    assert sorted(build.calls) == ["a", "b", "b", "b"]  # "a" is skipped by the retries
    found = await rows(artifact_engine)
    assert found["b"].attempts == 3 and "cannot build b yet" in found["b"].last_error
    assert cache.stats.failed == 2 and cache.stats.skipped == 2
    assert queue.snapshot().retried == 2


async def test_a_rolled_back_change_enqueues_nothing(
    artifact_engine: AsyncEngine,  # noqa: F811
    tmp_path: Path,
) -> None:
    from freshkeep.jobs import SQLJobQueue

    build = Builder()
    cache = make_cache(artifact_engine, tmp_path, build)
    await cache.create_tables()
    queue = SQLJobQueue(artifact_engine, create_tables=True, poll_interval=0.05)
    cache.register_jobs(queue, gc_every=3600.0)
    await queue.create_tables()
    async with artifact_engine.connect() as conn:
        await conn.begin()
        await cache.enqueue_prebuild(queue, ["a"], change_id=1, connection=conn)
        await conn.rollback()
    await queue.drain()
    assert build.calls == [] and await rows(artifact_engine) == {}
    await queue.aclose()


# -- migration 0005 ------------------------------------------------------------------------


async def test_migration_0005_creates_the_tables_create_tables_makes(
    artifact_engine: AsyncEngine,  # noqa: F811
    tmp_path: Path,
) -> None:
    from sqlalchemy import inspect

    from freshkeep.sql import migrate as m

    result = await m.upgrade_async(artifact_engine, "0005")
    assert result.after == "0005" and any(a.startswith("0005: ") for a in result.applied)

    def shape(conn: Any) -> dict[str, Any]:
        insp = inspect(conn)
        return {
            t: (
                [(c["name"], str(c["type"]), c["nullable"]) for c in insp.get_columns(t)],
                sorted(i["name"] for i in insp.get_indexes(t)),
                insp.get_pk_constraint(t)["constrained_columns"],
            )
            for t in ("freshkeep_artifacts", "freshkeep_artifact_objects")
        }

    async with artifact_engine.connect() as conn:
        migrated = await conn.run_sync(shape)
    cache = make_cache(artifact_engine, tmp_path, Builder())
    await cache.create_tables()  # adopts the migrated tables: nothing to do
    assert (await cache.prebuild(["a"]))["built"] == 1
    down = await m.downgrade_async(artifact_engine, "0004")
    assert down.after == "0004"
    await cache.create_tables()
    async with artifact_engine.connect() as conn:
        created = await conn.run_sync(shape)
    assert created == migrated
    assert (await m.upgrade_async(artifact_engine, "0005")).after == "0005"  # adopts them


async def test_the_keepers_health_check_reads_the_caches_health_data(
    artifact_engine: AsyncEngine,  # noqa: F811
    tmp_path: Path,
) -> None:
    keeper = Keeper(settings=Settings())
    build = Builder()
    cache = make_cache(artifact_engine, tmp_path, build, keeper=keeper)
    await cache.create_tables()
    await cache.prebuild(["a"])
    (ok,) = [c for c in (await keeper.health.run()).checks if c.name == "artifacts:exports"]
    assert ok.level.value == "ok" and ok.data["gc_backlog"] == 0
    build.failing.add("b")
    with pytest.raises(ArtifactBuildError):
        await cache.prebuild(["b"])
    (bad,) = [c for c in (await keeper.health.run()).checks if c.name == "artifacts:exports"]
    assert bad.level.value == "warning" and bad.data["failing_keys"] == 1
    assert "cannot build b" in bad.detail
    await keeper.aclose()


async def test_the_prebuild_backlog_counts_keys_not_built_yet(setup: Any) -> None:
    cache, build, _ = setup
    release = asyncio.Event()
    inner = build.__call__

    async def slow(key: str) -> Any:
        await release.wait()
        return await inner(key)

    cache._builder = slow
    cache.concurrency = 2
    job = asyncio.create_task(cache.prebuild(["a", "b", "c"]))
    while cache.in_flight < 2:
        await asyncio.sleep(0.001)
    assert (await cache.health_data()).prebuild_backlog == 3
    release.set()
    assert (await job)["built"] == 3
    health = asdict(await cache.health_data())
    assert health["prebuild_backlog"] == 0 and health["in_flight"] == 0


async def test_a_build_whose_object_gc_took_meanwhile_writes_it_again(
    setup: Any, clock: MovableClock
) -> None:
    """GC takes the object between the build's touch and its row (as if the write had taken
    longer than the grace): the row is not written for a missing object; the build starts
    over and writes both."""
    cache, _, engine = setup
    put = cache.storage.put
    raced = 0

    async def put_then_gc(name: str, oid: str, data: bytes) -> None:
        nonlocal raced
        await put(name, oid, data)
        if not raced:
            raced += 1
            deleted, _ = await cache.index.collect_objects(
                name, clock.time() + 3600, 100, partial(cache.storage.delete, name)
            )
            assert deleted == 1 and not await cache.storage.exists(name, oid)

    cache.storage.put = put_then_gc  # type: ignore[method-assign]
    art = await cache.get("a")
    assert cache.stats.rewrites == 1 and cache.stats.built == 1
    assert await cache.storage.exists("exports", art.id)
    assert (await rows(engine))["a"].artifact_id == art.id
    assert await object_rows(engine) == {art.id}


async def test_a_gc_whose_storage_delete_fails_keeps_its_rows_and_retries(
    setup: Any, clock: MovableClock
) -> None:
    cache, _, engine = setup
    await cache.prebuild(["a"])
    clock.advance(61)
    delete = cache.storage.delete
    calls = 0

    async def failing_delete(name: str, ids: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise StoreError("storage is down")
        await delete(name, ids)

    cache.storage.delete = failing_delete  # type: ignore[method-assign]
    with pytest.raises(StoreError, match="storage is down"):
        await cache.gc()
    assert await rows(engine) == {}  # the expired row went in a transaction of its own
    assert await object_rows(engine) == {sha(b"artifact:a")}  # rolled back with the failure
    assert stored_ids(cache) == {sha(b"artifact:a")}
    result = await cache.gc()
    assert result["objects"] == 1 and stored_ids(cache) == set()
    assert await object_rows(engine) == set()
