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

The queue is three modules: :mod:`~freshkeep.jobs._sql_table` (rows, enqueue, ticks, counts),
:mod:`~freshkeep.jobs._sql_worker` (claiming, running, retries, housekeeping, lifecycle) and
this facade; the shared logic of every queue (task registry, checks, counters) is the
:class:`~freshkeep.ports.JobQueue` base.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from freshkeep.exceptions import missing_extra
from freshkeep.jobs._sql_table import JobInfo
from freshkeep.jobs._sql_worker import SQLWorker
from freshkeep.jobs._types import SQLJobQueueSnapshot

try:
    from freshkeep.sql.engine import async_url, create_engine
    from freshkeep.sql.schema import JOBS_TABLE, jobs_table
except ImportError as exc:  # pragma: no cover - exercised by the no-extras import test
    raise missing_extra("sqlalchemy", exc.name or "sqlalchemy") from exc


class SQLJobQueue(SQLWorker):
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

    @classmethod
    def from_url(cls, url: str, **options: Any) -> SQLJobQueue:
        """A queue on its own engine for ``url`` (a path is a SQLite file); :meth:`aclose`
        disposes the engine. ``options`` go to the constructor."""
        return cls(create_engine(url), owns_engine=True, **options)

    async def __aenter__(self) -> SQLJobQueue:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def snapshot(self) -> SQLJobQueueSnapshot:
        """Counters of this process and the table's queued/running counts (as of the last
        housekeeping, :meth:`drain` or :meth:`counts`)."""
        return SQLJobQueueSnapshot(
            **self._snapshot_fields(),
            worker=self.worker_id,
            late_finish=self._stats["late_finish"],
            errors=self._stats["errors"],
            running_here=len(self._running),
        )


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
