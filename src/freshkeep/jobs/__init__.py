"""Jobs: a durable queue of tasks run by workers, with dedup keys, locks, retries with
backoff, periodic ticks and recovery of stalled jobs (see ``docs/jobs.md``).

The port is :class:`JobQueue`; two implementations:

- :class:`SQLJobQueue` (embedded, the default): a ``freshkeep_jobs`` table in the application's
  database (SQLite or PostgreSQL through SQLAlchemy async) and asyncio workers in-process;
  :class:`MemoryJobQueue` is the same on a throw-away SQLite file.
- :class:`ProcrastinateJobQueue` (distributed): `procrastinate <https://procrastinate.readthedocs.io>`_
  on PostgreSQL.

:func:`job_queue_from_settings` builds the configured one. The implementations need extras
(``freshkeep[sqlite]`` / ``freshkeep[jobs]``) and are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from freshkeep.jobs._types import (
    JOB_STATUSES,
    SKIP_REASONS,
    DedupScope,
    EnqueueResult,
    JobContext,
    JobQueue,
    JobQueueSnapshot,
    LockFunc,
    PeriodicSpec,
    QueueComponent,
    SQLJobQueueSnapshot,
    TaskFunc,
    TaskSpec,
)

if TYPE_CHECKING:
    from freshkeep.jobs._factory import job_queue_from_settings, schedule_processor
    from freshkeep.jobs._sql import JobInfo, MemoryJobQueue, SQLJobQueue, jobs_table
    from freshkeep.jobs.procrastinate import ProcrastinateJobQueue

_LAZY = {
    "SQLJobQueue": "freshkeep.jobs._sql",
    "MemoryJobQueue": "freshkeep.jobs._sql",
    "JobInfo": "freshkeep.jobs._sql",
    "jobs_table": "freshkeep.jobs._sql",
    "ProcrastinateJobQueue": "freshkeep.jobs.procrastinate",
    "job_queue_from_settings": "freshkeep.jobs._factory",
    "schedule_processor": "freshkeep.jobs._factory",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'freshkeep.jobs' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "JOB_STATUSES",
    "SKIP_REASONS",
    "DedupScope",
    "EnqueueResult",
    "JobContext",
    "JobInfo",
    "JobQueue",
    "JobQueueSnapshot",
    "LockFunc",
    "MemoryJobQueue",
    "PeriodicSpec",
    "ProcrastinateJobQueue",
    "QueueComponent",
    "SQLJobQueue",
    "SQLJobQueueSnapshot",
    "TaskFunc",
    "TaskSpec",
    "job_queue_from_settings",
    "jobs_table",
    "schedule_processor",
]
