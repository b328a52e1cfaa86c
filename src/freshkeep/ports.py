"""The ports freshkeep's core talks to; adapters implement them.

- :class:`~freshkeep.core.revision.RevisionSource` reads revisions (SQLAlchemy counters,
  watermarks).
- :class:`Bus` carries revisions committed in one process to the others.

A shared, asynchronous store (Redis, as L2 behind each process's memory L1) is a port of the
distributed mode; the in-process :class:`~freshkeep.stores.memory.MemoryStore` is always L1.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

from freshkeep.core.revision import Revision, RevisionSource

Listener = Callable[[Mapping[str, Revision], str], None]
"""Called with the revisions of one published commit and the id of the keeper that published
it (so a keeper can skip its own)."""


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


__all__ = ["Bus", "Listener", "RevisionSource"]
