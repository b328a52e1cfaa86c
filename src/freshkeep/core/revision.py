"""Sources, revisions and the process's view of them.

A *source* is a named thing that changes (``table:tasks``). Its *revision* is a comparable token:
an ``int`` counter for tables written through freshkeep's hooks, a ``str`` for watermarks of tables
other programs write. A source never written has revision ``0``.

:class:`RevisionTracker` holds this process's snapshot of revisions. Revisions reach it three ways:
pushed by the write hooks after a local commit (``local=True``: read-your-writes, a read after it
must rebuild), pushed by a bus from other processes, or read from the database by a probe. Every
change of the snapshot bumps ``epoch``, so a read whose entry was validated at the current epoch
needs no comparison at all: that is the hit path.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Collection, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from freshkeep.core.clock import SYSTEM_CLOCK, Clock, SystemClock
from freshkeep.exceptions import RevisionSourceError

if TYPE_CHECKING:
    from freshkeep.ports import RevisionSource  # the port sits above core

_EPOCHS = itertools.count(1)
"""Epochs are unique across trackers, so an entry validated by one keeper is never taken as
validated by another that shares its store."""

Revision = int | str
"""A source's revision: an ``int`` counter, or a ``str`` watermark."""


def is_newer(old: Revision | None, new: Revision) -> bool:
    """Whether ``new`` should replace ``old`` in a snapshot.

    Counters only move forward, so a lower counter (a probe that raced a push) is ignored.
    Watermarks are not ordered: any different value replaces the old one.
    """
    if old is None:
        return True
    if isinstance(old, int) and isinstance(new, int):
        return new > old
    return new != old


def is_older(old: Revision, new: Revision) -> bool:
    """Whether ``old`` is known to be strictly older than ``new`` (only counters are ordered)."""
    return isinstance(old, int) and isinstance(new, int) and old < new


