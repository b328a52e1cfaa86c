"""Create the freshkeep_processing_state table (per-(processor, item) processing state).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

TABLE = "freshkeep_processing_state"


def upgrade() -> None:
    """Create ``freshkeep_processing_state`` unless it exists (``SQLProcessingState.
    create_table()`` creates the same table)."""
    if sa.inspect(op.get_bind()).has_table(TABLE):
        return
    op.create_table(
        TABLE,
        sa.Column("processor", sa.String(255), primary_key=True),
        sa.Column("item", sa.String(1024), primary_key=True),
        sa.Column("mtime_ns", sa.BigInteger, nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("content_hash", sa.String(128), nullable=True),
        sa.Column("processed_at", sa.Float, nullable=True),
        sa.Column("counts", sa.Text, nullable=False),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("retry_at", sa.Float, nullable=True),
    )


def downgrade() -> None:
    """Drop ``freshkeep_processing_state`` (every item is processed again on the next run)."""
    if sa.inspect(op.get_bind()).has_table(TABLE):
        op.drop_table(TABLE)
