"""Every table of freshkeep, on one :data:`metadata`.

| table | what it holds | written by |
|---|---|---|
| ``freshkeep_revisions`` | one counter per source | the write hooks, triggers, ``Keeper.bump`` |
| ``freshkeep_notify_state`` | a notifier's last confirmed state per subject | notifiers |
| ``freshkeep_processing_state`` | per (processor, item) state | processing pipelines |
| ``freshkeep_processing_runs`` | who ran a processor by hand, when, and how it went | pipelines |
| ``freshkeep_jobs`` | the embedded job queue | ``SQLJobQueue`` |
| ``freshkeep_artifacts`` | per (cache, key): the object served | artifact caches |
| ``freshkeep_artifact_objects`` | per (cache, object): what GC may delete | artifact caches |

The Alembic migrations in :mod:`freshkeep.migrations` create them (``freshkeep migrate``);
``metadata.create_all`` does too, for tests and scripts. A test compares the migration head with
this metadata, so the two cannot drift apart.
"""

from __future__ import annotations

from typing import Any

from freshkeep.exceptions import missing_extra

try:
    from sqlalchemy import (
        BigInteger,
        Column,
        Float,
        Index,
        Integer,
        MetaData,
        String,
        Table,
        Text,
        text,
    )
except ImportError as exc:  # pragma: no cover - exercised by the no-extras import test
    raise missing_extra("sqlalchemy", exc.name or "sqlalchemy") from exc

metadata = MetaData()
"""The metadata of freshkeep's own tables."""

# -- revisions ------------------------------------------------------------------------------

REVISION_TABLE = "freshkeep_revisions"

revisions_table = Table(
    REVISION_TABLE,
    metadata,
    Column("source", String(255), primary_key=True),
    Column("revision", BigInteger, nullable=False),
)
"""One row per source: its counter. A source without a row has revision 0."""

# -- notifier states ------------------------------------------------------------------------

NOTIFY_STATE_TABLE = "freshkeep_notify_state"

notify_state_table = Table(
    NOTIFY_STATE_TABLE,
    metadata,
    Column("notifier", String(255), primary_key=True),
    Column("subject", String(255), primary_key=True),
    Column("state", Text, nullable=False),
    Column("confirmed_at", Float, nullable=False),
)
"""One row per (notifier, subject): its last confirmed state, as JSON text."""

# -- processing state -----------------------------------------------------------------------

PROCESSING_STATE_TABLE = "freshkeep_processing_state"

