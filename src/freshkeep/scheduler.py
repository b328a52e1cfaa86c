"""An in-process scheduler of periodic jobs (processors, resyncs, GC), on an injectable clock.

Each :class:`Job` has a cadence (``every`` seconds, plus optional random ``jitter``). A tick
starts every due job that is not running, in parallel, each in its own task; at most one run
of a job is in flight. ``last_run`` advances when a run **ends**, success or failure, and the
next run is due ``every`` seconds later: a permanently failing job runs at its cadence, not
every tick. A run still going when the job is due again is not started twice: that slot is
*coalesced* and counted. A run later than ``misfire_grace`` past its due time (the scheduler
was blocked or asleep) is skipped and counted. A run longer than ``max_runtime`` is reported
(``overruns``) and, with ``cancel_overrun=True``, cancelled, so a hung run cannot block its job
forever. With ``locks`` (e.g. :class:`~freshkeep.processing.PostgresLocks`), each run holds the
lock ``job:<name>`` so that only one instance runs a job at a time; a run that finds the lock
taken is skipped as ``locked``. No job's exception ever stops the scheduler.

Drive it with :meth:`Scheduler.tick` (tests, with a :class:`~freshkeep.testing.FakeClock`) or
:meth:`Scheduler.start` (a background loop on the event loop).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from freshkeep.core import tracing
from freshkeep.core.clock import SYSTEM_CLOCK, Clock
from freshkeep.exceptions import ConfigurationError, DuplicateNameError, LockBusy
from freshkeep.ports import Lock

log = logging.getLogger("freshkeep.scheduler")

SKIP_REASONS = ("in_flight", "locked", "misfire")
"""Why a due run was not started: still running, held by another instance, too late."""


@dataclass(eq=False)
class Job:
    """A periodic job: ``func`` is called (and awaited) every ``every`` seconds."""

    name: str
    func: Callable[[], Awaitable[Any]]
    every: float
    jitter: float = 0.0
    """Up to this many seconds are added at random to each interval (spreads instances)."""
    max_runtime: float | None = None
    """A run longer than this is reported (counted in ``overruns``)."""
    cancel_overrun: bool = False
    """Cancel a run that exceeds ``max_runtime``."""
    misfire_grace: float | None = None
    """A run starting later than this past its due time is skipped (``None``: never)."""
    # state
    next_due: float = 0.0
    last_run: float | None = None
    """Monotonic time the last run ended (success or failure)."""
    started_at: float | None = None
    task: asyncio.Task[None] | None = None
    runs: int = 0
    failures: int = 0
    overruns: int = 0
    last_error: str | None = None
    last_duration: float | None = None
    skips: Counter[str] = field(default_factory=Counter)
    _overrun_reported: bool = False

    def __post_init__(self) -> None:
        if self.every <= 0:
            raise ConfigurationError(f"job {self.name!r}: every must be > 0, not {self.every!r}")
        if self.jitter < 0:
            raise ConfigurationError(f"job {self.name!r}: jitter must be >= 0")

    @property
    def running(self) -> bool:
        """Whether a run is in flight."""
        return self.task is not None

    def snapshot(self) -> dict[str, Any]:
        """The job's figures, JSON-ready."""
        return {
            "every": self.every,
            "running": self.running,
            "last_run": self.last_run,
            "next_due": self.next_due,
            "runs": self.runs,
            "failures": self.failures,
            "overruns": self.overruns,
            "last_error": self.last_error,
            "last_duration": self.last_duration,
            "skips": dict(self.skips),
        }


