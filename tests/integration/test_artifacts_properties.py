"""A property of the artifact GC: after any sequence of builds, orphans, clock moves and GC
runs, every row's object is stored, and after a GC no expired row and no unreferenced object
older than the grace remains (SQLite, local storage)."""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from freshkeep.artifacts import artifact_objects_table, artifacts_table
from tests.integration.artifacts_helpers import Builder, MovableClock, make_cache, sha, stored_ids

CONTENTS = [b"alpha", b"beta", b"gamma"]
KEYS = ["k0", "k1", "k2", "k3"]
TTL, STALE, GRACE = 50.0, 20.0, 30.0

operations = st.lists(
    st.one_of(
        st.tuples(st.just("build"), st.sampled_from(KEYS), st.integers(0, len(CONTENTS) - 1)),
        st.tuples(st.just("advance"), st.sampled_from([10.0, 40.0, 80.0])),
        st.tuples(st.just("gc")),
        st.tuples(st.just("orphan"), st.sampled_from([b"o1", b"o2"]), st.sampled_from([0, 100])),
    ),
    min_size=3,
    max_size=14,
)


async def scenario(ops: list[tuple[Any, ...]], root: Path) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{root / 'p.db'}")
    clock = MovableClock()
    build = Builder()
    cache = make_cache(
        engine, root, build, clock=clock, ttl=TTL, max_stale_on_error=STALE, orphan_grace=GRACE
    )
    try:
        await cache.create_tables()
        for op in ops:
            if op[0] == "build":
                build.content[op[1]] = CONTENTS[op[2]]
                await cache.get(op[1])
            elif op[0] == "advance":
                clock.advance(op[1])
            elif op[0] == "orphan":
                oid = sha(op[1])
                await cache.storage.put("exports", oid, op[1])
                at = clock.time() - op[2]
                os.utime(cache.storage.local_path("exports", oid), (at, at))
            else:
                await cache.gc()
            await check(cache, engine, clock, after_gc=op[0] == "gc")
    finally:
        await engine.dispose()


async def check(cache: Any, engine: Any, clock: MovableClock, *, after_gc: bool) -> None:
    t, o = artifacts_table, artifact_objects_table
    async with engine.connect() as conn:
        rows = (await conn.execute(select(t.c.artifact_id, t.c.expires_at))).all()
        touched = dict((await conn.execute(select(o.c.artifact_id, o.c.touched_at))).all())
    stored = stored_ids(cache)
    now = clock.time()
    referenced = {r.artifact_id for r in rows}
    assert referenced <= stored, "a row points at an object that is not stored"
    assert referenced <= set(touched), "a row's object has no object row"
    if not after_gc:
        return
    assert all(r.expires_at > now - STALE for r in rows), "GC left an expired row"
    for oid in stored - referenced:
        if oid in touched:
            assert touched[oid] >= now - GRACE, "GC left an unreferenced, untouched object"
        else:
            mtime = os.stat(cache.storage.local_path("exports", oid)).st_mtime
            assert mtime >= now - GRACE, "GC left an orphan older than the grace"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operations)
def test_gc_keeps_what_rows_use_and_only_that(ops: list[tuple[Any, ...]]) -> None:
    with tempfile.TemporaryDirectory(prefix="fk-artifacts-") as tmp:
        asyncio.run(scenario(ops, Path(tmp)))
