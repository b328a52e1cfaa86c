"""Several OS processes, each with its own engine and keeper, commit to one PostgreSQL schema
at once: every commit gets its own revision and the final counter is exact."""

from __future__ import annotations

import multiprocessing

import pytest
from sqlalchemy import func, select

from freshkeep.integrations.sqlalchemy import SQLAlchemyRevisions
from tests.conftest import PgSchema
from tests.integration.pg_worker import commit_tasks
from tests.integration.sa_support import TASKS, Task, create_schema

pytestmark = pytest.mark.postgres

WORKERS = 4
COMMITS = 25
TIMEOUT = 120.0


async def test_processes_bumping_concurrently_lose_no_revision(pg_schema: PgSchema) -> None:
    engine = pg_schema.async_engine()
    try:
        await create_schema(engine)
        ctx = multiprocessing.get_context("spawn")
        ready, results, start = ctx.Queue(), ctx.Queue(), ctx.Event()
        procs = [
            ctx.Process(
                target=commit_tasks,
                args=(pg_schema.async_url, pg_schema.name, w, COMMITS, ready, start, results),
            )
            for w in range(WORKERS)
        ]
        for p in procs:
            p.start()
        try:
            for _ in procs:  # every process is connected...
                ready.get(timeout=TIMEOUT)
            start.set()  # ...then all commit at once
            seen: dict[int, list[int]] = {}
            for _ in procs:
                worker, revs = results.get(timeout=TIMEOUT)
                assert isinstance(revs, list), f"worker {worker} failed: {revs}"
                seen[worker] = revs
        finally:
            for p in procs:
                p.join(timeout=TIMEOUT)
                if p.is_alive():  # only on failure: never leave a child behind
                    p.kill()
                    p.join()
        assert [p.exitcode for p in procs] == [0] * WORKERS
        for q in (ready, results):
            q.close()
            q.join_thread()

        total = WORKERS * COMMITS
        assert await SQLAlchemyRevisions(engine).read([TASKS]) == {TASKS: total}
        async with engine.connect() as conn:
            assert await conn.scalar(select(func.count()).select_from(Task)) == total
        # Each process saw its own commits' revisions, increasing; together: 1..total, once each.
        for revs in seen.values():
            assert revs == sorted(revs) and len(revs) == COMMITS
        every = sorted(r for revs in seen.values() for r in revs)
        assert every == list(range(1, total + 1))
    finally:
        await engine.dispose()
