"""How often each processor runs: its own interval, else one shared default.

:class:`ProcessorIntervals` holds the default and the processors that set their own;
:func:`schedule_processors` adds one :class:`~freshkeep.scheduler.Scheduler` job per processor
of a pipeline at its interval. Give the same interval to
:meth:`~freshkeep.health.Health.watch_processor` as ``cadence``, so that each processor's
lag grace (2 x cadence by default) follows its own schedule.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from freshkeep.exceptions import ConfigurationError
from freshkeep.processing._pipeline import Pipeline

if TYPE_CHECKING:
    from freshkeep.scheduler import Scheduler


def _seconds(what: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"{what} must be a number of seconds, not {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ConfigurationError(f"{what} must be a finite number of seconds >= 0, not {value!r}")
    return float(value)


@dataclass(frozen=True)
class ProcessorIntervals:
    """Seconds between the scheduled runs of each processor: ``own[name]`` for the processors
    that set their own, ``default`` for every other one. ``0`` means not scheduled.

    ``ProcessorIntervals(60, {"usage": 300})``: ``usage`` every 5 minutes, the others every
    minute. A value that is not a finite number >= 0 raises
    :class:`~freshkeep.exceptions.ConfigurationError`.
    """

    default: float
    own: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "default", _seconds("the default interval", self.default))
        own = {}
        for name, value in dict(self.own).items():
            if not isinstance(name, str) or not name:
                raise ConfigurationError(f"a processor interval needs a name, not {name!r}")
            own[name] = _seconds(f"the interval of processor {name!r}", value)
        object.__setattr__(self, "own", MappingProxyType(own))

    def of(self, name: str) -> float:
        """The interval of processor ``name`` (``0``: not scheduled)."""
        return self.own.get(name, self.default)

    def scheduled(self, names: Iterable[str]) -> dict[str, float]:
        """The interval of each of ``names`` that is scheduled (interval > 0)."""
        return {n: every for n in names if (every := self.of(n)) > 0}

    def check(self, names: Iterable[str]) -> None:
        """Raise :class:`~freshkeep.exceptions.ConfigurationError` when an interval is set for
        a processor that is not among ``names`` (a typo would silently use the default)."""
        known = set(names)
        unknown = sorted(set(self.own) - known)
        if unknown:
            raise ConfigurationError(
                f"an interval is set for unknown processor(s) {', '.join(map(repr, unknown))} "
                f"(known: {', '.join(sorted(known)) or 'none'})"
            )


def schedule_processors(
    scheduler: Scheduler,
    pipeline: Pipeline,
    intervals: ProcessorIntervals | float,
    *,
    names: Iterable[str] | None = None,
    delay: bool = True,
    **options: Any,
) -> dict[str, float]:
    """Add a job named after each processor of ``pipeline`` (or of ``names``) that runs
    ``pipeline.run(name)`` every ``intervals.of(name)`` seconds; a processor whose interval is
    ``0`` is not scheduled. The first run is one interval from now (``delay=False``: at the
    scheduler's next tick). ``options`` go to :meth:`Scheduler.add
    <freshkeep.scheduler.Scheduler.add>` (``jitter``, ``max_runtime``, ``misfire_grace``...).

    An interval set for a processor the pipeline does not have raises
    :class:`~freshkeep.exceptions.ConfigurationError`. Returns the interval of each job added.
    """
    if not isinstance(intervals, ProcessorIntervals):
        intervals = ProcessorIntervals(intervals)
    intervals.check(pipeline.names())
    chosen = pipeline.names() if names is None else [pipeline.get(n).name for n in names]
    added = intervals.scheduled(chosen)
    for name, every in added.items():
        scheduler.add(
            name, _runner(pipeline, name), every, delay=every if delay else 0.0, **options
        )
    return added


def _runner(pipeline: Pipeline, name: str) -> Any:
    async def run() -> None:
        await pipeline.run(name)

    return run


__all__ = ["ProcessorIntervals", "schedule_processors"]
