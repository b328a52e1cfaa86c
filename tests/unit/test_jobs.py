"""The embedded job runner (SQLJobQueue) on SQLite: durability, dedup, locks, retries with
backoff, stalled jobs, periodic ticks and misfires, transactional enqueue."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from freshkeep.exceptions import (
    ConfigurationError,
    DuplicateNameError,
    EncodeError,
    JobQueueTimeout,
    UnknownTaskError,
)
from freshkeep.jobs import (
    EnqueueResult,
    JobContext,
    JobQueue,
    MemoryJobQueue,
    SQLJobQueue,
    job_queue_from_settings,
    jobs_table,
    schedule_processor,
)
from freshkeep.processing import Item, Outcome, Pipeline, ProcessContext, Processor
from freshkeep.settings import Settings
from freshkeep.testing import FakeClock

J = jobs_table.c


def sqlite_engine(path: Path) -> AsyncEngine:
    return create_async_engine(f"sqlite+aiosqlite:///{path}", connect_args={"timeout": 30})


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    eng = sqlite_engine(tmp_path / "jobs.db")
    yield eng
    await eng.dispose()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(wall=time.time())


def make_queue(engine: AsyncEngine, clock: FakeClock | None = None, **kw: Any) -> SQLJobQueue:
    options: dict[str, Any] = {"poll_interval": 0.02, "create_tables": True, **kw}
    if clock is not None:
        options["clock"] = clock
    return SQLJobQueue(engine, **options)


async def noop(ctx: JobContext, args: dict[str, Any]) -> None:
    return None


async def rows(engine: AsyncEngine, *where: Any) -> list[Any]:
    async with engine.connect() as conn:
        return list((await conn.execute(select(jobs_table).where(*where).order_by(J.id))).all())


def test_it_implements_the_port(engine: AsyncEngine) -> None:
    assert isinstance(make_queue(engine), JobQueue)


async def test_a_queued_job_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "durable.db"
    first = SQLJobQueue.from_url(str(path), create_tables=True)
    first.task("greet", noop)
    result = await first.enqueue("greet", {"who": "world"})
    assert result.enqueued and result.job_id is not None
    await first.aclose()

    seen: list[tuple[JobContext, dict[str, Any]]] = []

    async def greet(ctx: JobContext, args: dict[str, Any]) -> None:
        seen.append((ctx, args))

    second = SQLJobQueue.from_url(f"sqlite:///{path}", poll_interval=0.02)
    second.task("greet", greet)
    try:
        await second.drain(10)
        assert seen == [(JobContext(result.job_id, "greet", 1), {"who": "world"})]
        job = await second.get_job(result.job_id)
        assert job is not None and job.status == "done" and job.attempts == 1
    finally:
        await second.aclose()


async def test_the_same_dedup_key_enqueues_one_job(engine: AsyncEngine) -> None:
    queue = make_queue(engine)
    queue.task("build", noop)
    first = await queue.enqueue("build", {"n": 1}, dedup_key="pack:main")
    again = await queue.enqueue("build", {"n": 2}, dedup_key="pack:main")
    other = await queue.enqueue("build", {"n": 3}, dedup_key="pack:dev")
    assert first.enqueued and other.enqueued
    assert again == EnqueueResult(None, False, "deduplicated")
    # many tasks at once: still one waiting job per key
    results = await asyncio.gather(
        *(queue.enqueue("build", {"i": i}, dedup_key=f"k{i % 3}") for i in range(60))
    )
    assert sum(r.enqueued for r in results) == 3
    assert {r.reason for r in results if not r.enqueued} == {"deduplicated"}
    stats = queue.snapshot().to_dict()
    assert stats["enqueued"] == 5 and stats["deduplicated"] == 58
    assert stats["skipped"]["deduplicated"] == 58
    await queue.drain(10)
    # once run, the key is free again
    assert (await queue.enqueue("build", dedup_key="pack:main")).enqueued
    await queue.aclose()


async def test_jobs_on_one_lock_never_overlap(engine: AsyncEngine) -> None:
    """Two queues (workers) on one database, 4 slots each; 16 jobs on one lock, 8 free."""
    active: dict[str, int] = {"L": 0, "free": 0}
    peak: dict[str, int] = {"L": 0, "free": 0}
    done: list[int] = []

    async def work(ctx: JobContext, args: dict[str, Any]) -> None:
        kind = "L" if args["locked"] else "free"
        active[kind] += 1
        peak[kind] = max(peak[kind], active[kind])
        await asyncio.sleep(0.005)
        active[kind] -= 1
        done.append(args["i"])

    queues = [make_queue(engine, concurrency=4) for _ in range(2)]
    for q in queues:
        q.task("work", work, lock=lambda a: "L" if a["locked"] else None)
    for i in range(24):
        await queues[0].enqueue("work", {"i": i, "locked": i % 3 != 0})
    for q in queues:
        await q.start()
    try:
        await asyncio.gather(*(q.drain(30) for q in queues))
    finally:
        for q in queues:
            await q.aclose()
    assert sorted(done) == list(range(24))
    assert peak["L"] == 1
    assert sum(q.snapshot().skipped["locked"] for q in queues) > 0
    assert (await rows(engine, J.status != "done")) == []


async def test_the_database_refuses_a_second_running_job_on_a_lock(engine: AsyncEngine) -> None:
    queue = make_queue(engine)
    queue.task("t", noop, lock=lambda a: "L")
    await queue.enqueue("t")
    await queue.enqueue("t")
    async with engine.begin() as conn:
        await conn.execute(update(jobs_table).where(J.id == 1).values(status="running"))
    with pytest.raises(Exception, match="UNIQUE"):
        async with engine.begin() as conn:
            await conn.execute(update(jobs_table).where(J.id == 2).values(status="running"))
    assert await queue._claim(4) == []
    assert queue.snapshot().skipped["locked"] == 1
    await queue.aclose()


async def test_retries_back_off_exponentially_then_fail(
    engine: AsyncEngine, clock: FakeClock
) -> None:
    queue = make_queue(engine, clock)
    attempts: list[int] = []

    async def flaky(ctx: JobContext, args: dict[str, Any]) -> None:
        attempts.append(ctx.attempt)
        raise RuntimeError(f"attempt {ctx.attempt} broke")

    queue.task("flaky", flaky, retries=3, backoff=10.0, max_backoff=25.0)
    job_id = (await queue.enqueue("flaky")).job_id
    assert job_id is not None
    delays = []
    for _ in range(3):
        before = clock.time()
        await queue.drain(10)
        job = await queue.get_job(job_id)
        assert job is not None and job.status == "waiting"
        delays.append(round(job.run_at - before, 6))
        await queue.drain(10)  # not due yet: nothing runs
        clock.advance(job.run_at - clock.time())
    assert delays == [10.0, 20.0, 25.0]
    await queue.drain(10)
    job = await queue.get_job(job_id)
    assert job is not None and job.status == "failed"
    assert job.last_error == "RuntimeError: attempt 4 broke"
    assert attempts == [1, 2, 3, 4]
    stats = queue.snapshot().to_dict()
    assert (stats["retried"], stats["failed"], stats["done"]) == (3, 1, 0)
    assert stats["last_error"] == "flaky: RuntimeError: attempt 4 broke"
    await queue.aclose()


async def test_a_stalled_job_is_put_back_then_failed(engine: AsyncEngine, clock: FakeClock) -> None:
    queue = make_queue(engine, clock, lease=30.0)
    runs: list[int] = []

    async def job(ctx: JobContext, args: dict[str, Any]) -> None:
        runs.append(ctx.attempt)

    queue.task("job", job, retries=1)
    a = (await queue.enqueue("job")).job_id
    b = (await queue.enqueue("job")).job_id
    # a worker that died while running them: running, attempts spent, heartbeat now
    async with engine.begin() as conn:
        await conn.execute(
            update(jobs_table)
            .where(J.id == int(a or 0))
            .values(status="running", attempts=1, heartbeat_at=clock.time(), worker="dead")
        )
        await conn.execute(
            update(jobs_table)
            .where(J.id == int(b or 0))
            .values(status="running", attempts=2, heartbeat_at=clock.time(), worker="dead")
        )
    assert await queue.recover_stalled() == 0  # within the lease
    clock.advance(31)
    assert await queue.recover_stalled() == 2
    await queue.drain(10)
    job_a, job_b = await queue.get_job(a or ""), await queue.get_job(b or "")
    assert job_a is not None and job_a.status == "done" and runs == [2]
    assert job_b is not None and job_b.status == "failed"
    assert job_b.last_error is not None and job_b.last_error.startswith("stalled")
    assert queue.snapshot().stalled == 2
    await queue.aclose()


async def test_a_stalled_job_folds_into_a_waiting_twin(
    engine: AsyncEngine, clock: FakeClock
) -> None:
    queue = make_queue(engine, clock, lease=5.0)
    queue.task("job", noop)
    a = (await queue.enqueue("job", dedup_key="k")).job_id
    async with engine.begin() as conn:
        await conn.execute(
            update(jobs_table)
            .where(J.id == int(a or 0))
            .values(status="running", attempts=1, heartbeat_at=clock.time(), worker="dead")
        )
    assert (await queue.enqueue("job", dedup_key="k")).enqueued
    clock.advance(6)
    assert await queue.recover_stalled() == 1
    job = await queue.get_job(a or "")
    assert job is not None and job.status == "skipped"
    assert queue.snapshot().skipped["superseded"] == 1
    await queue.aclose()


async def test_periodic_two_instances_defer_one_job_per_tick(
    engine: AsyncEngine, clock: FakeClock
) -> None:
    queues = [make_queue(engine, clock) for _ in range(2)]
    for q in queues:
        q.task("tick", noop)
        q.periodic("tick", 10.0)
    clock.advance(10 - clock.time() % 10 + 1)  # 1 s into a tick
    for _ in range(6):
        await asyncio.gather(*(q.defer_due_ticks() for q in queues))
        await asyncio.gather(*(q.defer_due_ticks() for q in queues))
        clock.advance(10)
    ticks = [r.tick for r in await rows(engine)]
    assert len(ticks) == 6 and len(set(ticks)) == 6
    assert ticks == list(range(ticks[0], ticks[0] + 6))
    enqueued = sum(q.snapshot().enqueued for q in queues)
    taken = sum(q.snapshot().skipped["tick_taken"] for q in queues)
    assert (enqueued, taken) == (6, 6)
    for q in queues:
        await q.aclose()


async def test_late_ticks_are_misfires(engine: AsyncEngine, clock: FakeClock) -> None:
    queue = make_queue(engine, clock)
    ran: list[int] = []

    async def tick(ctx: JobContext, args: dict[str, Any]) -> None:
        ran.append(args["n"])

    queue.task("tick", tick)
    queue.periodic("tick", 10.0, args={"n": 1}, misfire_grace=3.0)
    clock.advance(10 - clock.time() % 10 + 1)
    assert await queue.defer_due_ticks() == 1
    clock.advance(50)  # asleep for five ticks: four are too late, the current one is 1 s late
    assert await queue.defer_due_ticks() == 1
    assert queue.snapshot().skipped["misfire"] == 4
    # deferred in time but started too late: skipped by the worker, counted
    await queue.drain(10)
    assert ran == [1]  # the current tick ran; the first one, 51 s late, did not
    jobs = await rows(engine)
    assert [r.status for r in jobs] == ["skipped", "done"]
    assert jobs[0].last_error.startswith("misfire")
    assert queue.snapshot().skipped["misfire"] == 5
    await queue.aclose()


async def test_transactional_enqueue_commits_or_rolls_back(engine: AsyncEngine) -> None:
    queue = make_queue(engine)
    queue.task("t", noop)
    await queue.create_tables()
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE things (id INTEGER PRIMARY KEY, name TEXT)"))
    # a session: the job commits with the session's own row
    async with AsyncSession(engine) as session:
        await session.execute(text("INSERT INTO things (name) VALUES ('kept')"))
        kept = await queue.enqueue("t", {"x": 1}, dedup_key="a", connection=session)
        dup = await queue.enqueue("t", {"x": 2}, dedup_key="a", connection=session)
        assert kept.enqueued and dup.reason == "deduplicated"  # and the transaction goes on
        await session.commit()
    async with AsyncSession(engine) as session:
        await session.execute(text("INSERT INTO things (name) VALUES ('dropped')"))
        dropped = await queue.enqueue("t", {"x": 3}, connection=session)
        assert dropped.enqueued
        await session.rollback()
    # a connection
    async with engine.connect() as conn:
        async with conn.begin():
            assert (await queue.enqueue("t", {"x": 4}, connection=conn)).enqueued
        trans = await conn.begin()
        assert (await queue.enqueue("t", {"x": 5}, connection=conn)).enqueued
        await trans.rollback()
        with pytest.raises(ConfigurationError, match="in a transaction"):
            await queue.enqueue("t", connection=conn)
    args = sorted(r.args for r in await rows(engine))
    assert args == ['{"x":1}', '{"x":4}']
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT name FROM things"))).scalars().all() == ["kept"]
    await queue.aclose()


async def test_a_started_queue_is_woken_by_an_enqueue(engine: AsyncEngine) -> None:
    queue = make_queue(engine, poll_interval=60.0)  # polling alone would take a minute
    done = asyncio.Event()

    async def job(ctx: JobContext, args: dict[str, Any]) -> None:
        done.set()

    queue.task("job", job)
    await queue.start()
    try:
        await queue.enqueue("job")
        await asyncio.wait_for(done.wait(), 10)
        async with AsyncSession(engine) as session:
            done.clear()
            await queue.enqueue("job", connection=session)
            await session.commit()
        await asyncio.wait_for(done.wait(), 10)
    finally:
        await queue.aclose()


async def test_aclose_puts_interrupted_jobs_back(engine: AsyncEngine) -> None:
    queue = make_queue(engine, shutdown_grace=0.05)
    started = asyncio.Event()

    async def forever(ctx: JobContext, args: dict[str, Any]) -> None:
        started.set()
        await asyncio.Event().wait()

    queue.task("forever", forever)
    job_id = (await queue.enqueue("forever")).job_id
    await queue.start()
    await asyncio.wait_for(started.wait(), 10)
    await queue.aclose()
    job = await queue.get_job(job_id or "")
    assert job is not None and (job.status, job.attempts) == ("waiting", 0)


async def test_aclose_puts_back_a_job_cancelled_before_its_first_step(
    engine: AsyncEngine,
) -> None:
    """A job claimed and spawned, then cancelled by ``aclose`` before its task ever ran (so it
    never saw the cancellation), goes back to waiting too: not left running until its lease."""
    queue = make_queue(engine, shutdown_grace=0)
    ran = []

    async def job(ctx: JobContext, args: dict[str, Any]) -> None:
        ran.append(ctx.job_id)

    queue.task("job", job)
    job_id = (await queue.enqueue("job")).job_id
    claimed = await queue._claim(1)
    assert [str(c.id) for c in claimed] == [job_id]
    queue._spawn(claimed[0])  # scheduled, not started
    await queue.aclose()
    info = await queue.get_job(job_id or "")
    assert info is not None and (info.status, info.attempts) == ("waiting", 0) and not ran


async def test_aclose_lets_a_job_finish_within_the_shutdown_grace(engine: AsyncEngine) -> None:
    queue = make_queue(engine, shutdown_grace=10.0)
    started, release = asyncio.Event(), asyncio.Event()

    async def short(ctx: JobContext, args: dict[str, Any]) -> None:
        started.set()
        await release.wait()

    queue.task("short", short)
    job_id = (await queue.enqueue("short")).job_id
    await queue.start()
    await asyncio.wait_for(started.wait(), 10)
    closing = asyncio.create_task(queue.aclose())
    await asyncio.sleep(0.05)
    assert not closing.done()  # waiting for the job, not cancelling it
    release.set()
    await asyncio.wait_for(closing, 10)
    job = await queue.get_job(job_id or "")
    assert job is not None and job.status == "done"


async def test_errors_name_what_was_wrong(engine: AsyncEngine) -> None:
    queue = make_queue(engine)
    queue.task("t", noop)
    with pytest.raises(DuplicateNameError):
        queue.task("t", noop)
    with pytest.raises(UnknownTaskError, match=r"'nope'.*registered: t"):
        await queue.enqueue("nope")
    with pytest.raises(UnknownTaskError):
        queue.periodic("nope", 1.0)
    with pytest.raises(EncodeError, match="not JSON-encodable"):
        await queue.enqueue("t", {"x": object()})
    with pytest.raises(ConfigurationError, match="AsyncConnection or AsyncSession"):
        await queue.enqueue("t", connection=object())
    with pytest.raises(ConfigurationError, match="dedup_scope"):
        await queue.enqueue("t", dedup_scope="never")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="delay"):
        await queue.enqueue("t", delay=-1)
    with pytest.raises(ConfigurationError, match="task name"):
        queue.task("bad name!", noop)
    with pytest.raises(ConfigurationError, match="backoff"):
        queue.task("u", noop, backoff=10, max_backoff=1)
    await queue.aclose()


async def test_drain_times_out_on_a_job_that_cannot_run(
    engine: AsyncEngine, clock: FakeClock
) -> None:
    queue = make_queue(engine, clock)
    queue.task("t", noop, lock=lambda a: "L")
    await queue.enqueue("t")
    await queue.enqueue("t")
    async with engine.begin() as conn:  # a live worker elsewhere holds the lock
        await conn.execute(
            update(jobs_table)
            .where(J.id == 1)
            .values(status="running", heartbeat_at=clock.time() + 3600)
        )
    with pytest.raises(JobQueueTimeout, match="1 ready, 1 running"):
        await queue.drain(0.2)
    await queue.aclose()


class Counting(Processor):
    def __init__(self, root: Path) -> None:
        self.name, self.root, self.pattern = "notes", root, "*.txt"
        self.seen: list[str] = []

    async def process(self, item: Item, ctx: ProcessContext) -> Outcome:
        self.seen.append(item.key)
        return Outcome({"files": 1})


async def test_a_processor_is_scheduled_through_the_queue(
    engine: AsyncEngine, clock: FakeClock, tmp_path: Path
) -> None:
    (tmp_path / "a.txt").write_text("a")
    processor = Counting(tmp_path)
    pipeline = Pipeline(racy_window=0)
    pipeline.register(processor)
    queues = [make_queue(engine, clock) for _ in range(2)]  # two instances of the service
    for q in queues:
        assert schedule_processor(q, pipeline, "notes", every=60.0) == "processor:notes"
    clock.advance(60 - clock.time() % 60 + 1)
    await asyncio.gather(*(q.defer_due_ticks() for q in queues))
    await asyncio.gather(*(q.drain(10) for q in queues))
    assert processor.seen == ["a.txt"]
    (tmp_path / "b.txt").write_text("b")
    clock.advance(60)
    await asyncio.gather(*(q.defer_due_ticks() for q in queues))
    await asyncio.gather(*(q.drain(10) for q in queues))
    assert processor.seen == ["a.txt", "b.txt"]
    done = await rows(engine, J.status == "done", J.task == "processor:notes")
    assert len(done) == 2 and all(r.lock == "processor:notes" for r in done)
    # run it now: an ordinary enqueue of the task
    assert (await queues[0].enqueue("processor:notes")).enqueued
    await queues[0].drain(10)
    for q in queues:
        await q.aclose()


async def test_from_settings(engine: AsyncEngine, tmp_path: Path) -> None:
    settings = Settings(jobs_concurrency=2, jobs_lease=9.0, database_url=str(tmp_path / "s.db"))
    queue = job_queue_from_settings(settings)
    assert isinstance(queue, SQLJobQueue)
    assert (queue.concurrency, queue.lease) == (2, 9.0)
    queue.task("t", noop)
    assert (await queue.enqueue("t")).enqueued  # the table is created on first use
    await queue.aclose()
    on_engine = job_queue_from_settings(settings, engine=engine)
    assert isinstance(on_engine, SQLJobQueue) and on_engine.engine is engine


async def test_memory_job_queue() -> None:
    queue = MemoryJobQueue(poll_interval=0.02)
    out: list[int] = []

    async def job(ctx: JobContext, args: dict[str, Any]) -> None:
        out.append(args["n"])

    queue.task("job", job)
    for n in range(3):
        await queue.enqueue("job", {"n": n})
    await queue.drain(10)
    assert out == [0, 1, 2]
    await queue.aclose()


# -- a property: whatever the interleaving, the database keeps the three rules ------------

OPS = st.lists(
    st.one_of(
        st.tuples(
            st.just("enqueue"),
            st.sampled_from(["a", "b", None]),
            st.sampled_from(["queued", "running"]),
            st.sampled_from(["L", None]),
        ),
        st.tuples(st.just("claim"), st.integers(1, 3)),
        st.tuples(st.just("finish"), st.sampled_from(["done", "failed"])),
    ),
    max_size=25,
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(ops=OPS)
async def test_property_one_waiting_and_one_running_per_key_and_lock(
    ops: list[tuple[Any, ...]], tmp_path: Path
) -> None:
    engine = sqlite_engine(tmp_path / "prop.db")
    queue = make_queue(engine)
    queue.task("t", noop, lock=lambda a: a.get("lock"))
    await queue.create_tables()
    async with engine.begin() as conn:
        await conn.execute(jobs_table.delete())
    claimed: list[Any] = []
    try:
        for op in ops:
            if op[0] == "enqueue":
                _, key, scope, lock = op
                await queue.enqueue("t", {"lock": lock}, dedup_key=key, dedup_scope=scope)
            elif op[0] == "claim":
                claimed.extend(await queue._claim(op[1]))
            elif claimed:
                await queue._finish(claimed.pop(0), op[1], None)
            async with engine.connect() as conn:
                for status in ("waiting", "running"):
                    per_key = (
                        await conn.execute(
                            select(func.count())
                            .where(J.status == status, J.dedup_key.is_not(None))
                            .group_by(J.dedup_key)
                        )
                    ).scalars()
                    assert all(n <= 1 for n in per_key)
                per_lock = (
                    await conn.execute(
                        select(func.count())
                        .where(J.status == "running", J.lock.is_not(None))
                        .group_by(J.lock)
                    )
                ).scalars()
                assert all(n <= 1 for n in per_lock)
    finally:
        await engine.dispose()


async def test_a_started_queue_runs_its_periodic_jobs(engine: AsyncEngine) -> None:
    queue = make_queue(engine)
    ran: list[int] = []
    twice = asyncio.Event()

    async def tick(ctx: JobContext, args: dict[str, Any]) -> None:
        ran.append(int(ctx.job_id))
        if len(ran) >= 2:
            twice.set()

    queue.task("tick", tick)
    await queue.start()
    try:
        queue.periodic("tick", 0.2, misfire_grace=10.0)  # registered after start: still ticks
        await asyncio.wait_for(twice.wait(), 20)
    finally:
        await queue.aclose()
    assert len(set(ran)) == len(ran) >= 2
    ticks = [r.tick for r in await rows(engine)]
    assert None not in ticks and len(ticks) == len(set(ticks)) >= 2


async def test_a_connection_to_another_database_kind_is_refused(engine: AsyncEngine) -> None:
    queue = SQLJobQueue(create_async_engine("postgresql+asyncpg://nobody@127.0.0.1:1/none"))
    queue.task("t", noop)
    async with AsyncSession(engine) as session:
        with pytest.raises(ConfigurationError, match="is on sqlite, the job queue on postgresql"):
            await queue.enqueue("t", connection=session)
    await queue.engine.dispose()
