"""Create the freshkeep_jobs table (the durable queue of the embedded job runner).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

TABLE = "freshkeep_jobs"


def _where(condition: str) -> dict[str, Any]:
    return {"sqlite_where": sa.text(condition), "postgresql_where": sa.text(condition)}


def upgrade() -> None:
    """Create ``freshkeep_jobs`` and its partial unique indexes unless the table exists
    (``SQLJobQueue.create_tables()`` creates the same table)."""
    if sa.inspect(op.get_bind()).has_table(TABLE):
        return
    op.create_table(
        TABLE,
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("task", sa.String(255), nullable=False),
        sa.Column("args", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("run_at", sa.Float, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("dedup_key", sa.String(512), nullable=True),
        sa.Column("lock", sa.String(512), nullable=True),
        sa.Column("tick", sa.BigInteger, nullable=True),
        sa.Column("enqueued_at", sa.Float, nullable=False),
        sa.Column("started_at", sa.Float, nullable=True),
        sa.Column("finished_at", sa.Float, nullable=True),
        sa.Column("heartbeat_at", sa.Float, nullable=True),
        sa.Column("worker", sa.String(255), nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
    )
    op.create_index("ix_freshkeep_jobs_ready", TABLE, ["status", "run_at"])
    op.create_index(
        "uq_freshkeep_jobs_dedup_waiting",
        TABLE,
        ["dedup_key"],
        unique=True,
        **_where("status = 'waiting' AND dedup_key IS NOT NULL"),
    )
    op.create_index(
        "uq_freshkeep_jobs_dedup_running",
        TABLE,
        ["dedup_key"],
        unique=True,
        **_where("status = 'running' AND dedup_key IS NOT NULL"),
    )
    op.create_index(
        "uq_freshkeep_jobs_lock_running",
        TABLE,
        ["lock"],
        unique=True,
        **_where("status = 'running' AND lock IS NOT NULL"),
    )
    op.create_index(
        "uq_freshkeep_jobs_tick",
        TABLE,
        ["task", "tick"],
        unique=True,
        **_where("tick IS NOT NULL"),
    )


def downgrade() -> None:
    """Drop ``freshkeep_jobs`` (queued jobs are lost)."""
    if sa.inspect(op.get_bind()).has_table(TABLE):
        op.drop_table(TABLE)
