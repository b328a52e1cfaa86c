"""The job port: what a job queue offers, whatever runs it."""

from __future__ import annotations

import re
from abc import abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

from freshkeep.core.component import Component, Kind, Snapshot
from freshkeep.exceptions import ConfigurationError

TaskFunc = Callable[["JobContext", dict[str, Any]], Awaitable[Any]]
"""A task: called with its :class:`JobContext` and the job's arguments (a JSON object)."""

LockFunc = Callable[[dict[str, Any]], "str | None"]
"""Maps a job's arguments to the name of its lock (``None``: no lock)."""

DedupScope = Literal["queued", "running"]
"""``"queued"``: skip when a waiting job has the key; ``"running"``: also when one runs."""

SKIP_REASONS = ("deduplicated", "in_flight", "locked", "misfire", "tick_taken", "superseded")
"""Why a job was not enqueued or not run:

- ``deduplicated``: a waiting job has the same dedup key (the enqueue is skipped);
- ``in_flight``: ``dedup_scope="running"`` and a job with the key is running (skipped);
- ``locked``: a ready job waited because its lock (or dedup key) is held by a running job
  (counted once per job; the job is not failed, it runs when the lock is free);
- ``misfire``: a periodic tick later than its ``misfire_grace`` (skipped);
- ``tick_taken``: another instance deferred this periodic tick already;
- ``superseded``: a retried or stalled job folded into a waiting job with the same dedup key.
"""

JOB_STATUSES = ("waiting", "running", "done", "failed", "skipped")
"""The states of a job row."""

_NAME = re.compile(r"^[A-Za-z0-9_.:\-/]{1,255}$")


@dataclass(frozen=True, slots=True)
class EnqueueResult:
    """What :meth:`JobQueue.enqueue` did."""

    job_id: str | None
    """The new job's id (``None`` when not enqueued)."""
    enqueued: bool
    """Whether a job was added."""
    reason: str | None = None
    """Why not (one of :data:`SKIP_REASONS`), ``None`` when enqueued."""


@dataclass(frozen=True, slots=True)
class JobContext:
    """What a running task knows about its job."""

    job_id: str
    """The job's id."""
    task: str
    """The task's name."""
    attempt: int
    """This attempt's number, starting at 1."""


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """A registered task (see :meth:`JobQueue.task`)."""

    name: str
    func: TaskFunc
    retries: int = 5
    """Failed attempts retried before the job is marked ``failed`` (attempts = retries + 1)."""
    backoff: float = 1.0
    """Delay before the first retry; doubled on each next one."""
    max_backoff: float = 300.0
    """Cap of the retry delay."""
    lock: LockFunc | None = None
    """``lock(args)``: at most one running job per returned lock name."""

    def __post_init__(self) -> None:
        check_name("task", self.name)
        if self.retries < 0:
            raise ConfigurationError(f"task {self.name!r}: retries must be >= 0")
        if self.backoff < 0 or self.max_backoff < self.backoff:
            raise ConfigurationError(
                f"task {self.name!r}: need 0 <= backoff ({self.backoff}) <= max_backoff "
                f"({self.max_backoff})"
            )

    def retry_delay(self, attempt: int) -> float:
        """Seconds before retrying after failed attempt number ``attempt`` (1-based):
        ``backoff * 2 ** (attempt - 1)``, capped at ``max_backoff``."""
        return min(self.max_backoff, self.backoff * 2.0 ** min(attempt - 1, 60))

    def lock_for(self, args: dict[str, Any]) -> str | None:
        """The lock name of a job with ``args`` (``None``: no lock)."""
        return None if self.lock is None else self.lock(args)


@dataclass(frozen=True, slots=True)
class PeriodicSpec:
    """A periodic job: ``task`` is deferred once per tick of ``every`` seconds (epoch-aligned:
    tick ``k`` is due at ``k * every`` wall-clock seconds, the same on every instance)."""

    task: str
    every: float
    args: Mapping[str, Any] = field(default_factory=dict)
    misfire_grace: float | None = None
    """A tick deferred or started later than this past its due time is skipped (``None``:
    ``every``, so a late tick is skipped once the next one is due)."""

    def __post_init__(self) -> None:
        if self.every <= 0:
            raise ConfigurationError(f"periodic {self.task!r}: every must be > 0")
        if self.misfire_grace is not None and self.misfire_grace < 0:
            raise ConfigurationError(f"periodic {self.task!r}: misfire_grace must be >= 0")

    @property
    def grace(self) -> float:
        """The effective misfire grace in seconds."""
        return self.every if self.misfire_grace is None else self.misfire_grace