class RevisionTracker:
    """This process's snapshot of source revisions, with its bounds.

    ``resync_interval`` bounds how long a snapshot is trusted without reading the database:
    a pushed revision that was lost is caught within that time.
    """

    __slots__ = (
        "_clock",
        "_inflight",
        "_source",
        "_timer",
        "epoch",
        "floor",
        "fresh_until",
        "probes",
        "resync_interval",
        "snapshot",
        "sources",
        "synced_mono",
        "timed",
    )

    def __init__(
        self,
        source: RevisionSource | None,
        *,
        resync_interval: float = 1.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._source = source
        self._clock = clock
        self._inflight: asyncio.Future[None] | None = None
        self.resync_interval = resync_interval
        self.snapshot: dict[str, Revision] = {}
        self.floor: dict[str, Revision] = {}
        self.sources: set[str] = set()
        self.epoch = next(_EPOCHS)
        self.fresh_until = float("-inf")
        self.probes = 0
        self.synced_mono = float("-inf")
        """When the last successful read of revisions started."""
        self._timer: Any = None
        self.timed = source is None or isinstance(clock, SystemClock) or hasattr(clock, "call_at")
        """Whether the end of the resync interval bumps ``epoch`` (a timer on the event loop,
        or the clock's ``call_at``). Without it, every read checks the clock itself."""

    @property
    def has_source(self) -> bool:
        """Whether revisions can be read from a database at all."""
        return self._source is not None

    def register(self, sources: Iterable[str]) -> None:
        """Add sources to those read by every resync."""
        new = set(sources) - self.sources
        if new:
            self.sources |= new
            self.fresh_until = float("-inf")  # their revisions are not known yet

    def add(self, sources: Iterable[str]) -> None:
        """Add sources to those read by every resync, without ending the interval: the
        caller reads them now (``resync(sources)``), e.g. the partition of a new key."""
        self.sources.update(sources)

    def current(self, sources: Iterable[str]) -> tuple[Revision, ...]:
        """The snapshot's revisions of ``sources``, in order."""
        snap = self.snapshot
        return tuple(snap.get(s, 0) for s in sources)

    def apply(self, revisions: Mapping[str, Revision], *, local: bool = False) -> bool:
        """Merge revisions into the snapshot; return whether anything changed.

        ``local=True`` marks revisions committed by this process: an entry older than them
        must be rebuilt before it is served, even under stale-while-revalidate.
        """
        changed = False
        snap = self.snapshot
        for source, rev in revisions.items():
            if is_newer(snap.get(source), rev):
                snap[source] = rev
                changed = True
            if local and is_newer(self.floor.get(source), rev):
                self.floor[source] = rev
                changed = True
        if changed:
            self.epoch = next(_EPOCHS)
        return changed

    def must_rebuild(self, sources: Iterable[str], built: Iterable[Revision]) -> bool:
        """Whether an entry built at ``built`` is older than a revision committed here."""
        floor = self.floor
        if not floor:
            return False
        for source, rev in zip(sources, built, strict=True):
            wanted = floor.get(source)
            if wanted is not None and is_older(rev, wanted):
                return True
        return False

    def confirmed_at(self) -> float:
        """Monotonic time as of which the snapshot is known to match the source."""
        if self._source is None:
            return self._clock.monotonic()  # revisions only move by publish: always current
        return self.synced_mono

    def _arm(self, deadline: float) -> None:
        """Bump ``epoch`` at ``deadline``, so the hit path notices the interval ended without
        reading the clock."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        call_at = getattr(self._clock, "call_at", None)
        if call_at is not None:
            self._timer = call_at(deadline, self._expire)
        elif isinstance(self._clock, SystemClock):
            delay = max(0.0, deadline - self._clock.monotonic())
            self._timer = asyncio.get_running_loop().call_later(delay, self._expire)

    def close(self) -> None:
        """Cancel the resync timer (the keeper is shutting down)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.fresh_until = float("-inf")

    def _expire(self) -> None:
        self._timer = None
        # A timer can fire a little before the deadline by the monotonic clock (uvloop keeps
        # time in whole milliseconds). End the interval now all the same: else a read in that
        # gap finds the snapshot fresh, re-stamps its entry with the new epoch, and no timer is
        # armed any more, so revisions would never be re-read.
        self.fresh_until = min(self.fresh_until, self._clock.monotonic())
        self.epoch = next(_EPOCHS)

    def invalidate(self) -> None:
        """Make every entry go through a full check on its next read (the hit path's shortcut
        is keyed by ``epoch``), e.g. when pushed revisions stop arriving."""
        self.epoch = next(_EPOCHS)

    async def resync(self, sources: Collection[str] | None = None) -> None:
        """Read revisions from the source; concurrent callers share one read.

        Without ``sources``, every registered source is read and the snapshot's interval restarts.
        """
        if self._source is None:
            self.fresh_until = float("inf")
            self.synced_mono = self._clock.monotonic()
            return
        if sources is None and self._inflight is not None:
            await asyncio.shield(self._inflight)
            return
        wanted = self.sources if sources is None else sources
        started = self._clock.monotonic()
        fut: asyncio.Future[None] | None = None
        if sources is None:
            fut = self._inflight = asyncio.get_running_loop().create_future()
        try:
            try:
                revisions = await self._source.read(wanted)
            except RevisionSourceError:
                raise
            except Exception as exc:
                raise RevisionSourceError(f"reading revisions failed: {exc!r}") from exc
            self.probes += 1
            self.synced_mono = max(self.synced_mono, started)
            self.apply(revisions)
            if sources is None:
                self.fresh_until = started + self.resync_interval
                self._arm(self.fresh_until)
            if fut is not None:
                fut.set_result(None)
        except BaseException as exc:
            if fut is not None:
                fut.set_exception(exc)
                fut.exception()  # retrieved: waiters re-raise it, nobody else must
            raise
        finally:
            if fut is not None:
                self._inflight = None
