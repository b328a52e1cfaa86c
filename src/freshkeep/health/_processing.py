"""Watching a file processor: lag behind its items, and the oldest item left unprocessed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from freshkeep.core.clock import Clock
from freshkeep.exceptions import ConfigurationError
from freshkeep.health._config import env_name
from freshkeep.health._format import age_text
from freshkeep.health._model import CheckResult, Level
from freshkeep.health._registry import RUN
from freshkeep.processing import Item, ItemState, Pipeline, ProcessingStateStore

if TYPE_CHECKING:
    from freshkeep.health._registry import Health

ItemsSource = Callable[[], Iterable[Item]]
"""Returns the current items of a processor (called in a worker thread: it may list files)."""


@dataclass(frozen=True, slots=True)
class Backlog:
    """Where a processor stands against its items (see :func:`assess`).

    An item is *done* when its state records the content it has now (same ``mtime_ns`` and
    ``size``) without a failure, or was processed at or after its modification time. An item
    the processor has not looked at since it changed is *unseen*; one whose current content
    failed is *failing*. Both are *pending*.
    """

    items: int = 0
    done: int = 0
    unseen: int = 0
    failing: int = 0
    newest_mtime: float | None = None
    """Wall-clock modification time of the newest item."""
    last_processed_at: float | None = None
    """The newest ``processed_at`` of the processor's states (or its last run, if later)."""
    waiting_since: float | None = None
    """The oldest modification time among unseen items changed after
    :attr:`last_processed_at`: work the processor has not caught up with since."""
    waiting: int = 0
    """Unseen items changed after :attr:`last_processed_at`."""
    oldest_pending: str | None = None
    """The key of the pending item modified longest ago."""
    oldest_pending_mtime: float | None = None
    oldest_pending_error: str | None = None
    """The last error of :attr:`oldest_pending`, if it failed."""
    ever_processed: bool = False

    @property
    def pending(self) -> int:
        """Items not done (unseen or failing)."""
        return self.unseen + self.failing


def _done_or(item: Item, state: ItemState | None) -> str:
    if state is None:
        return "unseen"
    same = (state.mtime_ns, state.size) == (item.mtime_ns, item.size)
    if state.failed:
        if same or (state.retry_at is not None and state.mtime_ns == -1):
            return "failing"
        return "unseen"
    if same:
        return "done"
    if state.processed_at is not None and state.processed_at * 1e9 >= item.mtime_ns:
        return "done"  # processed after its last change (e.g. a racily clean file)
    return "unseen"


def assess(
    items: Iterable[Item], states: Mapping[str, ItemState], last_run: float | None = None
) -> Backlog:
    """The :class:`Backlog` of a processor with ``states`` over ``items``; ``last_run`` is the
    wall-clock start of its last run, if known."""
    processed = [s.processed_at for s in states.values() if s.processed_at is not None]
    last = max(processed, default=None)
    ever = last is not None
    if last_run is not None and (last is None or last_run > last) and ever:
        last = last_run
    counts = {"done": 0, "unseen": 0, "failing": 0}
    n = 0
    newest: int | None = None
    waiting_since: int | None = None
    waiting = 0
    oldest: tuple[int, str] | None = None
    for item in items:
        n += 1
        if newest is None or item.mtime_ns > newest:
            newest = item.mtime_ns
        state = states.get(item.key)
        kind = _done_or(item, state)
        counts[kind] += 1
        if kind == "done":
            continue
        if oldest is None or (item.mtime_ns, item.key) < oldest:
            oldest = (item.mtime_ns, item.key)
        if kind == "unseen" and (last is None or item.mtime_ns > last * 1e9):
            waiting += 1
            if waiting_since is None or item.mtime_ns < waiting_since:
                waiting_since = item.mtime_ns
    oldest_state = states.get(oldest[1]) if oldest is not None else None
    return Backlog(
        items=n,
        done=counts["done"],
        unseen=counts["unseen"],
        failing=counts["failing"],
        newest_mtime=None if newest is None else newest / 1e9,
        last_processed_at=last,
        waiting_since=None if waiting_since is None else waiting_since / 1e9,
        waiting=waiting,
        oldest_pending=None if oldest is None else oldest[1],
        oldest_pending_mtime=None if oldest is None else oldest[0] / 1e9,
        oldest_pending_error=oldest_state.last_error if oldest_state is not None else None,
        ever_processed=ever,
    )


