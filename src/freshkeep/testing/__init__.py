"""Stand-ins for your own tests: a fake clock, and a keeper with in-memory revisions.

The conformance suites of the ports, for your own backends, are in
:mod:`freshkeep.testing.conformance` (it imports pytest; this module does not).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Collection, Mapping
from typing import Any

from freshkeep.core.revision import Revision
from freshkeep.ports import RevisionSource


class FakeClock:
    """A clock that moves only when told to; timers registered with :meth:`call_at` fire then.

    ``monotonic()`` starts at 0 and ``time()`` at ``wall``; :meth:`advance` moves both.
    """

    def __init__(self, wall: float = 1_700_000_000.0) -> None:
        self._now = 0.0
        self._wall = wall
        self._timers: list[tuple[float, int, _Timer]] = []
        self._seq = itertools.count()

    def monotonic(self) -> float:
        """The fake monotonic time."""
        return self._now

    def time(self) -> float:
        """The fake wall time."""
        return self._wall + self._now

    def call_at(self, when: float, callback: Callable[[], Any]) -> _Timer:
        """Call ``callback`` once the clock reaches ``when`` (on :meth:`advance`)."""
        timer = _Timer(callback)
        heapq.heappush(self._timers, (when, next(self._seq), timer))
        return timer

    def advance(self, seconds: float) -> None:
        """Move the clock forward and fire the timers that became due."""
        if seconds < 0:
            raise ValueError("a clock does not go back")
        self._now += seconds
        while self._timers and self._timers[0][0] <= self._now:
            _, _, timer = heapq.heappop(self._timers)
            if not timer.cancelled:
                timer.callback()


class _Timer:
    __slots__ = ("callback", "cancelled")

    def __init__(self, callback: Callable[[], Any]) -> None:
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class MemoryRevisions(RevisionSource):
    """A :class:`~freshkeep.core.revision.RevisionSource` held in a dict: counters another
    "process" can move behind the keeper's back (assign to ``revisions[source]``).

    ``fail`` makes reads raise, to test a database outage; ``reads`` counts reads.
    """

    def __init__(self, revisions: Mapping[str, Revision] | None = None) -> None:
        self.revisions: dict[str, Revision] = dict(revisions or {})
        self.fail: BaseException | None = None
        self.reads = 0

    async def read(self, sources: Collection[str]) -> dict[str, Revision]:
        """Return the revision of each source (0 if never bumped)."""
        self.reads += 1
        if self.fail is not None:
            raise self.fail
        return {s: self.revisions.get(s, 0) for s in sources}

    async def bump(self, sources: Collection[str]) -> dict[str, Revision]:
        """Increment counters; return the new revisions."""
        out: dict[str, Revision] = {}
        for s in sources:
            old = self.revisions.get(s, 0)
            out[s] = self.revisions[s] = (old if isinstance(old, int) else 0) + 1
        return out


__all__ = ["FakeClock", "MemoryRevisions"]
