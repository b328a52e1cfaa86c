"""GC in one process while two others build artifacts that share its objects (PostgreSQL,
one storage directory): no row ever points at a missing object. The same with GC scoped to
a key prefix, whose keys share objects with keys outside it."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from freshkeep.artifacts import artifacts_table
from tests.conftest import PgSchema
from tests.integration.artifacts_helpers import Builder, make_cache, stored_ids
from tests.integration.artifacts_worker import run

pytestmark = pytest.mark.postgres
TIMEOUT = 120.0


async def test_gc_and_builders_in_separate_processes_lose_no_object(
    pg_schema: PgSchema, tmp_path: Path
) -> None:
    out = await _race(pg_schema, tmp_path, "gc")
    assert out[2]["gc_runs"] > 5 and out[2]["gc_objects"] > 0


async def test_scoped_gc_and_builders_in_separate_processes_lose_no_object(
    pg_schema: PgSchema, tmp_path: Path
) -> None:
    out = await _race(pg_schema, tmp_path, "gc:k1")  # k1, k10..k17: objects shared with k0..
    # What a scoped run may take (an object only its prefix's expired rows used, past the
    # grace) depends on timing; that none is lost is what _race checks.
    assert out[2]["gc_runs"] > 5


async def _race(pg_schema: PgSchema, tmp_path: Path, gc_role: str) -> dict[int, Any]:
    """Two builder processes and one running ``gc_role``; checks that no build found its
    object missing and every row's object is stored; the processes' results."""
    engine = pg_schema.async_engine()
    try:
        cache = make_cache(engine, tmp_path, Builder())
        await cache.create_tables()
        ctx = multiprocessing.get_context("spawn")
        start, results = ctx.Event(), ctx.Queue()
        roles = {0: "build", 1: "build", 2: gc_role}
        procs = [
            ctx.Process(
                target=run,
                args=(role, pg_schema.async_url, pg_schema.name, str(tmp_path), w, start, results),
            )
            for w, role in roles.items()
        ]
        for p in procs:
            p.start()
        start.set()
        out = dict(results.get(timeout=TIMEOUT) for _ in procs)
        for p in procs:
            p.join(TIMEOUT)
        errors = {w: r for w, r in out.items() if isinstance(r, str)}
        assert errors == {}
        assert all(p.exitcode == 0 for p in procs)
        builders = [out[0], out[1]]
        assert [b["missing"] for b in builders] == [0, 0]
        assert [b["failed"] for b in builders] == [0, 0]
        assert sum(b["built"] for b in builders) > 30
        stored = stored_ids(cache)
        async with engine.connect() as conn:
            referenced = {i for (i,) in await conn.execute(select(artifacts_table.c.artifact_id))}
        assert referenced <= stored
        return out
    finally:
        await engine.dispose()
