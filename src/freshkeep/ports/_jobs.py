"""The job queue port: what a job queue offers, whatever runs it, and the logic every queue
shares (the task registry, argument and dedup-key checks, the counters)."""

from __future__ import annotations

import math
import re
import time
from abc import abstractmethod
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import orjson

from freshkeep.core.backoff import backoff
from freshkeep.core.component import Component, Kind, Snapshot
from freshkeep.exceptions import (
    ConfigurationError,
    DuplicateNameError,
    EncodeError,
    UnknownTaskError,
)

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

MAX_KEY = 512
"""The longest dedup key or lock name."""


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
        return backoff(attempt, self.backoff, self.max_backoff)

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


def check_key(kind: str, value: str | None) -> None:
    """Refuse a dedup key or lock name that is not a string of 1-:data:`MAX_KEY` characters."""
    if value is not None and (not isinstance(value, str) or not 0 < len(value) <= MAX_KEY):
        raise ConfigurationError(f"a {kind} must be a string of 1-{MAX_KEY} characters: {value!r}")


def encode_args(task: str, args: Mapping[str, Any]) -> str:
    """A job's arguments as JSON with sorted keys (``EncodeError`` when they cannot be)."""
    try:
        return orjson.dumps(dict(args), option=orjson.OPT_SORT_KEYS).decode()
    except TypeError as exc:
        raise EncodeError(f"the arguments of a {task!r} job are not JSON-encodable: {exc}") from exc


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


