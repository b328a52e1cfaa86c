"""The job table's side of the embedded queue: the row types, enqueue (one ``INSERT … ON
CONFLICT DO NOTHING``), periodic ticks, and reads of the table. The rules the database keeps
(partial unique indexes) are described in :mod:`freshkeep.jobs._sql`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from freshkeep.core.clock import SYSTEM_CLOCK, Clock
from freshkeep.exceptions import (
    ConfigurationError,
    JobQueueError,
    missing_extra,
)
from freshkeep.jobs._types import (
    DedupScope,
    EnqueueResult,
    JobQueue,
    PeriodicSpec,
    TaskSpec,
    encode_args,
)
from freshkeep.scheduler import Scheduler

try:
    from sqlalchemy import (
        event,
        exists,
        func,
        inspect,
        literal,
        select,
    )
    from sqlalchemy.dialects import postgresql, sqlite
    from sqlalchemy.exc import SQLAlchemyError
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

    from freshkeep.sql.engine import writer_engine
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


class SQLJobTable(JobQueue):
    """The table half of :class:`~freshkeep.jobs.SQLJobQueue` (see it for the options): the
    state, enqueue, periodic ticks and counts. :class:`~freshkeep.jobs._sql_worker.SQLWorker`
    adds the workers."""

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

    # -- reading the table -----------------------------------------------------------------

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


__all__ = ["JobInfo", "SQLJobTable"]
