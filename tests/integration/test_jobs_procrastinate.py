"""The procrastinate job queue on a real PostgreSQL server, with real workers: the job-queue
conformance suite (dedup, dedup scope "running", locks, retries, delays, transactional
enqueue), then what is procrastinate's own: periodic ticks once across two workers, misfires,
stalled jobs of a killed worker, cron steps."""

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
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from freshkeep.exceptions import ConfigurationError
from freshkeep.jobs import JobContext, JobQueue, ProcrastinateJobQueue, job_queue_from_settings
from freshkeep.jobs.procrastinate import cron_for
from freshkeep.settings import Settings
from freshkeep.testing.conformance import JobQueueSuite

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


class TestProcrastinateJobQueue(JobQueueSuite):
    """The conformance suite on procrastinate (one PostgreSQL database, emptied per test)."""

    @pytest.fixture
    def make_queue(self, url: str) -> Callable[[], JobQueue]:
        return lambda: make(url)

    @pytest.fixture
    async def transaction(
        self, url: str
    ) -> AsyncIterator[Callable[[], AbstractAsyncContextManager[Any]]]:
        engine = create_async_engine(url)

        @asynccontextmanager
        async def transaction() -> AsyncIterator[AsyncSession]:
            async with AsyncSession(engine) as session, session.begin():
                yield session

        yield transaction
        await engine.dispose()


async def test_transactional_enqueue_needs_a_postgresql_transaction(url: str) -> None:
    queue = make(url)
    queue.task("job", noop)
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            with pytest.raises(ConfigurationError, match="in a transaction"):
                await queue.enqueue("job", connection=conn)
        other = create_async_engine("sqlite+aiosqlite://")
        async with AsyncSession(other) as session:
            with pytest.raises(ConfigurationError, match="procrastinate needs"):
                await queue.enqueue("job", connection=session)
        await other.dispose()
    finally:
        await queue.aclose()
        await engine.dispose()


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


async def test_a_job_run_is_a_span(url: str) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from freshkeep import Keeper
    from freshkeep.integrations.otel import instrument
    from freshkeep.testing import MemoryRevisions

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    otel = instrument(Keeper(MemoryRevisions()), tracer_provider=provider, metrics=False)
    queue = make(url)
    queue.task("job", noop)
    try:
        job_id = (await queue.enqueue("job", {"n": 1})).job_id
        await queue.drain(30)
    finally:
        await queue.aclose()
        otel.close()
    (span,) = [s for s in exporter.get_finished_spans() if s.name == "freshkeep.job.run"]
    assert dict(span.attributes or {}) == {
        "freshkeep.job.task": "job",
        "freshkeep.job.id": str(job_id),
        "freshkeep.job.attempt": 1,
    }
