"""The record of runs started by someone: who, which processor, when, the outcome, the counts.

A scheduled run is routine; a run started by hand (an admin route, ``freshkeep process``) is an
operator's act, and :class:`RunHistory` keeps one :class:`RunRecord` of each for ``keep``
seconds. A :class:`~freshkeep.processing.Pipeline` given ``history=`` writes it when a run is
started with ``by=RunBy(...)``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from freshkeep.core.clock import SYSTEM_CLOCK, Clock
from freshkeep.exceptions import ConfigurationError
from freshkeep.processing._types import RunStats

RunOutcome = Literal["ok", "items_failed", "busy", "error"]
"""How a run went: ``ok`` (no item failed), ``items_failed`` (it ran; some items failed),
``busy`` (refused: the processor was running already), ``error`` (the run itself failed:
listing its items or its state store)."""

OUTCOMES: tuple[str, ...] = ("ok", "items_failed", "busy", "error")

DEFAULT_KEEP = 30 * 86400.0
"""Seconds a run record is kept by default (30 days)."""

MAX_NAME = 255
"""The longest principal or operator name recorded."""


@dataclass(frozen=True, slots=True)
class RunBy:
    """Who started a run, and through what.

    ``principal`` is the identity that was authenticated (the admin token's principal, the OS
    user running ``freshkeep process``); ``operator`` a name the caller gave for themselves
    (``X-Freshkeep-Operator``, ``--operator``), if any; ``via`` the way in (``http``, ``cli``,
    ``api``)."""

    principal: str
    via: str = "api"
    operator: str | None = None

    def __post_init__(self) -> None:
        for what, value in (("principal", self.principal), ("operator", self.operator)):
            if value is None and what == "operator":
                continue
            if not isinstance(value, str) or not value.strip() or len(value) > MAX_NAME:
                raise ConfigurationError(
                    f"a run's {what} must be a non-empty name of at most {MAX_NAME} "
                    f"characters, not {value!r}"
                )
            if not value.isprintable():
                raise ConfigurationError(f"a run's {what} must be printable, not {value!r}")
        if not self.via or len(self.via) > 16:
            raise ConfigurationError(f"via must be a short name, not {self.via!r}")


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One run started by someone (see :class:`RunHistory`). Counts are the run's
    :class:`~freshkeep.processing.RunStats` (zero for a ``busy`` run, which did nothing)."""

    pipeline: str
    processor: str
    principal: str
    via: str
    operator: str | None
    outcome: str
    started_at: float
    finished_at: float
    scanned: int = 0
    skipped: int = 0
    unchanged: int = 0
    deferred: int = 0
    processed: int = 0
    failed: int = 0
    error: str | None = None
    id: int | None = None
    """Its number in the history (``None`` until it is recorded)."""

    @property
    def who(self) -> str:
        """The operator when one was named, else the principal."""
        return self.operator or self.principal

    @property
    def duration(self) -> float:
        """Seconds from its start to its end."""
        return max(0.0, self.finished_at - self.started_at)

    def as_dict(self) -> dict[str, Any]:
        """The record as JSON-ready data (with ``who`` and ``duration``)."""
        return asdict(self) | {"who": self.who, "duration": self.duration}

    @classmethod
    def of(
        cls,
        pipeline: str,
        processor: str,
        by: RunBy,
        *,
        started_at: float,
        finished_at: float,
        stats: RunStats | None = None,
        error: BaseException | None = None,
        busy: bool = False,
    ) -> RunRecord:
        """The record of a run by ``by``: its outcome follows from ``busy``, ``error`` and
        ``stats.failed``."""
        outcome: RunOutcome
        if busy:
            outcome = "busy"
        elif error is not None:
            outcome = "error"
        elif stats is not None and stats.failed:
            outcome = "items_failed"
        else:
            outcome = "ok"
        counts: dict[str, int] = {}
        if stats is not None and not busy:
            counts = {
                k: getattr(stats, k)
                for k in ("scanned", "skipped", "unchanged", "deferred", "processed", "failed")
            }
        text = None if error is None else f"{type(error).__name__}: {error}"[:2000]
        return cls(
            pipeline,
            processor,
            by.principal,
            by.via,
            by.operator,
            outcome,
            started_at,
            finished_at,
            error=text,
            **counts,
        )


def check_keep(keep: float) -> float:
    """``keep`` if it is a usable retention (a finite number of seconds > 0)."""
    if isinstance(keep, bool) or not isinstance(keep, int | float):
        raise ConfigurationError(f"keep must be a number of seconds, not {keep!r}")
    if not math.isfinite(keep) or keep <= 0:
        raise ConfigurationError(f"keep must be a finite number of seconds > 0, not {keep!r}")
    return float(keep)


class RunHistory(ABC):
    """Where :class:`RunRecord` s are kept, for ``keep`` seconds: :meth:`record` deletes the
    records that ended more than ``keep`` seconds before the new one.

    :class:`MemoryRunHistory` (this process) and
    :class:`freshkeep.processing.sql.SQLRunHistory` (the ``freshkeep_processing_runs`` table).
    """

    keep: float

    @abstractmethod
    async def record(self, record: RunRecord) -> RunRecord:
        """Store ``record``; drop the records older than ``keep``; return it with its ``id``."""

    @abstractmethod
    async def recent(self, processor: str | None = None, *, limit: int = 50) -> list[RunRecord]:
        """The newest records first, at most ``limit``; of ``processor`` only, if given."""

    @abstractmethod
    async def prune(self, now: float | None = None) -> int:
        """Delete the records that ended more than ``keep`` seconds before ``now`` (default:
        the clock's time); return how many."""


class MemoryRunHistory(RunHistory):
    """A :class:`RunHistory` in a list (tests, and one process without a database)."""

    def __init__(self, *, keep: float = DEFAULT_KEEP, clock: Clock = SYSTEM_CLOCK) -> None:
        self.keep = check_keep(keep)
        self.clock = clock
        self.records: list[RunRecord] = []
        self._next = 1

    async def record(self, record: RunRecord) -> RunRecord:
        """Append ``record`` (numbered), after dropping records older than ``keep``."""
        await self.prune(record.finished_at)
        stored = replace(record, id=self._next)
        self._next += 1
        self.records.append(stored)
        return stored

    async def recent(self, processor: str | None = None, *, limit: int = 50) -> list[RunRecord]:
        """The newest records first."""
        found = [r for r in self.records if processor is None or r.processor == processor]
        return newest_first(found)[: max(0, limit)]

    async def prune(self, now: float | None = None) -> int:
        """Drop records that ended more than ``keep`` seconds ago."""
        cutoff = (self.clock.time() if now is None else now) - self.keep
        before = len(self.records)
        self.records = [r for r in self.records if r.finished_at >= cutoff]
        return before - len(self.records)


def newest_first(records: Iterable[RunRecord]) -> list[RunRecord]:
    """``records`` sorted newest first (by start, then by id)."""
    return sorted(records, key=lambda r: (r.started_at, r.id or 0), reverse=True)


__all__ = [
    "DEFAULT_KEEP",
    "OUTCOMES",
    "MemoryRunHistory",
    "RunBy",
    "RunHistory",
    "RunOutcome",
    "RunRecord",
    "check_keep",
    "newest_first",
]
