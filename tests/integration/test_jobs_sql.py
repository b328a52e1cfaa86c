"""The embedded job runner on SQLite and PostgreSQL: the job-queue conformance suite, dedup
under concurrent enqueues from two processes, a killed worker's job recovered, periodic ticks
once across instances, and the migration's table."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from freshkeep.jobs import JobContext, JobQueue, SQLJobQueue, jobs_table
from freshkeep.testing import FakeClock
from freshkeep.testing.conformance import JobQueueSuite
from tests.conftest import PgSchema

J = jobs_table.c
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def target(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[str, str]]:
    """``(url, schema)``: a SQLite file (schema ``-``) or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}", "-"
    else:
        schema: PgSchema = request.getfixturevalue("pg_schema")
        yield schema.async_url, schema.name


def engine_for(url: str, schema: str) -> AsyncEngine:
    if schema == "-":
        return create_async_engine(url, connect_args={"timeout": 30})
    return create_async_engine(url, connect_args={"server_settings": {"search_path": schema}})


@pytest.fixture
async def engine(target: tuple[str, str]) -> AsyncIterator[AsyncEngine]:
    eng = engine_for(*target)
    await SQLJobQueue(eng).create_tables()
    yield eng
    await eng.dispose()


class TestSQLJobQueue(JobQueueSuite):
    """The conformance suite on SQLite and on PostgreSQL."""

    @pytest.fixture
    def make_queue(self, engine: AsyncEngine) -> Callable[[], JobQueue]:
        return lambda: SQLJobQueue(engine, poll_interval=0.02)

    @pytest.fixture
    def transaction(self, engine: AsyncEngine) -> Callable[[], AbstractAsyncContextManager[Any]]:
        @asynccontextmanager
        async def transaction() -> AsyncIterator[AsyncSession]:
            async with AsyncSession(engine) as session, session.begin():
                yield session

        return transaction


async def noop(ctx: JobContext, args: dict[str, Any]) -> None:
    return None


def spawn(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.integration.jobs_worker", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def test_two_processes_enqueueing_at_once_keep_one_job_per_key(
    target: tuple[str, str], engine: AsyncEngine, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    procs = [spawn("enqueue", *target, "40", env={"GO": str(go)}) for _ in range(2)]
    await asyncio.sleep(0.5)  # let both import and connect; the GO file releases them together
    go.touch()
    outputs = [await asyncio.to_thread(p.communicate, timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert sum(int(out) for out, _ in outputs) == 5
    async with engine.connect() as conn:
        per_key = (
            await conn.execute(
                select(J.dedup_key, func.count()).where(J.status == "waiting").group_by(J.dedup_key)
            )
        ).all()
    assert sorted(per_key) == [(f"k{i}", 1) for i in range(5)]


async def test_a_killed_workers_job_is_recovered(
    target: tuple[str, str], engine: AsyncEngine, tmp_path: Path
) -> None:
    clock = FakeClock(wall=time.time())
    queue = SQLJobQueue(engine, clock=clock, lease=5.0, poll_interval=0.02)
    ran: list[int] = []

    async def hang(ctx: JobContext, args: dict[str, Any]) -> None:
        ran.append(ctx.attempt)

    queue.task("hang", hang)
    job_id = (await queue.enqueue("hang")).job_id
    assert job_id is not None
    marker = tmp_path / "started"
    proc = spawn("hang", *target, str(marker))
    try:
        for _ in range(6000):
            if marker.exists() or proc.poll() is not None:
                break
            await asyncio.sleep(0.01)
        assert marker.exists(), proc.stderr.read() if proc.stderr else ""
    finally:
        proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(proc.communicate)
    job = await queue.get_job(job_id)
    assert job is not None and job.status == "running" and job.worker != queue.worker_id
    assert await queue.recover_stalled() == 0  # its heartbeat is fresh: not stalled yet
    clock.advance(10)
    assert await queue.recover_stalled() == 1
    await queue.drain(20)
    assert ran == [2]  # the second attempt: the killed one counted
    job = await queue.get_job(job_id)
    assert job is not None and job.status == "done"
    await queue.aclose()


async def test_periodic_ticks_once_across_instances_on_the_server(engine: AsyncEngine) -> None:
    clock = FakeClock(wall=time.time())
    queues = [SQLJobQueue(engine, clock=clock) for _ in range(3)]
    for q in queues:
        q.task("tick", noop)
        q.periodic("tick", 5.0)
    clock.advance(5 - clock.time() % 5 + 0.5)
    for _ in range(4):
        await asyncio.gather(*(q.defer_due_ticks() for q in queues))
        clock.advance(5)
    async with engine.connect() as conn:
        ticks = (await conn.execute(select(J.tick).order_by(J.tick))).scalars().all()
    assert len(ticks) == 4 and len(set(ticks)) == 4

    for q in queues:
        await q.aclose()


async def test_the_migration_makes_the_same_table(target: tuple[str, str], tmp_path: Path) -> None:
    from sqlalchemy import inspect

    from freshkeep.sql import migrate

    url, schema = target
    made = engine_for(f"sqlite+aiosqlite:///{tmp_path / 'made.db'}", "-")
    migrated = engine_for(url, schema)
    try:
        await SQLJobQueue(made).create_tables()
        assert (await migrate.upgrade_async(migrated, "0004")).after == "0004"

        def shape(conn: Any) -> tuple[set[str], set[tuple[str, bool]]]:
            insp = inspect(conn)
            columns = {c["name"] for c in insp.get_columns("freshkeep_jobs")}
            indexes = {(i["name"], bool(i["unique"])) for i in insp.get_indexes("freshkeep_jobs")}
            return columns, indexes

        async with made.connect() as conn:
            expected = await conn.run_sync(shape)
        async with migrated.connect() as conn:
            assert await conn.run_sync(shape) == expected
        queue = SQLJobQueue(migrated)  # the partial unique indexes are there
        queue.task("t", noop, lock=lambda a: "L")
        assert (await queue.enqueue("t", dedup_key="k")).enqueued
        assert (await queue.enqueue("t", dedup_key="k")).reason == "deduplicated"
        await queue.drain(10)
        await queue.aclose()
    finally:
        await made.dispose()
        await migrated.dispose()
