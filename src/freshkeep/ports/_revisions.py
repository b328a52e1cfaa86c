"""The revision source port: where the committed revision of each source is read."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Sequence

from freshkeep.core.partitions import Partitioned
from freshkeep.core.revision import Revision


class RevisionSource(ABC):
    """Reads the current revisions of sources, all in one round trip.

    Optional capabilities, "not supported" (``None``) in the base: :meth:`bump` (increment
    counters in a transaction of its own) and :meth:`known_sources` (list what it can read,
    so a keeper can refuse a view whose source nothing moves); :meth:`check` (is it ready to
    serve) checks nothing in the base.
    """

    @abstractmethod
    async def read(self, sources: Collection[str]) -> dict[str, Revision]:
        """Return the committed revision of each source (``0`` for one never written)."""

    async def bump(self, sources: Collection[str]) -> dict[str, Revision] | None:
        """Increment the counters of ``sources``; return their new revisions, or ``None`` when
        this source cannot bump (the default)."""
        return None

    async def check(self, partitions: Sequence[Partitioned] = ()) -> None:
        """Raise :class:`~freshkeep.exceptions.ConfigurationError` naming the fix when what
        it needs is missing (e.g. its tables were never created), or when what moves its
        counters cannot move those of ``partitions`` (the partitioned sources the keeper
        reads: e.g. change-capture triggers told other columns); the default checks nothing.
        :meth:`Keeper.start <freshkeep.Keeper.start>` calls it first, with
        :attr:`Keeper.partitions <freshkeep.Keeper.partitions>`."""
        return None

    async def known_sources(self) -> frozenset[str] | None:
        """Every source this revision source can read a moving revision of, or ``None`` when
        it cannot tell (the default: a keeper then checks views against tracked tables and
        declared sources only)."""
        return None


__all__ = ["RevisionSource"]
