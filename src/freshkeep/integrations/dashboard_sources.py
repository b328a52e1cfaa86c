"""Where the dashboard and the metrics find what a keeper does not register itself.

Artifact caches are registered on ``keeper.artifacts`` (name to cache); processing pipelines
are found through the processors the keeper's health registry watches
(``keeper.health.watch_processor(pipeline, ...)``). Both are optional: a keeper without them
has no artifact cache and no watched pipeline.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from freshkeep.keeper import Keeper
    from freshkeep.processing import Pipeline


def artifact_caches(keeper: Keeper) -> Mapping[str, Any]:
    """The artifact caches registered on ``keeper`` (``keeper.artifacts``), by name."""
    caches = getattr(keeper, "artifacts", None)
    return dict(caches) if isinstance(caches, Mapping) else {}


def watched_pipelines(keeper: Keeper) -> list[Pipeline]:
    """The pipelines of the processors watched by the keeper's health registry
    (``keeper.health.watch_processor(pipeline, ...)``), if it has one."""
    watches = getattr(getattr(keeper, "health", None), "watches", None)
    if not isinstance(watches, Mapping):
        return []
    found: list[Pipeline] = []
    for watch in watches.values():
        pipeline = getattr(watch, "pipeline", None)
        if pipeline is not None and all(pipeline is not p for p in found):
            found.append(pipeline)
    return found


__all__ = ["artifact_caches", "watched_pipelines"]
