"""Processed items: processors that derive things from files, once per content of each file.

A :class:`Processor` names the items it takes (files under a root matching a glob) and
processes one item at a time. A :class:`Pipeline` runs a processor: it streams the items,
skips those whose ``mtime_ns`` and ``size`` are unchanged without opening them, hashes the
others and skips unchanged content, processes the rest, and records per-(processor, item)
state in batches. Failures are recorded per item, with a doubling retry backoff. A
per-processor lock makes a second concurrent run fail with
:class:`~freshkeep.exceptions.ProcessorBusy` (:class:`PostgresLocks`: across instances).

:func:`schedule_processors` runs each processor of a pipeline at its own interval
(:class:`ProcessorIntervals`: a shared default, and the processors that set their own).

A run started by someone (``pipeline.run(name, by=RunBy(...))``) is recorded in the
pipeline's :class:`RunHistory`, if it has one.

The SQL state store is :class:`freshkeep.processing.sql.SQLProcessingState`, the SQL run
history :class:`freshkeep.processing.sql.SQLRunHistory` (extra ``sqlalchemy``); this package
itself imports no database driver.
"""

from __future__ import annotations

from freshkeep.processing._history import (
    MemoryRunHistory,
    RunBy,
    RunHistory,
    RunOutcome,
    RunRecord,
)
from freshkeep.processing._lock import LocalLocks, Locks, PostgresLocks, advisory_key, hold
from freshkeep.processing._pipeline import Hasher, Pipeline, Progress, sha256_file
from freshkeep.processing._schedule import ProcessorIntervals, schedule_processors
from freshkeep.processing._state import MemoryProcessingState, ProcessingStateStore
from freshkeep.processing._types import (
    Item,
    ItemState,
    Outcome,
    PipelineSnapshot,
    ProcessContext,
    Processor,
    RunStats,
)

__all__ = [
    "Hasher",
    "Item",
    "ItemState",
    "LocalLocks",
    "Locks",
    "MemoryProcessingState",
    "MemoryRunHistory",
    "Outcome",
    "Pipeline",
    "PipelineSnapshot",
    "PostgresLocks",
    "ProcessContext",
    "ProcessingStateStore",
    "Processor",
    "ProcessorIntervals",
    "Progress",
    "RunBy",
    "RunHistory",
    "RunOutcome",
    "RunRecord",
    "RunStats",
    "advisory_key",
    "hold",
    "schedule_processors",
    "sha256_file",
]
