"""The revision source port: where the committed revision of each source is read."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection

from freshkeep.core.revision import Revision


class RevisionSource(ABC):
    """Reads the current revisions of sources, all in one round trip.

    Optional capability: :meth:`bump` (increment counters in a transaction of its own); the
    base answers ``None``, "not supported".
    """

    @abstractmethod
    async def read(self, sources: Collection[str]) -> dict[str, Revision]:
        """Return the committed revision of each source (``0`` for one never written)."""

    async def bump(self, sources: Collection[str]) -> dict[str, Revision] | None:
        """Increment the counters of ``sources``; return their new revisions, or ``None`` when
        this source cannot bump (the default)."""
        return None


__all__ = ["RevisionSource"]
