"""The worker side of the embedded queue: claiming ready jobs (one conditional ``UPDATE``),
running them in asyncio tasks, retries with the task's backoff, heartbeats, recovery of
stalled jobs, purging, and the lifecycle (start, drain, aclose).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import orjson

from freshkeep.exceptions import (
    JobQueueTimeout,
    missing_extra,
)
from freshkeep.jobs._types import (
    JobContext,
    job_span,
)
from freshkeep.scheduler import Scheduler

try:
    from sqlalchemy import delete, func, select, update
    from sqlalchemy.dialects import sqlite
    from sqlalchemy.exc import IntegrityError

    from freshkeep.sql.schema import jobs_table
except ImportError as exc:  # pragma: no cover - exercised by the no-extras import test
    raise missing_extra("sqlalchemy", exc.name or "sqlalchemy") from exc

from freshkeep.jobs._sql_table import _FINISHED, _J, SQLJobTable, _Claimed

log = logging.getLogger("freshkeep.jobs")


class SQLWorker(SQLJobTable):
    """The worker half of :class:`~freshkeep.jobs.SQLJobQueue`."""

    # -- claiming and running --------------------------------------------------------------

    async def _claim(self, capacity: int) -> list[_Claimed]:
        if capacity <= 0 or not self._tasks:
            return []
        now = self.clock.time()
        async with self.engine.connect() as conn:
            candidates = (
                await conn.execute(
                    select(_J.id, _J.lock, _J.dedup_key)
                    .where(
                        _J.status == "waiting",
                        _J.run_at <= now,
                        _J.task.in_(sorted(self._tasks)),
                    )
                    .order_by(_J.run_at, _J.id)
                    .limit(capacity * 4 + 8)
                )
            ).all()
            if not candidates:
                return []
            held = (
                await conn.execute(
                    select(_J.lock, _J.dedup_key).where(
                        _J.status == "running", (_J.lock.is_not(None)) | _J.dedup_key.is_not(None)
                    )
                )
            ).all()
        locks = {lock for lock, _ in held if lock is not None}
        keys = {key for _, key in held if key is not None}
        picked: list[int] = []
        for job_id, lock, key in candidates:
            if len(picked) >= capacity:
                break
            if (lock is not None and lock in locks) or (key is not None and key in keys):
                self._note_locked(job_id)
                continue
            picked.append(job_id)
            if lock is not None:
                locks.add(lock)
            if key is not None:
                keys.add(key)
        if not picked:
            return []
        if self._dialect is sqlite:  # one statement for the batch (SQLite serializes writers)
            try:
                return await self._claim_ids(picked, now)
            except IntegrityError:  # another process took a lock or key: one job at a time
                pass
        # On PostgreSQL one job per transaction: two batches waiting on each other's unique
        # index entries could deadlock.
        claimed: list[_Claimed] = []
        for job_id in picked:
            try:
                claimed.extend(await self._claim_ids([job_id], now))
            except IntegrityError:
                self._note_locked(job_id)
        return claimed

    async def _claim_ids(self, ids: list[int], now: float) -> list[_Claimed]:
        """Mark the waiting jobs ``ids`` running (jobs another worker took are left out)."""
        async with self._tx_engine.begin() as conn:
            rows = (
                await conn.execute(
                    update(jobs_table)
                    .where(_J.id.in_(ids), _J.status == "waiting", _J.run_at <= now)
                    .values(
                        status="running",
                        attempts=_J.attempts + 1,
                        started_at=now,
                        heartbeat_at=now,
                        worker=self.worker_id,
                    )
                    .returning(
                        _J.id, _J.task, _J.args, _J.attempts, _J.tick, _J.run_at, _J.dedup_key
                    )
                )
            ).all()
        return sorted((_Claimed(*row) for row in rows), key=lambda j: (j.run_at, j.id))

    def _note_locked(self, job_id: int) -> None:
        if job_id not in self._locked_seen:
            if len(self._locked_seen) > 100_000:
                self._locked_seen.clear()
            self._locked_seen.add(job_id)
            self._skips["locked"] += 1

    def _spawn(self, job: _Claimed) -> None:
        task = asyncio.get_running_loop().create_task(
            self._run(job), name=f"freshkeep-job:{job.task}:{job.id}"
        )
        self._running[job.id] = task

        def done(_: asyncio.Task[None]) -> None:
            self._running.pop(job.id, None)
            self._finishing.discard(job.id)
            self._wake.set()

        task.add_done_callback(done)

    async def _run(self, job: _Claimed) -> None:
        spec = self._tasks[job.task]
        periodic = self._periodic.get(job.task)
        now = self.clock.time()
        if job.tick is not None and periodic is not None and now - job.run_at > periodic.grace:
            self._skips["misfire"] += 1
            self._finishing.add(job.id)
            await self._finish(
                job, "skipped", f"misfire: started {now - job.run_at:.1f}s after its tick"
            )
            return
        try:
            with job_span(job.task, str(job.id), job.attempts):
                await spec.func(
                    JobContext(str(job.id), job.task, job.attempts), orjson.loads(job.args)
                )
        except asyncio.CancelledError:
            if self._closing:
                self._interrupted[job.id] = job.dedup_key
            raise
        except Exception as exc:
            self._finishing.add(job.id)  # aclose() lets the outcome be written
            error = f"{type(exc).__name__}: {exc}"
            final = job.attempts > spec.retries
            self._count_failure(job.task, error, final=final, now=self.clock.time())
            if not final:
                log.warning(
                    "job %s (%s) attempt %d failed: %s", job.id, job.task, job.attempts, error
                )
                delay = spec.retry_delay(job.attempts)
                await self._requeue(job.id, self.clock.time() + delay, error)
            else:
                log.error("job %s (%s) failed for good: %s", job.id, job.task, error)
                await self._finish(job, "failed", error)
        else:
            self._finishing.add(job.id)
            self._stats["done"] += 1
            await self._finish(job, "done", None)

    async def _finish(self, job: _Claimed, status: str, error: str | None) -> None:
        try:
            async with self._tx_engine.begin() as conn:
                result = await conn.execute(
                    update(jobs_table)
                    .where(_J.id == job.id, _J.status == "running", _J.worker == self.worker_id)
                    .values(
                        status=status,
                        finished_at=self.clock.time(),
                        heartbeat_at=None,
                        last_error=error,
                    )
                )
            if result.rowcount == 0:
                self._stats["late_finish"] += 1
                log.warning("job %s ended after it was declared stalled", job.id)
        except Exception:  # the job stays running; it is recovered as stalled
            self._stats["errors"] += 1
            log.exception("could not record the end of job %s", job.id)

    async def _requeue(
        self,
        job_id: int,
        run_at: float,
        error: str | None,
        *,
        extra: Any = None,
        undo_attempt: bool = False,
    ) -> bool:
        """Put a running job back to waiting; fold it into a waiting twin (same dedup key)."""
        where = [_J.id == job_id, _J.status == "running"]
        if extra is not None:
            where.append(extra)
        values: dict[str, Any] = {
            "status": "waiting",
            "run_at": run_at,
            "worker": None,
            "heartbeat_at": None,
            "last_error": error,
        }
        if undo_attempt:
            values["attempts"] = _J.attempts - 1
        try:
            try:
                async with self._tx_engine.begin() as conn:
                    rows = await conn.execute(update(jobs_table).where(*where).values(values))
                return bool(rows.rowcount)
            except IntegrityError:
                async with self._tx_engine.begin() as conn:
                    await conn.execute(
                        update(jobs_table)
                        .where(*where)
                        .values(
                            status="skipped",
                            finished_at=self.clock.time(),
                            heartbeat_at=None,
                            last_error=(error or "interrupted")
                            + " (superseded by a waiting job with the same dedup key)",
                        )
                    )
                self._skips["superseded"] += 1
                return True
        except Exception:  # it stays running; it is recovered as stalled
            self._stats["errors"] += 1
            log.exception("could not put job %s back to waiting", job_id)
            return False

    # -- housekeeping ----------------------------------------------------------------------

    async def heartbeat(self) -> None:
        """Renew the heartbeat of the jobs running in this process."""
        ids = list(self._running)
        if not ids:
            return
        async with self._tx_engine.begin() as conn:
            await conn.execute(
                update(jobs_table)
                .where(_J.id.in_(ids), _J.status == "running", _J.worker == self.worker_id)
                .values(heartbeat_at=self.clock.time())
            )

    async def recover_stalled(self) -> int:
        """Put running jobs whose heartbeat is older than ``lease`` back to waiting (or mark
        them ``failed`` once their retries are spent). Returns how many were recovered."""
        now = self.clock.time()
        cutoff = now - self.lease
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(_J.id, _J.task, _J.attempts, _J.worker).where(
                        _J.status == "running", _J.heartbeat_at < cutoff
                    )
                )
            ).all()
        recovered = 0
        for job_id, task, attempts, worker in rows:
            if job_id in self._running:  # alive here; its heartbeat is merely late
                continue
            spec = self._tasks.get(task)
            retries = spec.retries if spec is not None else self.default_retries
            error = f"stalled: no heartbeat for {self.lease}s (worker {worker})"
            if attempts > retries:
                async with self._tx_engine.begin() as conn:
                    res = await conn.execute(
                        update(jobs_table)
                        .where(_J.id == job_id, _J.status == "running", _J.heartbeat_at < cutoff)
                        .values(
                            status="failed", finished_at=now, heartbeat_at=None, last_error=error
                        )
                    )
                done = bool(res.rowcount)
                if done:
                    self._stats["failed"] += 1
                    self._last_failed = (now, f"{task}: {error}")
            else:
                done = await self._requeue(job_id, now, error, extra=_J.heartbeat_at < cutoff)
            if done:
                recovered += 1
                self._stats["stalled"] += 1
                log.warning("job %s (%s) %s", job_id, task, error)
        if recovered:
            self._wake.set()
        return recovered

    async def purge_finished(self) -> int:
        """Delete jobs that ended more than ``keep_finished`` seconds ago."""
        cutoff = self.clock.time() - self.keep_finished
        async with self._tx_engine.begin() as conn:
            res = await conn.execute(
                delete(jobs_table).where(_J.status.in_(_FINISHED), _J.finished_at < cutoff)
            )
        return int(res.rowcount or 0)

    async def _housekeeping(self) -> None:
        await self.recover_stalled()
        await self.purge_finished()
        await self.counts()

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the worker loop and the housekeeping scheduler (heartbeats, stalled jobs,
        purge, periodic ticks). Creates the table first with ``create_tables=True``."""
        if self._worker is not None:
            return
        self._closing = False
        await self._ensure_tables()
        await self.recover_stalled()
        scheduler = Scheduler(clock=self.clock, poll=min(self.poll_interval, 1.0))
        scheduler.add("jobs:heartbeat", self.heartbeat, self.lease / 3)
        scheduler.add("jobs:housekeeping", self._housekeeping, self.lease / 2)
        if self._periodic:
            scheduler.add("jobs:periodic", self.defer_due_ticks, self.poll_interval)
        self._scheduler = scheduler
        await scheduler.start()
        self._worker = asyncio.get_running_loop().create_task(
            self._work(), name="freshkeep-jobs-worker"
        )

    async def _work(self) -> None:
        # aclose() stops this loop between its steps (it is not cancelled): a cancellation
        # inside a transaction can leave it open on SQLite (aiosqlite), holding the write lock.
        while not self._closing:
            self._wake.clear()
            claimed: list[_Claimed] = []
            try:
                claimed = await self._claim(self.concurrency - len(self._running))
            except Exception as exc:  # the database is down: count it, retry at the next poll
                self._stats["errors"] += 1
                self._last_error = f"claim: {type(exc).__name__}: {exc}"
                log.warning("claiming jobs failed: %s", exc)
            for job in claimed:
                self._spawn(job)
            if self._closing:
                return
            if claimed and len(self._running) < self.concurrency:
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_interval):
                    await self._wake.wait()

    async def drain(self, timeout: float = 30.0) -> None:
        """Run jobs until none is ready (due, of a task registered here) or running, in the
        whole table. Without :meth:`start`, this runs the jobs itself (stalled jobs are
        recovered, periodic ticks are not deferred). Raises :class:`JobQueueTimeout` after
        ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        await self._ensure_tables()
        while True:
            self._wake.clear()
            if self._worker is None:
                await self.recover_stalled()
                for job in await self._claim(self.concurrency - len(self._running)):
                    self._spawn(job)
            ready, running = await self._ready_running()
            if ready == 0 and running == 0 and not self._running:
                return
            if loop.time() >= deadline:
                raise JobQueueTimeout(
                    f"jobs still pending after {timeout}s: {ready} ready, {running} running"
                )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(self.poll_interval, max(deadline - loop.time(), 0))):
                    await self._wake.wait()

    async def _ready_running(self) -> tuple[int, int]:
        # Running first, then the time, then ready: a job put back to waiting (a retry) after
        # the first count is counted by the second, so drain never sees it in neither state.
        async with self.engine.connect() as conn:
            running = await conn.scalar(select(func.count()).where(_J.status == "running"))
            now = self.clock.time()
            ready = await conn.scalar(
                select(func.count()).where(
                    _J.status == "waiting", _J.run_at <= now, _J.task.in_(sorted(self._tasks))
                )
            )
        self._counts["running"] = int(running or 0)
        return int(ready or 0), int(running or 0)

    async def aclose(self) -> None:
        """Stop claiming jobs and the housekeeping (both finish the step they are in: a task
        cancelled inside a transaction can leave it open on SQLite), give the running jobs
        ``shutdown_grace`` seconds to finish, then cancel the rest: jobs interrupted are put
        back to waiting (their attempt is not counted). Disposes the engine if the queue
        created it."""
        self._closing = True
        self._wake.set()
        if self._scheduler is not None:
            await self._scheduler.stop(cancel=False)
            self._scheduler = None
        if self._worker is not None:
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker = None
        if self._running and self.shutdown_grace > 0:
            await asyncio.wait(list(self._running.values()), timeout=self.shutdown_grace)
        tasks = list(self._running.values())
        for job_id, task in list(self._running.items()):
            if job_id not in self._finishing:  # a job writing its outcome is let finish
                task.cancel()
                # also a job cancelled before its first step ran (it never saw the cancel)
                self._interrupted.setdefault(job_id, None)
        await asyncio.gather(*tasks, return_exceptions=True)
        for job_id in list(self._interrupted):
            await self._requeue(
                job_id,
                self.clock.time(),
                "interrupted by shutdown",
                extra=_J.worker == self.worker_id,  # still ours: not finished meanwhile
                undo_attempt=True,
            )
        self._interrupted.clear()
        if self._owns_engine:
            await self.engine.dispose()


__all__ = ["SQLWorker"]