@dataclass(eq=False)
class ProcessorWatch:
    """The lag and stuck-item checks of one processor (made by
    :meth:`freshkeep.health.Health.watch_processor`)."""

    health: Health
    name: str
    state: ProcessingStateStore
    items: ItemsSource
    cadence: float
    job: str
    clock: Clock
    grace: float | None = None
    stuck_threshold: float | None = None
    pipeline: Pipeline | None = None
    _cache: tuple[object, asyncio.Task[Backlog]] | None = field(default=None, repr=False)

    @classmethod
    def create(
        cls,
        health: Health,
        source: Pipeline | ProcessingStateStore,
        name: str,
        *,
        cadence: float,
        items: ItemsSource | None,
        job: str | None,
        grace: float | None,
        stuck_threshold: float | None,
        clock: Clock,
    ) -> ProcessorWatch:
        """Validate the arguments of :meth:`~freshkeep.health.Health.watch_processor`."""
        for what, value in (
            ("cadence", cadence),
            ("grace", grace),
            ("stuck_threshold", stuck_threshold),
        ):
            if value is None and what != "cadence":
                continue
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                raise ConfigurationError(
                    f"watch of processor {name!r}: {what} must be a number >= 0, not {value!r}"
                )
        state: ProcessingStateStore
        source_items: ItemsSource
        pipeline = source if isinstance(source, Pipeline) else None
        if isinstance(source, Pipeline):
            processor = source.get(name)
            state = source.state
            source_items = items if items is not None else processor.items
        else:
            if items is None:
                raise ConfigurationError(
                    f"watch of processor {name!r}: give items= with a state store (or pass "
                    "the Pipeline)"
                )
            state, source_items = source, items
        return cls(
            health,
            name,
            state,
            source_items,
            float(cadence),
            job or name,
            clock,
            grace,
            stuck_threshold,
            pipeline,
        )

    @property
    def lag_name(self) -> str:
        """The name of the lag check."""
        return f"processor:{self.name}"

    @property
    def stuck_name(self) -> str:
        """The name of the stuck-item check."""
        return f"processor:{self.name}:stuck"

    @property
    def check_names(self) -> tuple[str, str]:
        """Both check names."""
        return (self.lag_name, self.stuck_name)

    def effective_grace(self) -> float:
        """``FRESHKEEP_HEALTH_LAG_GRACE``, else ``grace``, else 2 x cadence."""
        env = self.health.config.lag_grace
        if env is not None:
            return env
        return self.grace if self.grace is not None else 2 * self.cadence

    def effective_stuck_threshold(self) -> float:
        """``FRESHKEEP_HEALTH_STUCK_THRESHOLD``, else ``stuck_threshold``, else 4 x grace."""
        env = self.health.config.stuck_threshold
        if env is not None:
            return env
        if self.stuck_threshold is not None:
            return self.stuck_threshold
        return 4 * self.effective_grace()

    async def backlog(self) -> Backlog:
        """Scan the items (in a thread) and load the states; shared by both checks of a run."""
        token = RUN.get()
        cached = self._cache
        if token is not None and cached is not None and cached[0] is token:
            return await asyncio.shield(cached[1])
        task = asyncio.ensure_future(self._backlog())
        if token is not None:
            self._cache = (token, task)
        return await asyncio.shield(task)

    async def _backlog(self) -> Backlog:
        items = await asyncio.to_thread(lambda: list(self.items()))
        states = await self.state.load(self.name)
        last_run = None
        if self.pipeline is not None and (
            stats := self.pipeline.snapshot().last_runs.get(self.name)
        ):
            last_run = stats.started_at
        return assess(items, states, last_run)

    def _data(self, b: Backlog, now: float) -> dict[str, Any]:
        return {
            "processor": self.name,
            "job": self.job,
            "cadence": self.cadence,
            "items": b.items,
            "pending": b.pending,
            "failing": b.failing,
            "newest_item_age": None if b.newest_mtime is None else max(0.0, now - b.newest_mtime),
            "last_processed_at": b.last_processed_at,
            "last_processed_age": (
                None if b.last_processed_at is None else max(0.0, now - b.last_processed_at)
            ),
        }

    async def lag_check(self) -> CheckResult:
        """``warning`` when changed items wait longer than the grace for this processor, or
        items exist and none was ever processed; ``ok`` otherwise (no items: cold start)."""
        b = await self.backlog()
        now = self.clock.time()
        grace = self.effective_grace()
        data = self._data(b, now) | {"grace": grace, "lag": 0.0, "waiting": b.waiting}
        name, job = self.name, self.job
        if b.items == 0:
            return CheckResult(self.lag_name, Level.OK, f"processor {name!r}: no items yet", data)
        if not b.ever_processed:
            data["lag"] = None if b.newest_mtime is None else max(0.0, now - b.newest_mtime)
            return CheckResult(
                self.lag_name,
                Level.WARNING,
                f"processor {name!r}: {b.items} item(s), none ever processed; check that job "
                f"{job!r} runs (every {age_text(self.cadence)}) and its log",
                data,
            )
        lag = 0.0 if b.waiting_since is None else max(0.0, now - b.waiting_since)
        data["lag"] = lag
        last = age_text(now - b.last_processed_at) if b.last_processed_at is not None else "never"
        if lag > grace:
            return CheckResult(
                self.lag_name,
                Level.WARNING,
                f"processor {name!r} is {age_text(lag)} behind: {b.waiting} item(s) changed "
                f"since its last processing {last} ago (grace {age_text(grace)}); check that "
                f"job {job!r} runs (every {age_text(self.cadence)}) and its log",
                data,
            )
        if b.waiting:
            detail = (
                f"processor {name!r}: {b.waiting} item(s) waiting {age_text(lag)} "
                f"(grace {age_text(grace)})"
            )
        else:
            detail = (
                f"processor {name!r}: up to date ({b.items} item(s), last processing {last} ago)"
            )
        return CheckResult(self.lag_name, Level.OK, detail, data)

    async def stuck_check(self) -> CheckResult:
        """``info`` naming the oldest pending item when it is older than the stuck
        threshold (first in, first out: it should have been processed before newer ones)."""
        b = await self.backlog()
        now = self.clock.time()
        threshold = self.effective_stuck_threshold()
        data = self._data(b, now) | {
            "threshold": threshold,
            "item": b.oldest_pending,
            "age": None,
            "error": b.oldest_pending_error,
        }
        if b.oldest_pending is None or b.oldest_pending_mtime is None:
            return CheckResult(
                self.stuck_name, Level.OK, f"processor {self.name!r}: no item pending", data
            )
        age = max(0.0, now - b.oldest_pending_mtime)
        data["age"] = age
        if age <= threshold:
            return CheckResult(
                self.stuck_name,
                Level.OK,
                f"processor {self.name!r}: oldest pending item {b.oldest_pending!r} is "
                f"{age_text(age)} old (threshold {age_text(threshold)})",
                data,
            )
        why = f"; it fails: {b.oldest_pending_error}" if b.oldest_pending_error else ""
        return CheckResult(
            self.stuck_name,
            Level.INFO,
            f"processor {self.name!r}: item {b.oldest_pending!r} unprocessed for "
            f"{age_text(age)} (threshold {age_text(threshold)}, "
            f"{env_name('stuck_threshold')}){why}",
            data,
        )
