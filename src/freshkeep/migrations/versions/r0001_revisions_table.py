"""Create the freshkeep_revisions table, or adopt an existing one.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

TABLE = "freshkeep_revisions"


def upgrade() -> None:
    """Create ``freshkeep_revisions`` unless it exists (``SQLAlchemyRevisions.create_table()``
    creates the same table)."""
    if sa.inspect(op.get_bind()).has_table(TABLE):
        return
    op.create_table(
        TABLE,
        sa.Column("source", sa.String(255), primary_key=True),
        sa.Column("revision", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    """Drop ``freshkeep_revisions`` (every counter is lost), and the change-capture triggers
    first (on PostgreSQL with their function): they would fail every write without it."""
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS freshkeep_bump() CASCADE")
    elif bind.dialect.name == "sqlite":
        quote = bind.dialect.identifier_preparer.quote_identifier
        triggers = bind.exec_driver_sql(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' "
            "AND name LIKE 'freshkeep_bump_%' AND sql LIKE '%freshkeep_revisions%'"
        ).fetchall()
        for (name,) in triggers:
            op.execute(f"DROP TRIGGER IF EXISTS {quote(name)}")
    if sa.inspect(bind).has_table(TABLE):
        op.drop_table(TABLE)
