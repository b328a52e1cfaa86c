"""Create the freshkeep_notify_state table (last confirmed states of change notifiers).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

TABLE = "freshkeep_notify_state"


def upgrade() -> None:
    """Create ``freshkeep_notify_state`` unless it exists (``SQLAlchemyStateStore.create_table()``
    creates the same table)."""
    if sa.inspect(op.get_bind()).has_table(TABLE):
        return
    op.create_table(
        TABLE,
        sa.Column("notifier", sa.String(255), primary_key=True),
        sa.Column("subject", sa.String(255), primary_key=True),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("confirmed_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    """Drop ``freshkeep_notify_state`` (notifiers then re-send on their next change)."""
    if sa.inspect(op.get_bind()).has_table(TABLE):
        op.drop_table(TABLE)
