"""The runner: scan → precheck → hash → process → mark, per processor, under its lock."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import ClassVar

from freshkeep.core import tracing
from freshkeep.core.backoff import backoff
from freshkeep.core.clock import SYSTEM_CLOCK, Clock
from freshkeep.core.component import Component, Kind
from freshkeep.exceptions import DuplicateNameError, ProcessorBusy, UnknownProcessorError
from freshkeep.processing._history import RunBy, RunHistory, RunRecord
from freshkeep.processing._lock import LocalLocks, Locks, hold
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

_COUNTS = ("scanned", "processed", "failed", "skipped", "unchanged", "deferred")
"""The counts of a run set on its span."""

log = logging.getLogger("freshkeep.processing")

Hasher = Callable[[Path], Awaitable[str]]
"""Returns the hex SHA-256 (or any content digest) of a file."""

Progress = Callable[[RunStats], None]
"""Called with the stats so far, every ``progress_every`` items and at the end of a run."""

CHUNK = 1 << 20
THREAD_THRESHOLD = 256 * 1024
"""Files at least this big are hashed in a thread, not on the event loop."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


async def sha256_file(path: Path) -> str:
    """The hex SHA-256 of ``path``, read in 1 MiB chunks; big files in a thread."""
    try:
        big = path.stat().st_size >= THREAD_THRESHOLD
    except OSError:
        big = False
    return await asyncio.to_thread(_sha256, path) if big else _sha256(path)