processing_state_table = Table(
    PROCESSING_STATE_TABLE,
    metadata,
    Column("processor", String(255), primary_key=True),
    Column("item", String(1024), primary_key=True),
    Column("mtime_ns", BigInteger, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("content_hash", String(128), nullable=True),
    Column("processed_at", Float, nullable=True),
    Column("counts", Text, nullable=False),
    Column("last_error", Text, nullable=True),
    Column("attempts", Integer, nullable=False),
    Column("retry_at", Float, nullable=True),
)
"""One row per (processor, item)."""

PROCESSING_RUNS_TABLE = "freshkeep_processing_runs"

processing_runs_table = Table(
    PROCESSING_RUNS_TABLE,
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("pipeline", String(255), nullable=False),
    Column("processor", String(255), nullable=False),
    Column("principal", String(255), nullable=False),
    Column("operator", String(255), nullable=True),
    Column("via", String(16), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("started_at", Float, nullable=False),
    Column("finished_at", Float, nullable=False),
    Column("scanned", Integer, nullable=False),
    Column("skipped", Integer, nullable=False),
    Column("unchanged", Integer, nullable=False),
    Column("deferred", Integer, nullable=False),
    Column("processed", Integer, nullable=False),
    Column("failed", Integer, nullable=False),
    Column("error", Text, nullable=True),
    Index("ix_freshkeep_processing_runs_started", "started_at"),
    Index("ix_freshkeep_processing_runs_processor", "processor", "started_at"),
)
"""One row per run of a processor started by someone (an admin route, ``freshkeep process``):
who, how, when, the outcome and the run's figures. Rows older than the history's ``keep`` are
deleted when a new one is written."""

# -- jobs -----------------------------------------------------------------------------------

JOBS_TABLE = "freshkeep_jobs"
"""The name of the job table."""

MAX_KEY = 512
"""The longest dedup key or lock name of a job."""


def _where(condition: str) -> dict[str, Any]:
    return {"sqlite_where": text(condition), "postgresql_where": text(condition)}


jobs_table = Table(
    JOBS_TABLE,
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("task", String(255), nullable=False),
    Column("args", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("run_at", Float, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("dedup_key", String(MAX_KEY), nullable=True),
    Column("lock", String(MAX_KEY), nullable=True),
    Column("tick", BigInteger, nullable=True),
    Column("enqueued_at", Float, nullable=False),
    Column("started_at", Float, nullable=True),
    Column("finished_at", Float, nullable=True),
    Column("heartbeat_at", Float, nullable=True),
    Column("worker", String(255), nullable=True),
    Column("last_error", Text, nullable=True),
    Index("ix_freshkeep_jobs_ready", "status", "run_at"),
    Index(
        "uq_freshkeep_jobs_dedup_waiting",
        "dedup_key",
        unique=True,
        **_where("status = 'waiting' AND dedup_key IS NOT NULL"),
    ),
    Index(
        "uq_freshkeep_jobs_dedup_running",
        "dedup_key",
        unique=True,
        **_where("status = 'running' AND dedup_key IS NOT NULL"),
    ),
    Index(
        "uq_freshkeep_jobs_lock_running",
        "lock",
        unique=True,
        **_where("status = 'running' AND lock IS NOT NULL"),
    ),
    Index("uq_freshkeep_jobs_tick", "task", "tick", unique=True, **_where("tick IS NOT NULL")),
)
"""One row per job: ``status`` is ``waiting``, ``running``, ``done``, ``failed`` or ``skipped``.

The partial unique indexes keep the queue's rules in the database: at most one waiting and one
running job per dedup key, one running job per lock, one job per (task, periodic tick)."""

# -- artifacts ------------------------------------------------------------------------------

ARTIFACTS_TABLE = "freshkeep_artifacts"
ARTIFACT_OBJECTS_TABLE = "freshkeep_artifact_objects"

artifacts_table = Table(
    ARTIFACTS_TABLE,
    metadata,
    Column("cache", String(200), primary_key=True),
    Column("key", String(1024), primary_key=True),
    Column("artifact_id", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("content_type", String(255), nullable=True),
    Column("filename", String(1024), nullable=True),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("build_seconds", Float, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("last_error", Text, nullable=True),
    Index("ix_freshkeep_artifacts_expires", "cache", "expires_at"),
    Index("ix_freshkeep_artifacts_object", "cache", "artifact_id"),
)
"""One row per (cache, key): the artifact it serves (``artifact_id``: SHA-256 of the bytes)."""

artifact_objects_table = Table(
    ARTIFACT_OBJECTS_TABLE,
    metadata,
    Column("cache", String(200), primary_key=True),
    Column("artifact_id", String(64), primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("touched_at", Float, nullable=False),
    Index("ix_freshkeep_artifact_objects_touched", "cache", "touched_at"),
)
"""One row per stored object of a cache; ``touched_at``: the last build that used it."""

__all__ = [
    "ARTIFACTS_TABLE",
    "ARTIFACT_OBJECTS_TABLE",
    "JOBS_TABLE",
    "MAX_KEY",
    "NOTIFY_STATE_TABLE",
    "PROCESSING_RUNS_TABLE",
    "PROCESSING_STATE_TABLE",
    "REVISION_TABLE",
    "artifact_objects_table",
    "artifacts_table",
    "jobs_table",
    "metadata",
    "notify_state_table",
    "processing_runs_table",
    "processing_state_table",
    "revisions_table",
]