class Scheduler:
    """Runs :class:`Job` s at their cadence; see the module docstring."""

    def __init__(
        self,
        *,
        clock: Clock = SYSTEM_CLOCK,
        locks: Lock | None = None,
        rng: random.Random | None = None,
        poll: float = 1.0,
        lock_lease: float = 60.0,
    ) -> None:
        self.clock = clock
        self.locks = locks
        self.lock_lease = lock_lease
        """The lease of a run's lock ``job:<name>`` (renewed while the run lasts)."""
        self.rng = rng or random.Random()
        self.poll = poll
        self.jobs: dict[str, Job] = {}
        self._loop_task: asyncio.Task[None] | None = None

    def add(
        self,
        name: str,
        func: Callable[[], Awaitable[Any]],
        every: float,
        *,
        delay: float = 0.0,
        **options: Any,
    ) -> Job:
        """Add a job, first due ``delay`` seconds from now (plus jitter). ``options``:
        ``jitter``, ``max_runtime``, ``cancel_overrun``, ``misfire_grace``."""
        if name in self.jobs:
            raise DuplicateNameError(f"a job named {name!r} is scheduled")
        job = Job(name, func, every, **options)
        job.next_due = self.clock.monotonic() + delay + self._jitter(job)
        self.jobs[name] = job
        return job

    def _jitter(self, job: Job) -> float:
        return self.rng.uniform(0, job.jitter) if job.jitter else 0.0

    def tick(self) -> list[str]:
        """Start every due job that is not running; report overruns. Returns the names of the
        jobs started. Never raises for a job's sake."""
        now = self.clock.monotonic()
        started: list[str] = []
        for job in self.jobs.values():
            if job.task is not None:
                self._check_overrun(job, now)
                if now >= job.next_due:
                    job.skips["in_flight"] += 1  # coalesced: counted once per missed slot
                    while job.next_due <= now:
                        job.next_due += job.every
                continue
            if now < job.next_due:
                continue
            late = now - job.next_due
            if job.misfire_grace is not None and late > job.misfire_grace:
                job.skips["misfire"] += 1
                job.next_due = now + job.every + self._jitter(job)
                continue
            job.started_at = now
            job._overrun_reported = False
            job.task = asyncio.get_running_loop().create_task(
                self._run(job), name=f"freshkeep-job:{job.name}"
            )
            started.append(job.name)
        return started

    def _check_overrun(self, job: Job, now: float) -> None:
        if job.max_runtime is None or job.started_at is None or job._overrun_reported:
            return
        if now - job.started_at <= job.max_runtime:
            return
        job._overrun_reported = True
        job.overruns += 1
        log.warning(
            "job %s has run for %.1fs, over its max_runtime of %.1fs%s",
            job.name,
            now - job.started_at,
            job.max_runtime,
            "; cancelling it" if job.cancel_overrun else "",
        )
        if job.cancel_overrun and job.task is not None:
            job.task.cancel()

    @staticmethod
    async def _call(job: Job) -> None:
        job.runs += 1
        with tracing.span("freshkeep.scheduler.run", {"freshkeep.scheduler.job": job.name}):
            await job.func()
        job.last_error = None

    async def _run(self, job: Job) -> None:
        try:
            if self.locks is None:
                await self._call(job)
            else:
                async with self.locks.hold(f"job:{job.name}", self.lock_lease):
                    await self._call(job)
        except LockBusy:  # another instance runs it (or the job found its processor busy)
            job.skips["locked"] += 1
        except asyncio.CancelledError:
            job.failures += 1
            job.last_error = "cancelled"
            if not job._overrun_reported:
                raise  # cancelled from outside (stop()), not by an overrun
        except Exception as exc:
            job.failures += 1
            job.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("job %s failed", job.name)
        finally:
            end = self.clock.monotonic()
            if job.started_at is not None:
                job.last_duration = end - job.started_at
            job.last_run = end
            job.next_due = end + job.every + self._jitter(job)
            job.task = None

    async def wait_idle(self) -> None:
        """Wait until no run is in flight."""
        while tasks := [j.task for j in self.jobs.values() if j.task is not None]:
            await asyncio.gather(*tasks, return_exceptions=True)

    def next_wake(self) -> float:
        """Seconds until the next job is due, at most ``poll``."""
        now = self.clock.monotonic()
        dues = [j.next_due - now for j in self.jobs.values() if j.task is None]
        return max(0.0, min([self.poll, *dues]))

    async def start(self) -> None:
        """Tick in a background task until :meth:`stop`."""
        if self._loop_task is None:
            self._loop_task = asyncio.get_running_loop().create_task(
                self._loop(), name="freshkeep-scheduler"
            )

    async def _loop(self) -> None:
        while True:
            try:
                self.tick()
            except Exception:  # pragma: no cover - tick() guards every job already
                log.exception("scheduler tick failed")
            await asyncio.sleep(self.next_wake() or self.poll)

    async def stop(self, *, cancel: bool = True) -> None:
        """Stop ticking; cancel the runs in flight (or wait for them: ``cancel=False``)."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
            self._loop_task = None
        if cancel:
            for job in self.jobs.values():
                if job.task is not None:
                    job.task.cancel()
        await self.wait_idle()

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Every job's figures, by name."""
        return {name: job.snapshot() for name, job in self.jobs.items()}


__all__ = ["SKIP_REASONS", "Job", "Scheduler"]
