"""The ports freshkeep's core talks to; adapters implement them.

- :class:`~freshkeep.core.revision.RevisionSource` reads revisions (SQLAlchemy counters,
  watermarks).
- :class:`Bus` carries revisions committed in one process to the others.

A shared, asynchronous store (Redis, as L2 behind each process's memory L1) is a port of the
distributed mode; the in-process :class:`~freshkeep.stores.memory.MemoryStore` is always L1.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Protocol

from freshkeep.core.component import Snapshot
from freshkeep.core.revision import Revision, RevisionSource

Listener = Callable[[Mapping[str, Revision], str], None]
"""Called with the revisions of one published commit and the id of the keeper that published
it (so a keeper can skip its own)."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class BusSnapshot(Snapshot):
    """What a bus reports (:meth:`Bus.snapshot`): the in-process bus only its kind."""

    kind: str
    """``local``, ``redis``, ``postgres``..."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RemoteBusSnapshot(BusSnapshot):
    """A bus between processes: its connection state and counters (wall-clock seconds;
    ``last_outage_ended_at`` is ``None`` while an outage lasts)."""

    channel: str
    started: bool
    connected: bool
    connects: int
    reconnects: int
    published: int
    received: int
    errors: int
    malformed: int
    dropped: int
    last_error: str | None
    last_error_at: float | None
    last_outage_started_at: float | None
    last_outage_ended_at: float | None


class Bus(Protocol):
    """Publishes committed revisions to every subscribed process (at-most-once)."""

    async def publish(self, revisions: Mapping[str, Revision], *, origin: str = "") -> None:
        """Deliver ``revisions`` (published by the keeper ``origin``) to the subscribers."""
        ...

    def publish_nowait(self, revisions: Mapping[str, Revision], *, origin: str = "") -> None:
        """Deliver from synchronous code (a sync session's commit), best effort."""
        ...

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Register ``listener``; return a function that unsubscribes it."""
        ...

    def snapshot(self) -> BusSnapshot:
        """Its state and counters, without I/O."""
        ...


__all__ = ["Bus", "BusSnapshot", "Listener", "RemoteBusSnapshot", "RevisionSource"]
