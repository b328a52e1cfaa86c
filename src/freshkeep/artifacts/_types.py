"""The value types of :mod:`freshkeep.artifacts`: what a builder returns, the artifact handed
out, and a cache's counters, snapshot and backlog."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from freshkeep.core.component import Snapshot


@dataclass(frozen=True, slots=True)
class Built:
    """What a builder may return instead of bare bytes: the bytes and how to serve them."""

    data: bytes
    content_type: str | None = None
    """``Content-Type`` of the served file (default ``application/octet-stream``)."""
    filename: str | None = None
    """Offered as the download's file name (``Content-Disposition: attachment``)."""


BuildFunc = Callable[[str], Awaitable[bytes | Built]]
"""A builder: ``await build(key)`` returns the artifact's bytes, or a :class:`Built`."""

ReadStatus = Literal["hit", "miss", "error-stale"]


@dataclass(frozen=True, slots=True)
class Artifact:
    """An artifact handed out by :meth:`ArtifactCache.get`."""

    cache: str
    key: str
    id: str
    """The object's id: SHA-256 of its bytes (hex). Keys with the same bytes share it."""
    size: int
    url: str
    """Where to fetch it: a presigned URL (S3) or a signed URL of :func:`artifact_routes`."""
    url_expires_at: float
    """Epoch seconds after which :attr:`url` is refused."""
    created_at: float
    expires_at: float
    """Epoch seconds at which the artifact stops being fresh."""
    status: ReadStatus
    """``hit`` (fresh row), ``miss`` (built now) or ``error-stale`` (rebuild failed; the last
    good artifact, expired less than ``max_stale_on_error`` ago)."""
    content_type: str | None = None
    filename: str | None = None


@dataclass(slots=True)
class ArtifactStats:
    """Counters of an :class:`ArtifactCache` (this process)."""

    hits: int = 0
    """:meth:`~ArtifactCache.get` calls served from a fresh row, without building."""
    misses: int = 0
    """:meth:`~ArtifactCache.get` calls that found no fresh row."""
    built: int = 0
    """Artifacts built and recorded."""
    skipped: int = 0
    """Keys a prebuild skipped: their row was fresh."""
    failed: int = 0
    """Builds that failed (the builder, the storage or the index); nothing was recorded."""
    stale_served: int = 0
    """Reads that got the last good artifact because its rebuild failed."""
    unavailable: int = 0
    """Reads that raised ``ArtifactBuildError``: a failed build and nothing within bounds."""
    rewrites: int = 0
    """Builds whose object GC deleted between their steps; written again."""
    gc_runs: int = 0
    gc_rows: int = 0
    """Expired rows deleted by GC."""
    gc_objects: int = 0
    """Stored objects deleted by GC."""
    gc_orphans: int = 0
    """Stored objects found without an object row (adopted, deleted once past the grace)."""
    gc_temp_files: int = 0
    """Left-over temporary files of interrupted local writes deleted by GC."""
    last_gc_at: float | None = None
    last_gc_seconds: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ArtifactSnapshot(Snapshot):
    """An artifact cache's counters (those of :class:`ArtifactStats`) and bounds now
    (:meth:`ArtifactCache.snapshot`, no I/O)."""

    hits: int
    misses: int
    built: int
    skipped: int
    failed: int
    stale_served: int
    unavailable: int
    rewrites: int
    gc_runs: int
    gc_rows: int
    gc_objects: int
    gc_orphans: int
    gc_temp_files: int
    last_gc_at: float | None
    last_gc_seconds: float | None
    last_error: str | None
    last_error_at: float | None
    storage: str
    ttl: float
    max_stale_on_error: float
    orphan_grace: float
    in_flight: int
    """Builds running in this process."""
    pending: int
    """Keys of this process's prebuilds not built yet."""
    failing_keys: int
    """Keys whose last build in this process failed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ArtifactBacklog:
    """What the health check of an artifact cache reads (:meth:`ArtifactCache.health_data`)."""

    prebuild_backlog: int
    """Prebuild jobs waiting in the job queue (every instance's) plus the keys of this
    process's prebuilds not built yet."""
    prebuild_jobs_waiting: int
    gc_backlog: int
    """Rows and objects the next GC would delete."""
    oldest_expired_age: float | None
    """Seconds since the oldest collectable row became collectable (``None``: none); it
    grows when GC does not run."""
    failing_keys: int
    last_error: str | None
    """The last build error (``"key: error"``), or ``None``."""
    stale_rows: int
    """Expired rows kept for stale-if-error."""
    collectable_rows: int
    collectable_objects: int
    in_flight: int
