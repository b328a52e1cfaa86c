"""The :class:`~freshkeep.ports.JobQueue` suite."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest

from freshkeep.exceptions import (
    ConfigurationError,
    DuplicateNameError,
    EncodeError,
    UnknownTaskError,
)
from freshkeep.ports import JobQueue
from freshkeep.ports._jobs import JobContext

MakeQueue = Callable[[], JobQueue]


async def _noop(ctx: JobContext, args: dict[str, Any]) -> None:
    return None


class JobQueueSuite:
    """Provide the ``make_queue`` fixture: a function that returns a new, not started
    :class:`~freshkeep.ports.JobQueue` on one shared, empty backend (two calls are two
    instances). The suite closes the queues it makes.

    For transactional enqueue, also provide ``transaction``: a function returning an async
    context manager that yields an SQLAlchemy ``AsyncSession`` on the job database, whose
    transaction commits on a normal exit and rolls back on an exception (the default skips).
    """

    drain_timeout = 60.0

    @pytest.fixture
    def make_queue(self) -> MakeQueue:
        raise NotImplementedError("a JobQueueSuite subclass provides the `make_queue` fixture")

    @pytest.fixture
    def transaction(self) -> Callable[[], AbstractAsyncContextManager[Any]] | None:
        return None

    @pytest.fixture
    async def queues(self, make_queue: MakeQueue) -> AsyncIterator[Callable[[], JobQueue]]:
        made: list[JobQueue] = []

        def make() -> JobQueue:
            queue = make_queue()
            made.append(queue)
            return queue

        yield make
        for queue in made:
            await queue.aclose()

    async def test_it_is_a_job_queue_and_checks_what_it_is_given(
        self, queues: Callable[[], JobQueue]
    ) -> None:
        queue = queues()
        assert isinstance(queue, JobQueue)
        queue.task("noop", _noop)
        assert set(queue.tasks) >= {"noop"}
        with pytest.raises(DuplicateNameError):
            queue.task("noop", _noop)
        with pytest.raises(UnknownTaskError):
            await queue.enqueue("nope")
        with pytest.raises(ConfigurationError):
            await queue.enqueue("noop", dedup_scope="sometimes")  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError):
            await queue.enqueue("noop", delay=-1.0)
        with pytest.raises(ConfigurationError):
            await queue.enqueue("noop", dedup_key="")
        with pytest.raises(EncodeError):
            await queue.enqueue("noop", {"x": object()})
        with pytest.raises(ConfigurationError):
            queue.task("bad name!", _noop)

    async def test_enqueues_with_one_dedup_key_make_one_job(
        self, queues: Callable[[], JobQueue]
    ) -> None:
        ran: list[int] = []

        async def job(ctx: JobContext, args: dict[str, Any]) -> None:
            ran.append(args["n"])

        a, b = queues(), queues()
        for q in (a, b):
            q.task("job", job)
        first = await a.enqueue("job", {"n": 1}, dedup_key="k")
        assert first.enqueued and first.job_id is not None and first.reason is None
        dup = await b.enqueue("job", {"n": 2}, dedup_key="k")
        assert (dup.enqueued, dup.job_id, dup.reason) == (False, None, "deduplicated")
        assert (await a.enqueue("job", {"n": 3}, dedup_key="other")).enqueued
        assert (await a.enqueue("job", {"n": 4})).enqueued
        assert (await a.enqueue("job", {"n": 5})).enqueued  # no key: never deduplicated
        assert await b.waiting("job") == 4
        await a.drain(self.drain_timeout)
        assert sorted(ran) == [1, 3, 4, 5]
        assert await a.waiting("job") == 0
        assert (await b.enqueue("job", {"n": 6}, dedup_key="k")).enqueued  # the key is free

    async def test_one_running_job_per_dedup_key_and_scope_running(
        self, queues: Callable[[], JobQueue]
    ) -> None:
        queue = queues()
        started, release = asyncio.Event(), asyncio.Event()
        events: list[str] = []

        async def slow(ctx: JobContext, args: dict[str, Any]) -> None:
            events.append(f"start {args['n']}")
            started.set()
            await release.wait()
            events.append(f"end {args['n']}")

        queue.task("slow", slow)
        assert (await queue.enqueue("slow", {"n": 1}, dedup_key="k")).enqueued
        await queue.start()
        await asyncio.wait_for(started.wait(), self.drain_timeout)
        skipped = await queue.enqueue("slow", {"n": 9}, dedup_key="k", dedup_scope="running")
        assert (skipped.enqueued, skipped.reason) == (False, "in_flight")
        assert (await queue.enqueue("slow", {"n": 2}, dedup_key="k")).enqueued  # it waits
        assert (await queue.enqueue("slow", {"n": 9}, dedup_key="k")).reason == "deduplicated"
        await asyncio.sleep(0.3)  # time for a worker to (wrongly) start the second one
        release.set()
        await queue.drain(self.drain_timeout)
        assert events == ["start 1", "end 1", "start 2", "end 2"]

    async def test_jobs_on_one_lock_never_overlap(self, queues: Callable[[], JobQueue]) -> None:
        active = {"n": 0, "peak": 0}
        done: list[int] = []

        async def work(ctx: JobContext, args: dict[str, Any]) -> None:
            active["n"] += 1
            active["peak"] = max(active["peak"], active["n"])
            await asyncio.sleep(0.01)
            active["n"] -= 1
            done.append(args["i"])

        pair = [queues(), queues()]
        for q in pair:
            q.task("work", work, lock=lambda args: "L")
        for i in range(8):
            await pair[i % 2].enqueue("work", {"i": i})
        for q in pair:
            await q.start()
        await asyncio.gather(*(q.drain(self.drain_timeout) for q in pair))
        assert sorted(done) == list(range(8)) and active["peak"] == 1

    async def test_a_failing_job_is_retried_then_fails(
        self, queues: Callable[[], JobQueue]
    ) -> None:
        queue = queues()
        attempts: list[int] = []

        async def flaky(ctx: JobContext, args: dict[str, Any]) -> None:
            attempts.append(ctx.attempt)
            raise RuntimeError(f"attempt {ctx.attempt} broke")

        queue.task("flaky", flaky, retries=2, backoff=0.0, max_backoff=0.0)
        assert (await queue.enqueue("flaky")).enqueued
        await queue.drain(self.drain_timeout)
        assert attempts == [1, 2, 3]
        assert await queue.waiting("flaky") == 0

    async def test_a_delayed_job_waits(self, queues: Callable[[], JobQueue]) -> None:
        queue = queues()
        ran: list[int] = []

        async def job(ctx: JobContext, args: dict[str, Any]) -> None:
            ran.append(1)

        queue.task("later", job)
        assert (await queue.enqueue("later", delay=3600.0)).enqueued
        await queue.drain(self.drain_timeout)
        assert ran == [] and await queue.waiting("later") == 1

    async def test_an_enqueue_commits_or_rolls_back_with_the_callers_transaction(
        self,
        queues: Callable[[], JobQueue],
        transaction: Callable[[], AbstractAsyncContextManager[Any]] | None,
    ) -> None:
        if transaction is None:
            pytest.skip("no `transaction` fixture: the backend has no transactional enqueue")
        queue = queues()
        ran: list[int] = []

        async def job(ctx: JobContext, args: dict[str, Any]) -> None:
            ran.append(args["n"])

        queue.task("job", job)
        with pytest.raises(RuntimeError):
            async with transaction() as session:
                assert (await queue.enqueue("job", {"n": 1}, connection=session)).enqueued
                raise RuntimeError("the caller's transaction fails")
        async with transaction() as session:
            assert (
                await queue.enqueue("job", {"n": 2}, dedup_key="d", connection=session)
            ).enqueued
            dup = await queue.enqueue("job", {"n": 3}, dedup_key="d", connection=session)
            assert dup.reason == "deduplicated"
        await queue.drain(self.drain_timeout)
        assert ran == [2]
