"""The shared store port: entries every instance shares, behind each one's memory L1."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Hashable
from typing import Any

from freshkeep.core.entry import Entry
from freshkeep.ports._lock import Lock


class SharedStore(ABC):
    """Entries shared by every instance, behind each one's memory L1.

    ``get`` answers a miss (``None``) for anything it cannot serve: absent, corrupt, tampered,
    or the server unreachable; ``put`` is compare-and-set on the revision vector (design rule
    3: it never replaces an entry built from newer revisions) and answers whether it stored.
    Neither raises; failures are counted in :meth:`status`.

    Optional capability: :meth:`lock`, a :class:`~freshkeep.ports.Lock` on the same server for
    cross-instance single-flight; the base answers ``None`` and a keeper then builds in each
    instance (single-flight within each process only).
    """

    @abstractmethod
    def key_for(self, view: str, identity: Hashable, *, version: str = "") -> str:
        """The store key of ``identity`` in ``view`` (the same in every process)."""

    @abstractmethod
    async def get(self, key: str) -> Entry | None:
        """The entry under ``key``, or ``None``."""

    @abstractmethod
    async def put(self, key: str, entry: Entry) -> bool:
        """Store ``entry`` unless the stored one was built from newer revisions."""

    @abstractmethod
    async def delete(self, key: str) -> bool:
        """Remove ``key``; return whether it was there."""

    @abstractmethod
    def status(self) -> dict[str, Any]:
        """Reachability and counters, as plain data."""

    def lock(self) -> Lock | None:
        """A lock shared by every instance of this store, or ``None`` (the default: not
        supported)."""
        return None

    async def aclose(self) -> None:
        """Release connections (the base has none)."""
        return None


__all__ = ["SharedStore"]
