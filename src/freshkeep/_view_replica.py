"""A view's builds on a read replica (:class:`~freshkeep.sql.replica.ReadReplica`): the
section's revisions and its data from one snapshot, and the counters the view reports."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Hashable, Mapping
from typing import TYPE_CHECKING, Any

from freshkeep._view_types import BuildContext, ReplicaSnapshot, Section
from freshkeep.core.revision import Revision, is_older

if TYPE_CHECKING:
    from freshkeep.core.revision import RevisionTracker
    from freshkeep.sql.replica import ReadReplica


@dataclasses.dataclass(slots=True)
class ReplicaStats:
    """The counters behind :class:`ReplicaSnapshot`."""

    on_replica: int = 0
    on_primary: int = 0
    waited: int = 0
    last_wait: float = 0.0
    behind: int = 0

    def snapshot(self, name: str, replica: ReadReplica) -> ReplicaSnapshot:
        """These counters, frozen, for the view ``name``."""
        return ReplicaSnapshot(
            name=name,
            replica=replica.url,
            wait=replica.wait,
            on_replica=self.on_replica,
            on_primary=self.on_primary,
            waited=self.waited,
            last_wait=self.last_wait,
            behind=self.behind,
        )


Learn = Callable[[tuple[str, ...]], Awaitable[Mapping[str, Revision]]]


async def build_on_replica(
    replica: ReadReplica,
    stats: ReplicaStats,
    tracker: RevisionTracker,
    learn: Learn,
    section: Section,
    view: str,
    name: str,
    key: Hashable,
    principal: str | None,
    sources: tuple[str, ...],
) -> tuple[Any, BuildContext]:
    """Build ``section`` in one snapshot of ``replica`` (or of its primary, when the replica
    stays behind what the keeper knows of ``sources``); return the value and the context,
    whose ``revisions`` and ``found`` are those of the snapshot (rule 3)."""
    target = dict(zip(sources, tracker.current(sources), strict=True))
    for on_primary in (False, True):
        async with replica.open(sources, target, primary=on_primary) as snap:

            async def learn_here(new: tuple[str, ...]) -> Mapping[str, Revision]:
                known = await learn(new)  # the keeper follows them from now on
                found = await snap.read(new)
                if any(is_older(found[s], known.get(s, 0)) for s in new):
                    snap.behind = True
                return found

            ctx = BuildContext(
                view, name, key, principal, dict(snap.revisions), learn_here, session=snap.session
            )
            value = await section.build(ctx)
        if snap.lagged:
            stats.waited += 1
            stats.last_wait = snap.waited
        if snap.on == "replica" and snap.behind:
            # A source the builder added is behind on the replica: its data there is older
            # than what the keeper knows. Build again on the primary rather than serve it.
            stats.behind += 1
            continue
        break
    if snap.on == "replica":
        stats.on_replica += 1
    else:
        stats.on_primary += 1
    # What a snapshot saw was committed: the keeper may know it from now on.
    tracker.apply(snap.revisions)
    return value, ctx


__all__ = ["ReplicaStats", "build_on_replica"]
