"""The embedded job runner: a durable ``freshkeep_jobs`` table and in-process asyncio workers.

Jobs live in the application's database (SQLite through aiosqlite, or PostgreSQL), so a job
enqueued before a restart runs after it. The rules are kept by the database, with partial
unique indexes, not only by Python checks, so they hold across tasks, processes and instances:

- ``uq_freshkeep_jobs_dedup_waiting``: at most one *waiting* job per dedup key;
- ``uq_freshkeep_jobs_dedup_running`` and ``uq_freshkeep_jobs_lock_running``: at most one
  *running* job per dedup key and per lock (a ready job whose lock is held waits);
- ``uq_freshkeep_jobs_tick``: one job per (task, periodic tick).

An enqueue is one ``INSERT … ON CONFLICT DO NOTHING`` (``dedup_scope="running"`` adds ``WHERE
NOT EXISTS`` a running job with the key), a claim one conditional ``UPDATE``. Running jobs
renew a heartbeat; a running job whose heartbeat is older than ``lease`` (its worker crashed
or was killed) is put back to waiting. Housekeeping (heartbeats, stalled jobs, purging
finished jobs, periodic ticks) runs on a :class:`~freshkeep.scheduler.Scheduler`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import tempfile
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from freshkeep.core.clock import SYSTEM_CLOCK, Clock
from freshkeep.exceptions import (
    ConfigurationError,
    JobQueueError,
    JobQueueTimeout,
    missing_extra,
)
from freshkeep.jobs._types import (
    DedupScope,
    EnqueueResult,
    JobContext,
    JobQueue,
    PeriodicSpec,
    TaskSpec,
    encode_args,
)
from freshkeep.scheduler import Scheduler

try:
    from sqlalchemy import (
        delete,
        event,
        exists,
        func,
        inspect,
        literal,
        select,
        update,
    )
    from sqlalchemy.dialects import postgresql, sqlite
    from sqlalchemy.exc import IntegrityError, SQLAlchemyError
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

    from freshkeep.sql.engine import async_url, create_engine, writer_engine
    from freshkeep.sql.schema import JOBS_TABLE, jobs_table, metadata
except ImportError as exc:  # pragma: no cover - exercised by the no-extras import test
    raise missing_extra("sqlalchemy", exc.name or "sqlalchemy") from exc

log = logging.getLogger("freshkeep.jobs")

_J = jobs_table.c
_FINISHED = ("done", "failed", "skipped")


@dataclass(frozen=True, slots=True)
class _Claimed:
    id: int
    task: str
    args: str
    attempts: int
    tick: int | None
    run_at: float
    dedup_key: str | None


@dataclass(frozen=True, slots=True)
class JobInfo:
    """One job row, as :meth:`SQLJobQueue.get_job` reads it."""

    job_id: str
    task: str
    args: dict[str, Any]
    status: str
    """``waiting``, ``running``, ``done``, ``failed`` or ``skipped``."""
    attempts: int
    run_at: float
    dedup_key: str | None
    lock: str | None
    tick: int | None
    last_error: str | None
    worker: str | None


class SQLJobQueue(JobQueue):
    """The embedded :class:`~freshkeep.jobs.JobQueue`: jobs in ``freshkeep_jobs`` of an async
    SQLAlchemy engine (SQLite or PostgreSQL), run by asyncio workers in this process.

    ``concurrency`` jobs run at once in this process; workers poll every ``poll_interval``
    seconds and are woken at once by an enqueue from this process. A running job renews its
    heartbeat every ``lease / 3`` seconds; one older than ``lease`` is stalled and put back
    to waiting (it counts as an attempt). Finished jobs are deleted ``keep_finished`` seconds
    after they end. ``create_tables=True`` creates the table on :meth:`start` (the embedded
    default; otherwise run the migrations or :meth:`create_tables`). The engine is disposed by
    :meth:`aclose` only when the queue created it (:meth:`from_url`).
    """

    backend = "sql"

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        clock: Clock = SYSTEM_CLOCK,
        concurrency: int = 4,
        poll_interval: float = 0.5,
        lease: float = 30.0,
        keep_finished: float = 7 * 86400.0,
        default_retries: int = 5,
        worker_id: str | None = None,
        create_tables: bool = False,
        owns_engine: bool = False,
        shutdown_grace: float = 5.0,
    ) -> None:
        super().__init__()
        if engine.dialect.name not in ("sqlite", "postgresql"):
            raise ConfigurationError(
                f"SQLJobQueue needs SQLite or PostgreSQL, not {engine.dialect.name!r}"
            )
        if concurrency < 1:
            raise ConfigurationError("concurrency must be >= 1")
        if poll_interval <= 0 or lease <= 0 or keep_finished < 0:
            raise ConfigurationError("poll_interval and lease must be > 0, keep_finished >= 0")
        if not shutdown_grace >= 0:
            raise ConfigurationError(f"shutdown_grace must be >= 0, not {shutdown_grace!r}")
        self.shutdown_grace = shutdown_grace
        """Seconds :meth:`aclose` lets running jobs finish before it cancels them."""
        self.engine = engine
        self._tx_engine = writer_engine(engine)  # writing transactions: BEGIN IMMEDIATE
        self.clock = clock
        self.concurrency = concurrency
        self.poll_interval = poll_interval
        self.lease = lease
        self.keep_finished = keep_finished
        self.default_retries = default_retries
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._create = create_tables
        self._owns_engine = owns_engine
        self._dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
        self._last_tick: dict[str, int] = {}
        self._running: dict[int, asyncio.Task[None]] = {}
        self._finishing: set[int] = set()
        self._interrupted: dict[int, str | None] = {}
        self._locked_seen: set[int] = set()
        self._wake = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._scheduler: Scheduler | None = None
        self._closing = False

    @classmethod
    def from_url(cls, url: str, **options: Any) -> SQLJobQueue:
        """A queue on its own engine for ``url`` (a path is a SQLite file); :meth:`aclose`
        disposes the engine. ``options`` go to the constructor."""
        return cls(create_engine(url), owns_engine=True, **options)

    # -- registration ----------------------------------------------------------------------

    def _register_periodic(self, spec: TaskSpec, periodic: PeriodicSpec) -> None:
        """Ticks are rows of the job table (one per (task, tick), by a unique index); a
        purged tick must not be deferred again, so the misfire grace stays within
        ``keep_finished``."""
        if periodic.grace > self.keep_finished:
            raise ConfigurationError(
                f"periodic {spec.name!r}: misfire_grace ({periodic.grace}s) exceeds "
                f"keep_finished ({self.keep_finished}s); a purged tick could be deferred twice"
            )
        if self._scheduler is not None and "jobs:periodic" not in self._scheduler.jobs:
            self._scheduler.add("jobs:periodic", self.defer_due_ticks, self.poll_interval)

    # -- schema ----------------------------------------------------------------------------

    async def create_tables(self) -> None:
        """Create ``freshkeep_jobs`` and its indexes if missing (migration ``0004`` creates
        the same)."""
        try:
            async with self._tx_engine.begin() as conn:
                await conn.run_sync(metadata.create_all, tables=[jobs_table])
        except SQLAlchemyError:  # another instance created it at the same time
            async with self.engine.connect() as conn:
                if not await conn.run_sync(lambda c: inspect(c).has_table(JOBS_TABLE)):
                    raise
        self._create = False

    async def _ensure_tables(self) -> None:
        if self._create:
            await self.create_tables()

    # -- enqueue ---------------------------------------------------------------------------

    async def enqueue(
        self,
        task: str,
        args: Mapping[str, Any] | None = None,
        *,
        dedup_key: str | None = None,
        dedup_scope: DedupScope = "queued",
        delay: float = 0.0,
        connection: Any = None,
    ) -> EnqueueResult:
        """Add a job of ``task`` with ``args``, ready in ``delay`` seconds.

        With ``dedup_key``, the job is skipped (``reason="deduplicated"``) while a waiting job
        has the key; with ``dedup_scope="running"`` also while one runs
        (``reason="in_flight"``). Jobs sharing a dedup key also never run at once.
        ``connection`` (an ``AsyncConnection`` or ``AsyncSession`` on this queue's database)
        inserts the job in the caller's transaction: it is committed or rolled back with it,
        and workers are woken after the commit.
        """
        _, data, lock = self._prepare(task, args, dedup_key, dedup_scope, delay)
        encoded = encode_args(task, data)
        now = self.clock.time()
        row = {
            "task": task,
            "args": encoded,
            "status": "waiting",
            "run_at": now + delay,
            "attempts": 0,
            "dedup_key": dedup_key,
            "lock": lock,
            "tick": None,
            "enqueued_at": now,
        }
        in_flight = dedup_key if dedup_key is not None and dedup_scope == "running" else None
        try:
            if connection is None:
                await self._ensure_tables()
                async with self._tx_engine.begin() as conn:
                    result = await self._insert(conn, row, in_flight)
                if result.enqueued:
                    self._wake.set()
            else:
                conn = await self._caller_connection(connection)
                if conn.dialect.name != self.engine.dialect.name:
                    raise ConfigurationError(
                        f"enqueue(connection=...) is on {conn.dialect.name}, the job queue on "
                        f"{self.engine.dialect.name}: use a connection to the job database"
                    )
                result = await self._insert(conn, row, in_flight)
        except SQLAlchemyError as exc:
            raise JobQueueError(f"could not enqueue a {task!r} job: {exc}") from exc
        self._count_enqueue(result)
        return result

    async def _caller_connection(self, connection: Any) -> AsyncConnection:
        if isinstance(connection, AsyncSession):
            conn = await connection.connection()
            event.listen(connection.sync_session, "after_commit", self._wake_soon, once=True)
            return conn
        if isinstance(connection, AsyncConnection):
            if not connection.in_transaction():
                raise ConfigurationError(
                    "enqueue(connection=...) needs a connection in a transaction "
                    "(async with conn.begin(): ...)"
                )
            event.listen(connection.sync_connection, "commit", self._wake_soon, once=True)
            return connection
        raise ConfigurationError(
            "enqueue(connection=...) takes an SQLAlchemy AsyncConnection or AsyncSession, "
            f"not {type(connection).__name__}"
        )

    def _wake_soon(self, *_: Any) -> None:
        self._wake.set()

    async def _insert(
        self, conn: AsyncConnection, row: dict[str, Any], in_flight: str | None
    ) -> EnqueueResult:
        ins = self._dialect.insert(jobs_table)
        if in_flight is None:
            stmt = ins.values(**row)
        else:
            running = select(_J.id).where(_J.status == "running", _J.dedup_key == in_flight)
            cols = list(row)
            values = select(*(literal(row[c], _J[c].type).label(c) for c in cols)).where(
                ~exists(running)
            )
            stmt = ins.from_select(cols, values)
        new_id = (
            await conn.execute(stmt.on_conflict_do_nothing().returning(_J.id))
        ).scalar_one_or_none()
        if new_id is not None:
            return EnqueueResult(str(new_id), True)
        reason = "deduplicated"
        if in_flight is not None:
            statuses = set(
                (
                    await conn.execute(
                        select(_J.status).where(
                            _J.dedup_key == in_flight, _J.status.in_(("waiting", "running"))
                        )
                    )
                ).scalars()
            )
            if "waiting" not in statuses and "running" in statuses:
                reason = "in_flight"
        elif row["tick"] is not None:
            reason = "tick_taken"
        return EnqueueResult(None, False, reason)

    # -- periodic ticks --------------------------------------------------------------------

    async def defer_due_ticks(self) -> int:
        """Defer the periodic jobs whose tick is due (called by :meth:`start`'s scheduler;
        call it directly with a fake clock). Returns how many jobs this call deferred."""
        deferred = 0
        await self._ensure_tables()
        for name, spec in self._periodic.items():
            now = self.clock.time()
            current = math.floor(now / spec.every)
            last = self._last_tick.get(name)
            if last is None:
                if now - current * spec.every > spec.grace:  # started late in this tick
                    self._last_tick[name] = current
                    continue
                first = current
            else:
                first = last + 1
            if first > current:
                continue
            if current - first > 1000:  # asleep for long: count, do not look each one up
                self._skips["misfire"] += current - 1000 - first
                first = current - 1000
            late = [t for t in range(first, current + 1) if now - t * spec.every > spec.grace]
            if late:
                async with self.engine.connect() as conn:
                    taken = set(
                        (
                            await conn.execute(
                                select(_J.tick).where(
                                    _J.task == name, _J.tick.between(late[0], late[-1])
                                )
                            )
                        ).scalars()
                    )
                self._skips["misfire"] += len([t for t in late if t not in taken])
            for tick in range(first, current + 1):
                if tick in late:
                    continue
                row = {
                    "task": name,
                    "args": encode_args(name, spec.args),
                    "status": "waiting",
                    "run_at": tick * spec.every,
                    "attempts": 0,
                    "dedup_key": None,
                    "lock": self._tasks[name].lock_for(dict(spec.args)),
                    "tick": tick,
                    "enqueued_at": now,
                }
                async with self._tx_engine.begin() as conn:
                    result = await self._insert(conn, row, None)
                self._count_enqueue(result)
                if result.enqueued:
                    deferred += 1
                    self._wake.set()
            self._last_tick[name] = current
        return deferred

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
            await spec.func(JobContext(str(job.id), job.task, job.attempts), orjson.loads(job.args))
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

    async def counts(self) -> dict[str, int]:
        """Jobs by status in the table (all tasks, all instances)."""
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(_J.status, func.count()).group_by(_J.status))).all()
        counts = {status: 0 for status in ("waiting", "running", *_FINISHED)}
        counts.update({status: int(n) for status, n in rows})
        self._counts = {"queued": counts["waiting"], "running": counts["running"]}
        return counts

    async def waiting(self, task: str) -> int:
        """How many jobs of ``task`` wait to run (due or delayed), on every instance."""
        async with self.engine.connect() as conn:
            n = await conn.scalar(
                select(func.count()).where(_J.task == task, _J.status == "waiting")
            )
        return int(n or 0)

    async def get_job(self, job_id: str) -> JobInfo | None:
        """The job with ``job_id`` (``None``: no such job, or purged)."""
        async with self.engine.connect() as conn:
            row = (
                (await conn.execute(select(jobs_table).where(_J.id == int(job_id))))
                .mappings()
                .first()
            )
        if row is None:
            return None
        return JobInfo(
            str(row["id"]),
            row["task"],
            orjson.loads(row["args"]),
            row["status"],
            row["attempts"],
            row["run_at"],
            row["dedup_key"],
            row["lock"],
            row["tick"],
            row["last_error"],
            row["worker"],
        )

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

    async def __aenter__(self) -> SQLJobQueue:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def snapshot_stats(self) -> dict[str, Any]:
        """Counters of this process and the table's queued/running counts (as of the last
        housekeeping, :meth:`drain` or :meth:`counts`)."""
        return {
            "backend": self.backend,
            "worker": self.worker_id,
            "tasks": sorted(self._tasks),
            "periodic": {n: s.every for n, s in self._periodic.items()},
            "enqueued": self._stats["enqueued"],
            "deduplicated": self._skips["deduplicated"],
            "done": self._stats["done"],
            "failed": self._stats["failed"],
            "retried": self._stats["retried"],
            "stalled": self._stats["stalled"],
            "late_finish": self._stats["late_finish"],
            "errors": self._stats["errors"],
            "skipped": dict(self._skips),
            "queued": self._counts["queued"],
            "running": self._counts["running"],
            "running_here": len(self._running),
            "last_error": self._last_error,
            "last_failed_at": self._last_failed[0] if self._last_failed else None,
            "last_failed": self._last_failed[1] if self._last_failed else None,
        }


class MemoryJobQueue(SQLJobQueue):
    """A :class:`SQLJobQueue` on a temporary SQLite file, deleted by :meth:`aclose`: the same
    rules and behaviour, nothing kept (tests, scripts, a single process)."""

    def __init__(self, **options: Any) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="freshkeep-jobs-")
        path = Path(self._tmp.name) / "jobs.db"
        engine = create_engine(str(path))
        super().__init__(engine, owns_engine=True, create_tables=True, **options)

    async def aclose(self) -> None:
        """Stop, dispose the engine and delete the file."""
        try:
            await super().aclose()
        finally:
            self._tmp.cleanup()


__all__ = [
    "JOBS_TABLE",
    "JobInfo",
    "MemoryJobQueue",
    "SQLJobQueue",
    "async_url",
    "jobs_table",
]
