"""The procrastinate job queue on a real PostgreSQL server, with real workers: dedup (queueing
lock + lock), dedup scope "running", locks, retries, transactional enqueue through SQLAlchemy,
periodic ticks once across two workers, misfires, stalled jobs of a killed worker."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from freshkeep.exceptions import ConfigurationError, UnknownTaskError
from freshkeep.jobs import JobContext, JobQueue, ProcrastinateJobQueue, job_queue_from_settings
from freshkeep.jobs.procrastinate import cron_for
from freshkeep.settings import Settings

pytestmark = pytest.mark.postgres
ROOT = Path(__file__).resolve().parents[2]
WORKER = [sys.executable, "-m", "tests.integration.jobs_worker", "procrastinate-hang"]


@pytest.fixture
async def url(procrastinate_database: str) -> AsyncIterator[str]:
    """The database, emptied of jobs before each test."""
    engine = create_async_engine(procrastinate_database)
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "TRUNCATE procrastinate_jobs, procrastinate_periodic_defers, "
                "procrastinate_events, procrastinate_workers CASCADE"
            )
        )
    await engine.dispose()
    yield procrastinate_database


def make(url: str, **kw: Any) -> ProcrastinateJobQueue:
    return ProcrastinateJobQueue(url, poll_interval=0.05, **kw)


async def noop(ctx: JobContext, args: dict[str, Any]) -> None:
    return None


async def test_port_and_dedup_with_one_running_job_per_key(url: str) -> None:
    queue = make(url, concurrency=4)
    assert isinstance(queue, JobQueue)
    started = asyncio.Event()
    release = asyncio.Event()
    events: list[str] = []

    async def slow(ctx: JobContext, args: dict[str, Any]) -> None:
        events.append(f"start {args['n']}")
        started.set()
        await release.wait()
        events.append(f"end {args['n']}")

    queue.task("slow", slow)
    with pytest.raises(UnknownTaskError):
        await queue.enqueue("nope")
    first = await queue.enqueue("slow", {"n": 1}, dedup_key="k")
    assert first.enqueued
    dup = await queue.enqueue("slow", {"n": 9}, dedup_key="k")
    assert (dup.enqueued, dup.reason) == (False, "deduplicated")
    await queue.start()
    try:
        await asyncio.wait_for(started.wait(), 20)
        in_flight = await queue.enqueue("slow", {"n": 9}, dedup_key="k", dedup_scope="running")
        assert in_flight.reason == "in_flight"
        assert (await queue.enqueue("slow", {"n": 2}, dedup_key="k")).enqueued  # may wait
        assert (await queue.enqueue("slow", {"n": 9}, dedup_key="k")).reason == "deduplicated"
        await asyncio.sleep(0.3)  # give the worker time to (wrongly) start the second one
        release.set()
        await queue.drain(20)
    finally:
        await queue.aclose()
    assert events == ["start 1", "end 1", "start 2", "end 2"]
    stats = queue.snapshot().to_dict()
    assert (stats["enqueued"], stats["done"], stats["deduplicated"]) == (2, 2, 2)
    assert stats["skipped"]["in_flight"] == 1


async def test_jobs_on_one_lock_never_overlap(url: str) -> None:
    queues = [make(url, concurrency=4) for _ in range(2)]
    active = {"n": 0, "peak": 0}
    done: list[int] = []

    async def work(ctx: JobContext, args: dict[str, Any]) -> None:
        active["n"] += 1
        active["peak"] = max(active["peak"], active["n"])
        await asyncio.sleep(0.01)
        active["n"] -= 1
        done.append(args["i"])

    for q in queues:
        q.task("work", work, lock=lambda a: "L")
    for i in range(12):
        await queues[i % 2].enqueue("work", {"i": i})
    for q in queues:
        await q.start()
    try:
        await asyncio.gather(*(q.drain(60) for q in queues))
    finally:
        for q in queues:
            await q.aclose()
    assert sorted(done) == list(range(12)) and active["peak"] == 1


async def test_retries_then_failed(url: str) -> None:
    queue = make(url)
    attempts: list[int] = []

    async def flaky(ctx: JobContext, args: dict[str, Any]) -> None:
        attempts.append(ctx.attempt)
        raise RuntimeError(f"attempt {ctx.attempt} broke")

    queue.task("flaky", flaky, retries=2, backoff=0.0, max_backoff=0.0)
    job_id = (await queue.enqueue("flaky")).job_id
    try:
        await queue.drain(30)
    finally:
        await queue.aclose()
    assert attempts == [1, 2, 3]
    stats = queue.snapshot().to_dict()
    assert (stats["retried"], stats["failed"]) == (2, 1)
    assert stats["last_error"] == "flaky: RuntimeError: attempt 3 broke"
    engine = create_async_engine(url)
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT status, attempts FROM procrastinate_jobs WHERE id = :id"),
                {"id": int(job_id or 0)},
            )
        ).one()
    await engine.dispose()
    assert tuple(row) == ("failed", 3)


async def test_transactional_enqueue_through_sqlalchemy(url: str) -> None:
    queue = make(url)
    ran: list[int] = []

    async def job(ctx: JobContext, args: dict[str, Any]) -> None:
        ran.append(args["n"])

    queue.task("job", job)
    engine = create_async_engine(url)
    try:
        async with AsyncSession(engine) as session:
            assert (await queue.enqueue("job", {"n": 1}, connection=session)).enqueued
            await session.rollback()
        async with AsyncSession(engine) as session:
            assert (
                await queue.enqueue("job", {"n": 2}, dedup_key="d", connection=session)
            ).enqueued
            dup = await queue.enqueue("job", {"n": 3}, dedup_key="d", connection=session)
            assert dup.reason == "deduplicated"
            await session.execute(text("SELECT 1"))  # the caller's transaction is intact
            await session.commit()
        async with engine.connect() as conn:
            async with conn.begin():
                assert (await queue.enqueue("job", {"n": 4}, connection=conn)).enqueued
            with pytest.raises(ConfigurationError, match="in a transaction"):
                await queue.enqueue("job", connection=conn)
        other = create_async_engine("sqlite+aiosqlite://")
        async with AsyncSession(other) as session:
            with pytest.raises(ConfigurationError, match="procrastinate needs"):
                await queue.enqueue("job", connection=session)
        await other.dispose()
        await queue.drain(30)
    finally:
        await queue.aclose()
        await engine.dispose()
    assert sorted(ran) == [2, 4]


async def test_periodic_ticks_once_across_two_workers_and_misfires(url: str) -> None:
    queues = [make(url) for _ in range(2)]
    ticks: list[int] = []

    async def tick(ctx: JobContext, args: dict[str, Any]) -> None:
        ticks.append(args["x"])

    for q in queues:
        q.task("tick", tick)
        q.periodic("tick", 1.0, args={"x": 1}, misfire_grace=30.0)
    for q in queues:
        await q.start()
    engine = create_async_engine(url)
    try:
        for _ in range(400):  # until three ticks have run
            if len(ticks) >= 3:
                break
            await asyncio.sleep(0.05)
        async with engine.connect() as conn:
            per_tick = (
                await conn.execute(
                    text(
                        "SELECT args->>'timestamp', count(*) FROM procrastinate_jobs "
                        "WHERE task_name = 'tick' GROUP BY 1"
                    )
                )
            ).all()
        assert len(ticks) >= 3 and len(per_tick) >= 3
        assert all(n == 1 for _, n in per_tick)  # each tick deferred once by two workers
        # a tick that starts later than its grace is skipped
        late = int(time.time()) - 100
        await (
            queues[0]
            .app.configure_task("tick", task_kwargs={"args": {"x": 2}, "timestamp": late})
            .defer_async()
        )
        await asyncio.gather(*(q.drain(30) for q in queues))
    finally:
        for q in queues:
            await q.aclose()
        await engine.dispose()
    assert 2 not in ticks
    assert sum(q.snapshot().skipped["misfire"] for q in queues) == 1


async def test_a_killed_workers_job_is_retried(url: str, tmp_path: Path) -> None:
    queue = make(url, lease=1.0)
    ran: list[int] = []

    async def hang(ctx: JobContext, args: dict[str, Any]) -> None:
        ran.append(ctx.attempt)

    queue.task("hang", hang, retries=0)
    assert (await queue.enqueue("hang")).enqueued
    marker = tmp_path / "started"
    proc = subprocess.Popen(
        [*WORKER, url, "-", str(marker)],
        cwd=ROOT,
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for _ in range(6000):
            if marker.exists() or proc.poll() is not None:
                break
            await asyncio.sleep(0.01)
        assert marker.exists(), proc.stderr.read() if proc.stderr else ""
    finally:
        proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(proc.communicate)
    try:
        recovered = 0
        for _ in range(300):  # the dead worker's heartbeat ages past the lease
            recovered = await queue.retry_stalled()
            if recovered:
                break
            await asyncio.sleep(0.05)
        assert recovered == 1
        await queue.drain(30)
    finally:
        await queue.aclose()
    assert ran == [2]
    assert queue.snapshot().stalled == 1


def test_cron_steps_and_settings(url: str) -> None:
    assert cron_for(5) == "* * * * * */5"
    assert cron_for(300) == "*/5 * * * *"
    assert cron_for(7200) == "0 */2 * * *"
    assert cron_for(86400) == "0 0 * * *"
    with pytest.raises(ConfigurationError, match="cron"):
        cron_for(7)
    with pytest.raises(ConfigurationError, match="PostgreSQL"):
        ProcrastinateJobQueue("sqlite:///x.db")
    queue = job_queue_from_settings(Settings(jobs_backend="procrastinate", jobs_url=url))
    assert isinstance(queue, ProcrastinateJobQueue)
