"""Prebuilt artifacts: files derived from immutable keys, built ahead of time when their
source changes, handed out as URLs without touching the expensive path, and collected when
they expire (see ``docs/artifacts.md``).

- :class:`ArtifactCache`: ``get`` / ``prebuild`` / ``gc``, stale-if-error, job glue, stats.
- :class:`ObjectStorage` (the port, :mod:`freshkeep.ports`) and :class:`FsspecStorage`, its
  adapter: content-addressed objects through fsspec (a local directory, or ``s3://…`` with
  s3fs).
- :class:`ArtifactIndex`: the index tables ``freshkeep_artifacts`` and
  ``freshkeep_artifact_objects`` (migration ``0005``).
- :func:`artifact_routes` / :func:`artifact_app` (Starlette): serve local objects at signed
  URLs, with HTTP ``Range``.

Needs ``pip install 'freshkeep[artifacts]'`` (``freshkeep[s3]`` for S3).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from freshkeep.artifacts._cache import (
    MAX_KEY_LENGTH,
    Artifact,
    ArtifactBacklog,
    ArtifactCache,
    ArtifactSnapshot,
    ArtifactStats,
    BuildFunc,
    Built,
)
from freshkeep.artifacts._index import (
    ARTIFACT_OBJECTS_TABLE,
    ARTIFACTS_TABLE,
    ArtifactIndex,
    IndexRow,
    artifact_objects_table,
    artifacts_table,
)
from freshkeep.artifacts._signing import Grant
from freshkeep.artifacts._storage import (
    FsspecStorage,
    ObjectStorage,
    StoredObject,
    content_id,
    is_content_id,
)

if TYPE_CHECKING:
    from freshkeep.artifacts.routes import artifact_app, artifact_routes


def __getattr__(name: str) -> Any:
    if name in ("artifact_app", "artifact_routes"):
        return getattr(importlib.import_module("freshkeep.artifacts.routes"), name)
    raise AttributeError(f"module 'freshkeep.artifacts' has no attribute {name!r}")


__all__ = [
    "ARTIFACTS_TABLE",
    "ARTIFACT_OBJECTS_TABLE",
    "MAX_KEY_LENGTH",
    "Artifact",
    "ArtifactBacklog",
    "ArtifactCache",
    "ArtifactIndex",
    "ArtifactSnapshot",
    "ArtifactStats",
    "BuildFunc",
    "Built",
    "FsspecStorage",
    "Grant",
    "IndexRow",
    "ObjectStorage",
    "StoredObject",
    "artifact_app",
    "artifact_objects_table",
    "artifact_routes",
    "artifacts_table",
    "content_id",
    "is_content_id",
]
