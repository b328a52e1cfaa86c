"""The job port's types (they live in :mod:`freshkeep.ports`; re-exported here)."""

from __future__ import annotations

from freshkeep.ports._jobs import (
    JOB_STATUSES,
    MAX_KEY,
    SKIP_REASONS,
    DedupScope,
    EnqueueResult,
    JobContext,
    JobQueue,
    LockFunc,
    PeriodicSpec,
    TaskFunc,
    TaskSpec,
    check_key,
    check_name,
    encode_args,
)

__all__ = [
    "JOB_STATUSES",
    "MAX_KEY",
    "SKIP_REASONS",
    "DedupScope",
    "EnqueueResult",
    "JobContext",
    "JobQueue",
    "LockFunc",
    "PeriodicSpec",
    "TaskFunc",
    "TaskSpec",
    "check_key",
    "check_name",
    "encode_args",
]
