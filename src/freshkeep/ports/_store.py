"""The shared store port: entries every instance shares, behind each one's memory L1."""

from __future__ import annotations

import dataclasses
from abc import abstractmethod
from collections.abc import Hashable
from typing import ClassVar

from freshkeep.core.component import Component, Kind, Snapshot
from freshkeep.core.entry import Entry
from freshkeep.ports._lock import Lock


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SharedStoreSnapshot(Snapshot):
    """What every shared store reports (:meth:`SharedStore.snapshot`); adapters add their own
    counters in a subclass (:class:`~freshkeep.stores.redis.RedisStoreSnapshot`)."""

    reachable: bool = True
    """``False`` during an outage (every instance builds for itself meanwhile)."""
    outage_seconds: float | None = None
    """Seconds the current outage has lasted (``None``: reachable)."""
    outages: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    poisoned: int = 0
    """Values a put found it could not read (not an entry, tampered, signed with another key,
    stored under another key) and replaced: something writes to the store that is not an
    instance of this deployment, or instances do not share one secret."""
    last_poisoned: str | None = None
    """The key of the last such value and why it could not be read."""
    last_poisoned_at: float | None = None
    """Wall-clock time the last such value was replaced."""


class SharedStore(Component):
    """Entries shared by every instance, behind each one's memory L1.

    ``get`` answers a miss (``None``) for anything it cannot serve: absent, corrupt, tampered,
    or the server unreachable; ``put`` is compare-and-set on the revision vector (design rule
    3: it never replaces an entry built from newer revisions) and answers whether it stored.
    Only an entry ``get`` would serve can refuse a put: a value it cannot read, whatever
    revisions it claims, is replaced (and counted as ``poisoned``). Neither raises; failures
    are counted in :meth:`snapshot`.

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

    kind: ClassVar[Kind] = "store"
    name: str = "shared"

    def snapshot(self) -> SharedStoreSnapshot:
        """Reachability and counters, without I/O (the base: reachable, no counters)."""
        return SharedStoreSnapshot(name=self.name)

    def lock(self) -> Lock | None:
        """A lock shared by every instance of this store, or ``None`` (the default: not
        supported)."""
        return None

    async def aclose(self) -> None:
        """Release connections (the base has none)."""
        return None


__all__ = ["SharedStore", "SharedStoreSnapshot"]
