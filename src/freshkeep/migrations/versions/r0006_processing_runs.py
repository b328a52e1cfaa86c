"""Create the freshkeep_processing_runs table (the record of processor runs started by hand).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-12
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None

TABLE = "freshkeep_processing_runs"


def upgrade() -> None:
    """Create ``freshkeep_processing_runs`` and its indexes unless it exists
    (``SQLRunHistory.create_table()`` creates the same)."""
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
        sa.Column("pipeline", sa.String(255), nullable=False),
        sa.Column("processor", sa.String(255), nullable=False),
        sa.Column("principal", sa.String(255), nullable=False),
        sa.Column("operator", sa.String(255), nullable=True),
        sa.Column("via", sa.String(16), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("finished_at", sa.Float, nullable=False),
        sa.Column("scanned", sa.Integer, nullable=False),
        sa.Column("skipped", sa.Integer, nullable=False),
        sa.Column("unchanged", sa.Integer, nullable=False),
        sa.Column("deferred", sa.Integer, nullable=False),
        sa.Column("processed", sa.Integer, nullable=False),
        sa.Column("failed", sa.Integer, nullable=False),
        sa.Column("error", sa.Text, nullable=True),
    )
    op.create_index("ix_freshkeep_processing_runs_started", TABLE, ["started_at"])
    op.create_index("ix_freshkeep_processing_runs_processor", TABLE, ["processor", "started_at"])


def downgrade() -> None:
    """Drop ``freshkeep_processing_runs`` (the record of past runs is lost)."""
    if sa.inspect(op.get_bind()).has_table(TABLE):
        op.drop_table(TABLE)