class Pipeline(Component):
    """Processors, their state and locks: :meth:`run` brings one processor up to date.

    - ``state``: a :class:`~freshkeep.processing.ProcessingStateStore` (default: in memory;
      :class:`~freshkeep.processing.sql.SQLProcessingState` for a database).
    - ``locks``: :class:`LocalLocks` (default) or :class:`PostgresLocks` (across instances).
    - ``retry_backoff`` / ``max_retry_backoff``: seconds before a failed item is retried,
      doubling per consecutive failure (a changed file is retried at once).
    - ``racy_window``: a file modified less than this many seconds before it was hashed is
      hashed again next run, since a write within the file system's timestamp granularity
      would not change its mtime (git's "racily clean" problem). ``0`` trusts every mtime.
    - ``batch_size``: states written per transaction.
    - ``history``: a :class:`~freshkeep.processing.RunHistory` where runs started by someone
      (``run(name, by=RunBy(...))``: an admin route, ``freshkeep process``) are recorded.
    - ``name``: its name among the pipelines registered on a keeper
      (:meth:`freshkeep.Keeper.register`).
    """

    kind: ClassVar[Kind] = "pipeline"

    def __init__(
        self,
        state: ProcessingStateStore | None = None,
        *,
        name: str = "pipeline",
        locks: Locks | None = None,
        clock: Clock = SYSTEM_CLOCK,
        hasher: Hasher = sha256_file,
        retry_backoff: float = 60.0,
        max_retry_backoff: float = 3600.0,
        racy_window: float = 2.0,
        batch_size: int = 500,
        progress_every: int = 500,
        history: RunHistory | None = None,
    ) -> None:
        self.name = name
        self.history = history
        self.state: ProcessingStateStore = state if state is not None else MemoryProcessingState()
        self.locks: Locks = locks if locks is not None else LocalLocks()
        self.clock = clock
        self.hasher = hasher
        self.retry_backoff = retry_backoff
        self.max_retry_backoff = max_retry_backoff
        self.racy_window = racy_window
        self.batch_size = max(1, batch_size)
        self.progress_every = max(1, progress_every)
        self._processors: dict[str, Processor] = {}
        self.last_stats: dict[str, RunStats] = {}
        self.running: set[str] = set()

    # -- registry ------------------------------------------------------------------------

    def register(self, processor: Processor) -> Processor:
        """Add ``processor``; its name must be new."""
        if processor.name in self._processors:
            raise DuplicateNameError(f"a processor named {processor.name!r} is registered")
        self._processors[processor.name] = processor
        return processor

    def get(self, name: str) -> Processor:
        """The processor ``name``; raises :class:`~freshkeep.exceptions.UnknownProcessorError`."""
        try:
            return self._processors[name]
        except KeyError:
            known = ", ".join(sorted(self._processors)) or "none"
            raise UnknownProcessorError(f"no processor named {name!r} (known: {known})") from None

    def names(self) -> list[str]:
        """The names of the registered processors, sorted."""
        return sorted(self._processors)

    def snapshot(self) -> PipelineSnapshot:
        """Its processors, those running and the figures of their last runs."""
        return PipelineSnapshot(
            name=self.name,
            processors=tuple(self._processors),
            running=tuple(n for n in self._processors if n in self.running),
            last_runs=dict(self.last_stats),
        )

    # -- running -------------------------------------------------------------------------

    async def run(
        self, name: str, *, progress: Progress | None = None, by: RunBy | None = None
    ) -> RunStats:
        """Bring processor ``name`` up to date and return the run's stats.

        Raises :class:`~freshkeep.exceptions.UnknownProcessorError`, and
        :class:`~freshkeep.exceptions.ProcessorBusy` when it is running already (here, or in
        another instance with :class:`PostgresLocks`). An item's failure is recorded on that
        item and the run goes on; only a failure to list items or to read/write the state
        store fails the run.

        ``by``: who started it. With a ``history``, the run is recorded there (refused as
        busy, failed or done); a failure to record it is logged, never raised.
        """
        processor = self.get(name)
        started = self.clock.time()
        stats = RunStats(name, started_at=started)
        try:
            async with hold(self.locks, f"processor:{name}"):
                self.running.add(name)
                try:
                    await self._run_traced(processor, progress, stats)
                finally:
                    self.running.discard(name)
        except ProcessorBusy:
            await self._record(by, name, started, None, busy=True)
            raise
        except Exception as exc:
            await self._record(by, name, started, stats, error=exc)
            raise
        self.last_stats[name] = stats
        await self._record(by, name, started, stats)
        return stats

    async def _record(
        self,
        by: RunBy | None,
        name: str,
        started: float,
        stats: RunStats | None,
        *,
        error: BaseException | None = None,
        busy: bool = False,
    ) -> None:
        if by is None or self.history is None:
            return
        record = RunRecord.of(
            self.name,
            name,
            by,
            started_at=started,
            finished_at=self.clock.time(),
            stats=stats,
            error=error,
            busy=busy,
        )
        try:
            await self.history.record(record)
        except Exception:
            log.exception("could not record the run of processor %s by %s", name, record.who)

    async def _run_traced(
        self, processor: Processor, progress: Progress | None, stats: RunStats
    ) -> None:
        attributes = {"freshkeep.processor": processor.name}
        with tracing.span("freshkeep.processor.run", attributes) as span:
            try:
                await self._run(processor, progress, stats)
            finally:
                for count in _COUNTS:
                    span.set_attribute(f"freshkeep.processor.{count}", getattr(stats, count))

    async def _run(self, processor: Processor, progress: Progress | None, stats: RunStats) -> None:
        started = time.perf_counter()
        now = stats.started_at
        known = await self.state.load(processor.name)
        pending: list[ItemState] = []
        try:
            for item in processor.items():
                stats.scanned += 1
                mark = await self._one(processor, item, known.get(item.key), now, stats)
                if mark is not None:
                    pending.append(mark)
                    if len(pending) >= self.batch_size:
                        await self.state.save(pending)
                        pending = []
                if progress is not None and stats.scanned % self.progress_every == 0:
                    progress(stats)
        finally:
            if pending:
                await self.state.save(pending)
            stats.duration = time.perf_counter() - started
        if progress is not None:
            progress(stats)
        log.info(
            "processor %s: scanned %d, skipped %d, unchanged %d, processed %d, failed %d in %.3fs",
            processor.name,
            stats.scanned,
            stats.skipped,
            stats.unchanged,
            stats.processed,
            stats.failed,
            stats.duration,
        )

    async def _one(
        self, processor: Processor, item: Item, prev: ItemState | None, now: float, stats: RunStats
    ) -> ItemState | None:
        same_stat = prev is not None and (prev.mtime_ns, prev.size) == (item.mtime_ns, item.size)
        if prev is not None and same_stat:
            if not prev.failed:
                stats.skipped += 1
                return None
            if prev.retry_at is not None and now < prev.retry_at:
                stats.deferred += 1
                return None
        try:
            digest = await self.hasher(item.path)
        except FileNotFoundError:  # removed since it was listed: nothing to do
            stats.scanned -= 1
            return None
        except OSError as exc:
            return self._failure(processor.name, item, prev, item.mtime_ns, None, exc, now, stats)
        stats.hashed += 1
        # A file written within the racy window may change again without changing its
        # mtime: record an mtime that never matches, so the next run hashes it again.
        racy = time.time_ns() - item.mtime_ns < self.racy_window * 1e9
        mtime = -1 if racy else item.mtime_ns
        if prev is not None and not prev.failed and prev.content_hash == digest:
            stats.unchanged += 1
            if (prev.mtime_ns, prev.size) == (mtime, item.size):
                return None
            return _replace(prev, mtime_ns=mtime, size=item.size)
        ctx = ProcessContext(processor.name, prev, digest, now)
        try:
            attributes = {"freshkeep.processor": processor.name, "freshkeep.item": item.key}
            with tracing.span("freshkeep.processor.item", attributes):
                outcome = await processor.process(item, ctx)
            if not isinstance(outcome, Outcome):
                raise TypeError(f"process() returned {type(outcome).__name__}, not an Outcome")
        except Exception as exc:
            return self._failure(processor.name, item, prev, mtime, digest, exc, now, stats)
        stats.processed += 1
        return ItemState(
            processor.name,
            item.key,
            mtime,
            item.size,
            digest,
            processed_at=now,
            counts={str(k): int(v) for k, v in outcome.counts.items()},
        )

    def _failure(
        self,
        name: str,
        item: Item,
        prev: ItemState | None,
        mtime: int,
        digest: str | None,
        exc: Exception,
        now: float,
        stats: RunStats,
    ) -> ItemState:
        stats.failed += 1
        error = f"{type(exc).__name__}: {exc}"
        if len(stats.errors) < 100:
            stats.errors[item.key] = error
        log.warning("processor %s failed on %s: %s", name, item.key, error)
        attempts = (prev.attempts if prev is not None and prev.failed else 0) + 1
        delay = backoff(attempts, self.retry_backoff, self.max_retry_backoff)
        return ItemState(
            name,
            item.key,
            mtime,
            item.size,
            digest,
            processed_at=prev.processed_at if prev is not None else None,
            counts=prev.counts if prev is not None else {},
            last_error=error[:2000],
            attempts=attempts,
            retry_at=now + delay,
        )

    async def forget(self, name: str, keys: Iterable[str]) -> None:
        """Forget the state of ``keys`` of processor ``name`` (they are processed again)."""
        await self.state.delete(self.get(name).name, keys)


def _replace(state: ItemState, *, mtime_ns: int, size: int) -> ItemState:
    from dataclasses import replace

    return replace(state, mtime_ns=mtime_ns, size=size)
