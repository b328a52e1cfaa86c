"""The job port's types (they live in :mod:`freshkeep.ports`; re-exported here)."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass

from freshkeep.core import tracing
from freshkeep.ports._jobs import (
    JOB_STATUSES,
    MAX_KEY,
    SKIP_REASONS,
    DedupScope,
    EnqueueResult,
    JobContext,
    JobQueue,
    JobQueueSnapshot,
    LockFunc,
    PeriodicSpec,
    TaskFunc,
    TaskSpec,
    check_key,
    check_name,
    encode_args,
)


def job_span(task: str, job_id: str, attempt: int) -> AbstractContextManager[tracing.Span]:
    """The span of one run of a job (``freshkeep.job.run``)."""
    attributes: tracing.Attributes = {
        "freshkeep.job.task": task,
        "freshkeep.job.id": job_id,
        "freshkeep.job.attempt": attempt,
    }
    return tracing.span("freshkeep.job.run", attributes)


QueueComponent = JobQueue
"""The component side of a job queue (kind ``jobs``): the :class:`JobQueue` port itself."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SQLJobQueueSnapshot(JobQueueSnapshot):
    """The snapshot of a :class:`~freshkeep.jobs.SQLJobQueue`: a few more counters."""

    late_finish: int
    """Jobs that finished after their lease expired (another worker may have run them)."""
    errors: int
    running_here: int
    """Jobs running in this process."""


__all__ = [
    "JOB_STATUSES",
    "MAX_KEY",
    "SKIP_REASONS",
    "DedupScope",
    "EnqueueResult",
    "JobContext",
    "JobQueue",
    "JobQueueSnapshot",
    "LockFunc",
    "PeriodicSpec",
    "QueueComponent",
    "SQLJobQueueSnapshot",
    "TaskFunc",
    "TaskSpec",
    "check_key",
    "check_name",
    "encode_args",
]
