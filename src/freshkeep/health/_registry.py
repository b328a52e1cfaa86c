"""The :class:`Health` registry: named checks, run together into one :class:`HealthReport`."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

from freshkeep.core.clock import SYSTEM_CLOCK, Clock
from freshkeep.core.component import Component
from freshkeep.exceptions import ConfigurationError, DuplicateNameError
from freshkeep.health._config import HealthConfig
from freshkeep.health._model import CheckResult, HealthReport, Level

if TYPE_CHECKING:
    from freshkeep.health._processing import ItemsSource, ProcessorWatch
    from freshkeep.jobs import JobQueue
    from freshkeep.keeper import Keeper
    from freshkeep.processing import Pipeline, ProcessingStateStore

log = logging.getLogger("freshkeep.health")

CheckOutcome: TypeAlias = (
    CheckResult | Level | tuple[Level | str, str] | tuple[Level | str, str, Mapping[str, Any]]
)
"""What a check returns: a :class:`CheckResult` (its name is replaced by the registered
name), or ``(level, detail)`` / ``(level, detail, data)``, or a bare :class:`Level`."""

Check: TypeAlias = Callable[[], CheckOutcome | Awaitable[CheckOutcome]]
"""A health check: a sync or async callable without arguments. A sync check runs on the
event loop, so it must be quick; do I/O in an async one."""

RUN: ContextVar[object | None] = ContextVar("freshkeep_health_run", default=None)
"""A token unique to the :meth:`Health.run` in progress (checks of one run share work by it)."""


@dataclass(frozen=True, slots=True)
class _Registered:
    check: Check
    timeout: float | None


class Health:
    """Every health check of a keeper (``keeper.health``), run together by :meth:`run`.

    - :meth:`add` registers a check (sync or async, see :data:`Check`); a check that raises or
      exceeds its timeout is an ``error`` result with its message, never a failed run.
    - Built-in checks are computed on each run from the keeper's registries, so a view,
      remote, notifier, artifact cache or job queue registered later is covered:
      ``view:<name>``, ``remote:<name>``, ``notifier:<name>``, ``artifacts:<name>``,
      ``jobs:<name>`` (a queue :meth:`watch_jobs` does not watch already), ``store`` and
      ``bus``.
    - :meth:`watch_processor` adds the lag and stuck-item checks of a file processor.
    - Thresholds come from :class:`HealthConfig` (``FRESHKEEP_HEALTH_*``), read and validated
      by :meth:`configure` (called by :meth:`freshkeep.Keeper.start`, else by the first run).

    ``clock`` (default: the keeper's) gives the wall time of ages and of the report.
    """

    def __init__(
        self,
        keeper: Keeper | None = None,
        *,
        clock: Clock | None = None,
        builtins: bool = True,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.keeper = keeper
        self.clock: Clock = (
            clock if clock is not None else keeper.clock if keeper is not None else SYSTEM_CLOCK
        )
        self.builtins = builtins
        """Whether :meth:`run` includes the built-in checks of the keeper."""
        self.last_report: HealthReport | None = None
        """The report of the latest completed run (``None`` before the first)."""
        self.runs = 0
        """Completed runs."""
        self._environ = environ
        self._config: HealthConfig | None = None
        self._checks: dict[str, _Registered] = {}
        self._watches: dict[str, ProcessorWatch] = {}
        self._watched_queues: dict[str, object] = {}
        """The job queues of :meth:`watch_jobs`, by the name of their check."""
        self._view_reads: dict[str, dict[str, int]] = {}
        self._inflight: asyncio.Future[HealthReport] | None = None
        self._last_mono = 0.0

    # -- configuration ------------------------------------------------------------------------

    def configure(self, environ: Mapping[str, str] | None = None) -> HealthConfig:
        """Read and validate the ``FRESHKEEP_HEALTH_*`` overrides (of ``environ``, default the
        one given at construction, else ``os.environ``); raises
        :class:`~freshkeep.exceptions.ConfigurationError` naming a bad or unknown variable."""
        self._config = HealthConfig.from_env(environ if environ is not None else self._environ)
        return self._config

    @property
    def config(self) -> HealthConfig:
        """The thresholds in force (read from the environment on first use)."""
        return self._config if self._config is not None else self.configure()

    # -- registry -----------------------------------------------------------------------------

    def add(self, name: str, check: Check, *, timeout: float | None = None) -> None:
        """Register ``check`` under ``name``; ``timeout`` (seconds) overrides
        ``FRESHKEEP_HEALTH_CHECK_TIMEOUT`` for it. A name used twice raises
        :class:`~freshkeep.exceptions.DuplicateNameError`; a check named like a built-in one
        replaces it."""
        if not isinstance(name, str) or not name:
            raise ConfigurationError(
                f"a health check name must be a non-empty string, not {name!r}"
            )
        if not callable(check):
            raise ConfigurationError(f"health check {name!r} must be callable, not {check!r}")
        if timeout is not None and not timeout > 0:
            raise ConfigurationError(f"health check {name!r}: timeout must be > 0, not {timeout!r}")
        if name in self._checks:
            raise DuplicateNameError(f"a health check named {name!r} is already registered")
        self._checks[name] = _Registered(check, timeout)

    def remove(self, name: str) -> None:
        """Unregister the check ``name`` (no error if there is none); either check of a
        watched processor removes the watch and both its checks."""
        self._checks.pop(name, None)
        self._watched_queues.pop(name, None)
        for watch_name, watch in list(self._watches.items()):
            if name in watch.check_names:
                del self._watches[watch_name]
                for check_name in watch.check_names:
                    self._checks.pop(check_name, None)

    def names(self) -> list[str]:
        """The names of the checks the next run will have, sorted."""
        return sorted({n for n, _ in self._all_checks()})

    @property
    def watches(self) -> Mapping[str, ProcessorWatch]:
        """The processors watched by :meth:`watch_processor`, by name."""
        return dict(self._watches)

    def watch_processor(
        self,
        source: Pipeline | ProcessingStateStore,
        name: str,
        *,
        cadence: float,
        items: ItemsSource | None = None,
        job: str | None = None,
        grace: float | None = None,
        stuck_threshold: float | None = None,
        clock: Clock | None = None,
    ) -> ProcessorWatch:
        """Watch processor ``name``: adds the checks ``processor:<name>`` (lag) and
        ``processor:<name>:stuck`` (the oldest unprocessed item).

        ``source`` is the :class:`~freshkeep.processing.Pipeline` that runs it (its state
        store, the processor's ``items()`` and its last run are used) or the processor's
        :class:`~freshkeep.processing.ProcessingStateStore` (then give ``items``: a callable
        returning the current :class:`~freshkeep.processing.Item` s). ``cadence`` is the
        seconds between its scheduled runs; ``job`` names what runs it (default ``name``) in
        the warning. ``grace`` (default 2 x cadence) and ``stuck_threshold`` (default 4 x
        grace) are overridden by ``FRESHKEEP_HEALTH_LAG_GRACE`` and
        ``FRESHKEEP_HEALTH_STUCK_THRESHOLD``. A pipeline is registered on the keeper
        (:meth:`freshkeep.Keeper.register`) unless it is already, so the metrics and the
        dashboard find it.
        """
        from freshkeep.health._processing import ProcessorWatch
        from freshkeep.processing import Pipeline

        pipeline = source if isinstance(source, Pipeline) else None
        watch = ProcessorWatch.create(
            self,
            source,
            name,
            cadence=cadence,
            items=items,
            job=job,
            grace=grace,
            stuck_threshold=stuck_threshold,
            clock=clock if clock is not None else pipeline.clock if pipeline else self.clock,
        )
        if name in self._watches:
            raise DuplicateNameError(f"processor {name!r} is already watched")
        for check_name in watch.check_names:
            if check_name in self._checks:
                raise DuplicateNameError(
                    f"a health check named {check_name!r} is already registered"
                )
        keeper = self.keeper
        if pipeline is not None and keeper is not None:
            if keeper.pipelines.get(pipeline.name) is not pipeline:
                keeper.register(pipeline)
        self._checks[watch.lag_name] = _Registered(watch.lag_check, None)
        self._checks[watch.stuck_name] = _Registered(watch.stuck_check, None)
        self._watches[name] = watch
        return watch

    def watch_jobs(self, queue: JobQueue, *, name: str = "jobs") -> None:
        """Add the check ``name`` of a job queue: ``warning`` while one of its jobs failed for
        good (every retry spent) less than ``FRESHKEEP_HEALTH_JOBS_FAILED_WINDOW`` seconds
        (default 3600) ago; ``ok`` with its counters otherwise. Failures are those seen by
        this process's workers. The queue is registered on the keeper
        (:meth:`freshkeep.Keeper.register`) unless it is already."""
        from freshkeep.health._builtin import jobs_check

        async def check() -> CheckResult:
            return await jobs_check(self, (name, queue))

        self.add(name, check)
        keeper = self.keeper
        if keeper is not None and isinstance(queue, Component):
            registered: object = keeper.jobs.get(queue.name)
            if registered is not queue:
                try:
                    keeper.register(queue)
                except BaseException:
                    self._checks.pop(name, None)
                    raise
        self._watched_queues[name] = queue

    # -- running ------------------------------------------------------------------------------

    async def run(self) -> HealthReport:
        """Run every check concurrently (each bounded by its timeout) and return the report;
        it is also kept as :attr:`last_report`. Concurrent callers share one run (probes
        arriving together do not scan items twice)."""
        task = self._inflight
        if task is None:
            task = self._inflight = asyncio.ensure_future(self._run())
            task.add_done_callback(self._run_done)
        return await asyncio.shield(task)

    async def report(self, max_age: float = 0.0) -> HealthReport:
        """:attr:`last_report` if it was made less than ``max_age`` seconds ago, else a new
        :meth:`run` (for endpoints probed often: ``max_age`` bounds how often checks run)."""
        last = self.last_report
        if last is not None and max_age > 0 and self.clock.monotonic() - self._last_mono < max_age:
            return last
        return await self.run()

    def _run_done(self, task: asyncio.Future[HealthReport]) -> None:
        if self._inflight is task:
            self._inflight = None
        if not task.cancelled():
            task.exception()  # retrieved: a caller that went away must not leave it unread

    async def _run(self) -> HealthReport:
        config = self.config
        token = RUN.set(object())
        try:
            checks = self._all_checks()
            results = await asyncio.gather(
                *(
                    self._run_one(name, check, timeout or config.check_timeout)
                    for name, (check, timeout) in checks
                )
            )
        finally:
            RUN.reset(token)
        report = HealthReport.from_checks(results, self.clock.time())
        self._last_mono = self.clock.monotonic()
        self.last_report = report
        self.runs += 1
        return report

    def _all_checks(self) -> list[tuple[str, tuple[Check, float | None]]]:
        merged: dict[str, tuple[Check, float | None]] = {}
        if self.builtins and self.keeper is not None:
            from freshkeep.health._builtin import builtin_checks

            for name, check in builtin_checks(self):
                merged[name] = (check, None)
        for name, reg in self._checks.items():
            merged[name] = (reg.check, reg.timeout)
        return list(merged.items())

    async def _run_one(self, name: str, check: Check, timeout: float) -> CheckResult:
        try:
            async with asyncio.timeout(timeout) as cm:
                outcome = check()
                if inspect.isawaitable(outcome):
                    outcome = await outcome
        except TimeoutError:
            if cm.expired():
                log.warning("health check %s timed out after %gs", name, timeout)
                return CheckResult(
                    name, Level.ERROR, f"check timed out after {timeout:g}s", {"timeout": timeout}
                )
            return _failed(name, TimeoutError("timed out"))
        except Exception as exc:
            return _failed(name, exc)
        try:
            return coerce(name, outcome)
        except (TypeError, ValueError) as exc:
            return _failed(name, exc)


def _failed(name: str, exc: BaseException) -> CheckResult:
    log.warning("health check %s failed: %s: %s", name, type(exc).__name__, exc, exc_info=exc)
    return CheckResult(
        name,
        Level.ERROR,
        f"check failed: {type(exc).__name__}: {exc}",
        {"exception": type(exc).__name__},
    )


def coerce(name: str, outcome: object) -> CheckResult:
    """``outcome`` of the check ``name`` (see :data:`CheckOutcome`) as a :class:`CheckResult`
    named ``name``; raises ``TypeError`` for anything else."""
    if isinstance(outcome, CheckResult):
        if outcome.name == name:
            return outcome
        return CheckResult(name, outcome.level, outcome.detail, outcome.data)
    if isinstance(outcome, Level):
        return CheckResult(name, outcome)
    if isinstance(outcome, tuple) and len(outcome) in (2, 3):
        level, detail = Level.parse(outcome[0]), outcome[1]
        data = outcome[2] if len(outcome) == 3 else {}
        if isinstance(detail, str) and isinstance(data, Mapping):
            return CheckResult(name, level, detail, dict(data))
    raise TypeError(
        f"returned {type(outcome).__name__}; a check returns a CheckResult, a Level, "
        "(level, detail) or (level, detail, data)"
    )


def worst(results: Iterable[CheckResult]) -> Level:
    """The most severe level among ``results`` (``ok`` for none)."""
    return max((r.level for r in results), key=lambda lv: lv.severity, default=Level.OK)