class JobQueue(Component):
    """A durable queue of jobs with workers: the port artifacts and processors are scheduled
    through. Implementations: :class:`~freshkeep.jobs.SQLJobQueue` (embedded, any SQLAlchemy
    database) and :class:`~freshkeep.jobs.ProcrastinateJobQueue` (PostgreSQL, distributed).

    The base keeps what every queue shares: the registry of tasks and periodic ticks
    (:meth:`task`, :meth:`periodic`; a backend adds its own with :meth:`_register_task` and
    :meth:`_register_periodic`), the checks of an enqueue (:meth:`_prepare`) and the counters
    a backend's :meth:`snapshot` reports. It is a component of kind ``jobs``
    (:meth:`freshkeep.Keeper.register`), named ``jobs`` unless told otherwise. The conformance suite
    :class:`freshkeep.testing.conformance.JobQueueSuite` checks a backend's behaviour.
    """

    kind: ClassVar[Kind] = "jobs"
    name: str = "jobs"
    """Its name among a keeper's job queues (set another one before registering a second)."""
    backend: ClassVar[str] = "base"
    reserved_tasks: ClassVar[frozenset[str]] = frozenset()
    """Task names the backend registers itself."""

    def __init__(self) -> None:
        self._tasks: dict[str, TaskSpec] = {}
        self._periodic: dict[str, PeriodicSpec] = {}
        self._stats: Counter[str] = Counter()
        self._skips: Counter[str] = Counter({r: 0 for r in SKIP_REASONS})
        self._counts = {"queued": 0, "running": 0}
        self._last_error: str | None = None
        self._last_failed: tuple[float, str] | None = None

    # -- registration ----------------------------------------------------------------------

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
        if name in self._tasks or name in self.reserved_tasks:
            raise DuplicateNameError(f"a job task named {name!r} is registered")
        spec = TaskSpec(name, func, retries, backoff, max_backoff, lock)
        self._register_task(spec)
        self._tasks[name] = spec

    def periodic(
        self,
        task: str,
        every: float,
        *,
        args: Mapping[str, Any] | None = None,
        misfire_grace: float | None = None,
    ) -> None:
        """Defer ``task`` once per tick of ``every`` seconds, once across every instance; a
        tick deferred or started later than ``misfire_grace`` (default: ``every``) past its due
        time is skipped and counted."""
        spec = self._spec(task)
        if task in self._periodic:
            raise DuplicateNameError(f"task {task!r} is periodic already")
        periodic = PeriodicSpec(task, every, dict(args or {}), misfire_grace)
        encode_args(task, periodic.args)
        self._register_periodic(spec, periodic)
        self._periodic[task] = periodic

    def _register_task(self, spec: TaskSpec) -> None:
        """Register ``spec`` with the backend (raise to refuse it); the base has nothing to do."""
        return None

    def _register_periodic(self, spec: TaskSpec, periodic: PeriodicSpec) -> None:
        """Register a periodic tick with the backend (raise to refuse it)."""
        return None

    def _spec(self, task: str) -> TaskSpec:
        try:
            return self._tasks[task]
        except KeyError:
            known = ", ".join(sorted(self._tasks)) or "none"
            raise UnknownTaskError(
                f"no job task named {task!r} is registered (registered: {known})"
            ) from None

    @property
    def tasks(self) -> dict[str, TaskSpec]:
        """The registered tasks, by name."""
        return dict(self._tasks)

    # -- shared bookkeeping ----------------------------------------------------------------

    def _prepare(
        self,
        task: str,
        args: Mapping[str, Any] | None,
        dedup_key: str | None,
        dedup_scope: DedupScope,
        delay: float,
    ) -> tuple[TaskSpec, dict[str, Any], str | None]:
        """Check an enqueue; return the task, the arguments and the job's lock name."""
        spec = self._spec(task)
        if dedup_scope not in ("queued", "running"):
            raise ConfigurationError(f"dedup_scope must be 'queued' or 'running': {dedup_scope!r}")
        if not isinstance(delay, int | float) or delay < 0 or not math.isfinite(delay):
            raise ConfigurationError(f"delay must be a finite number >= 0: {delay!r}")
        check_key("dedup key", dedup_key)
        data = dict(args or {})
        lock = spec.lock_for(data)
        check_key("lock name", lock)
        return spec, data, lock

    def _count_enqueue(self, result: EnqueueResult) -> None:
        if result.enqueued:
            self._stats["enqueued"] += 1
        elif result.reason is not None:
            self._skips[result.reason] += 1

    def _count_failure(
        self, task: str, error: str, *, final: bool, now: float | None = None
    ) -> None:
        """Count a failed attempt: retried, or failed for good (remembered for health)."""
        self._last_error = f"{task}: {error}"
        if final:
            self._stats["failed"] += 1
            self._last_failed = (time.time() if now is None else now, self._last_error)
        else:
            self._stats["retried"] += 1

    # -- the port --------------------------------------------------------------------------

    @abstractmethod
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

    @abstractmethod
    async def start(self) -> None:
        """Start the workers and the periodic ticks."""

    @abstractmethod
    async def aclose(self) -> None:
        """Stop the workers; jobs interrupted are put back to waiting."""

    @abstractmethod
    async def drain(self, timeout: float = 30.0) -> None:
        """Run (or wait for) jobs until none is ready or running."""

    @abstractmethod
    async def waiting(self, task: str) -> int:
        """How many jobs of ``task`` wait to run (due or delayed), on every instance."""

    @abstractmethod
    def snapshot(self) -> JobQueueSnapshot:
        """Counters (enqueued, done, failed, retried, skips by reason) and queue sizes."""

    def _snapshot_fields(self) -> dict[str, Any]:
        """The fields of :class:`JobQueueSnapshot` every backend fills the same way."""
        return {
            "name": self.name,
            "backend": self.backend,
            "tasks": tuple(sorted(self._tasks)),
            "periodic": {n: s.every for n, s in self._periodic.items()},
            "enqueued": self._stats["enqueued"],
            "deduplicated": self._skips["deduplicated"],
            "done": self._stats["done"],
            "failed": self._stats["failed"],
            "retried": self._stats["retried"],
            "stalled": self._stats["stalled"],
            "skipped": dict(self._skips),
            "queued": self._counts["queued"],
            "running": self._counts["running"],
            "last_error": self._last_error,
            "last_failed_at": self._last_failed[0] if self._last_failed else None,
            "last_failed": self._last_failed[1] if self._last_failed else None,
        }

    async def __aenter__(self) -> JobQueue:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


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
    "TaskFunc",
    "TaskSpec",
    "check_key",
    "check_name",
    "encode_args",
]
