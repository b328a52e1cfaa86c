"""Where the dashboard and the metrics find a keeper's artifact caches and pipelines.

Both are components registered on the keeper (:meth:`freshkeep.Keeper.register`): an artifact
cache made with ``keeper=`` registers itself, and a pipeline is registered by
``keeper.register(pipeline)`` or when the keeper's health registry watches one of its
processors (``keeper.health.watch_processor(pipeline, ...)``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from freshkeep.artifacts import ArtifactCache
    from freshkeep.keeper import Keeper
    from freshkeep.processing import Pipeline


def artifact_caches(keeper: Keeper) -> Mapping[str, ArtifactCache]:
    """The artifact caches registered on ``keeper`` (``keeper.artifacts``), by name."""
    return keeper.artifacts


def watched_pipelines(keeper: Keeper) -> list[Pipeline]:
    """The pipelines registered on ``keeper`` (``keeper.pipelines``): those registered by
    hand and those whose processors its health registry watches."""
    return list(keeper.pipelines.values())


__all__ = ["artifact_caches", "watched_pipelines"]
