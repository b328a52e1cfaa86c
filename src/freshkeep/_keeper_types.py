"""The counters and the snapshot of a :class:`~freshkeep.keeper.Keeper` (re-exported by
:mod:`freshkeep.keeper`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from freshkeep._view_types import Probe, ViewSnapshot
from freshkeep.core.component import Snapshot
from freshkeep.ports import BusSnapshot, SharedStoreSnapshot
from freshkeep.remote._types import RemoteSnapshot
from freshkeep.stores.memory import MemoryStoreSnapshot

if TYPE_CHECKING:
    from freshkeep.artifacts import ArtifactSnapshot
    from freshkeep.notify import NotifierSnapshot


@dataclass(slots=True)
class KeeperStats:
    """Counters of a keeper."""

    commits: int = 0
    """Commits of this process applied to the keeper (write hooks, :meth:`Keeper.publish`,
    :meth:`Keeper.bump`)."""
    remote_revisions: int = 0
    """Messages of revisions received from other keepers through the bus."""
    remote_changes: int = 0
    """Of those, the messages that carried their commit's changed rows (recorded in
    :attr:`Keeper.changes` for the delta sections)."""
    probe_errors: int = 0
    """Reads whose revision probe failed."""
    unattributed_writes: int = 0
    """Raw SQL statements whose tables could not be determined: every tracked table was
    bumped for each (the write hooks count them; see ``freshkeep.sql.statements``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class KeeperSnapshot(Snapshot):
    """Counters of a keeper and the snapshots of its views, remotes, notifiers, artifact
    caches, bus and shared store (:meth:`Keeper.snapshot`);
    :meth:`~freshkeep.core.component.Snapshot.to_dict` is the stats JSON (``GET /state/stats``
    of the demo hub)."""

    instance: str
    """The keeper's :attr:`~Keeper.instance_id`."""
    probe: Probe
    resync_interval: float
    probes: int
    """Reads of source revisions."""
    commits: int
    remote_revisions: int
    probe_errors: int
    unattributed_writes: int = 0
    remote_changes: int = 0
    """Messages from other keepers that carried their commit's changed rows."""
    store: MemoryStoreSnapshot
    """The in-process store (L1)."""
    shared: SharedStoreSnapshot | None
    """The shared store (L2), or ``None``."""
    bus: BusSnapshot
    bus_down: bool
    """Whether the bus is down (reads probe revisions meanwhile)."""
    views: Mapping[str, ViewSnapshot]
    remotes: Mapping[str, RemoteSnapshot]
    notifiers: Mapping[str, NotifierSnapshot]
    artifacts: Mapping[str, ArtifactSnapshot]