def check_name(kind: str, name: str) -> None:
    """Refuse a task or key name that is empty, too long or has odd characters."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigurationError(
            f"{kind} name {name!r} must be 1-255 characters of letters, digits and _.:-/"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class JobQueueSnapshot(Snapshot):
    """A job queue's counters now (:meth:`JobQueue.snapshot`): this process's counters, and
    the queued/running counts as of the last housekeeping, ``drain`` or ``counts``."""

    backend: str
    """``sql`` or ``procrastinate``."""
    worker: str
    tasks: tuple[str, ...]
    """The registered tasks, sorted."""
    periodic: Mapping[str, float]
    """Periodic tasks and their period (seconds)."""
    enqueued: int
    deduplicated: int
    done: int
    failed: int
    """Jobs that failed for good (every retry spent)."""
    retried: int
    stalled: int
    skipped: Mapping[str, int]
    """Skipped enqueues and ticks, by reason (:data:`SKIP_REASONS`)."""
    queued: int
    running: int
    last_error: str | None
    last_failed_at: float | None
    """When a job last failed for good (``None``: never, in this process)."""
    last_failed: str | None
    """That job's task and error."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SQLJobQueueSnapshot(JobQueueSnapshot):
    """The snapshot of a :class:`~freshkeep.jobs.SQLJobQueue`: a few more counters."""

    late_finish: int
    """Jobs that finished after their lease expired (another worker may have run them)."""
    errors: int
    running_here: int
    """Jobs running in this process."""


class QueueComponent(Component):
    """The component side of a job queue: registered on a keeper as kind ``jobs``."""

    __slots__ = ()
    kind: ClassVar[Kind] = "jobs"
    name: str = "jobs"
    """Its name among a keeper's job queues (set another one before registering a second)."""

    @abstractmethod
    def snapshot(self) -> JobQueueSnapshot:
        """Counters (enqueued, done, failed, retried, skips by reason) and queue sizes."""


@runtime_checkable
class JobQueue(Protocol):
    """A durable queue of jobs with workers: the port artifacts and processors are scheduled
    through. Implementations: :class:`~freshkeep.jobs.SQLJobQueue` (embedded, any SQLAlchemy
    database) and :class:`~freshkeep.jobs.ProcrastinateJobQueue` (PostgreSQL, distributed).
    """

    def task(
        self,
        name: str,
        func: TaskFunc,
        *,
        retries: int = 5,
        backoff: float = 1.0,
        max_backoff: float = 300.0,
        lock: LockFunc | None = None,
    ) -> None:
        """Register a task. ``lock(args)`` -> lock name: at most one running job per lock."""
        ...

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
        """Add a job. ``connection``: an SQLAlchemy ``AsyncConnection`` or ``AsyncSession`` of
        the caller's transaction on the job database; the job commits or rolls back with it.
        ``dedup_scope="queued"`` skips when a waiting job has ``dedup_key``; ``"running"``
        also when a running one has it."""
        ...

    def periodic(
        self,
        task: str,
        every: float,
        *,
        args: Mapping[str, Any] | None = None,
        misfire_grace: float | None = None,
    ) -> None:
        """Defer ``task`` once every ``every`` seconds, across all instances."""
        ...

    async def start(self) -> None:
        """Start the workers and the periodic ticks."""
        ...

    async def aclose(self) -> None:
        """Stop the workers; jobs interrupted are put back to waiting."""
        ...

    async def drain(self, timeout: float = 30.0) -> None:
        """Run (or wait for) jobs until none is ready or running."""
        ...

    async def waiting(self, task: str) -> int:
        """How many jobs of ``task`` wait to run (due or delayed), on every instance."""
        ...

    name: str
    """Its name on a keeper (:meth:`freshkeep.Keeper.register`); ``jobs`` by default."""

    def snapshot(self) -> JobQueueSnapshot:
        """Counters (enqueued, done, failed, retried, skips by reason) and queue sizes."""
        ...


__all__ = [
    "JOB_STATUSES",
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
    "check_name",
]
