"""Create the freshkeep_artifacts and freshkeep_artifact_objects tables (the artifact index).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None

ROWS = "freshkeep_artifacts"
OBJECTS = "freshkeep_artifact_objects"


def upgrade() -> None:
    """Create both tables and their indexes unless they exist (``ArtifactCache.
    create_tables()`` creates the same)."""
    inspector = sa.inspect(op.get_bind())
    if not inspector.has_table(ROWS):
        op.create_table(
            ROWS,
            sa.Column("cache", sa.String(200), primary_key=True),
            sa.Column("key", sa.String(1024), primary_key=True),
            sa.Column("artifact_id", sa.String(64), nullable=False),
            sa.Column("size", sa.BigInteger, nullable=False),
            sa.Column("content_type", sa.String(255), nullable=True),
            sa.Column("filename", sa.String(1024), nullable=True),
            sa.Column("created_at", sa.Float, nullable=False),
            sa.Column("expires_at", sa.Float, nullable=False),
            sa.Column("build_seconds", sa.Float, nullable=False),
            sa.Column("attempts", sa.Integer, nullable=False),
            sa.Column("last_error", sa.Text, nullable=True),
        )
        op.create_index("ix_freshkeep_artifacts_expires", ROWS, ["cache", "expires_at"])
        op.create_index("ix_freshkeep_artifacts_object", ROWS, ["cache", "artifact_id"])
    if not inspector.has_table(OBJECTS):
        op.create_table(
            OBJECTS,
            sa.Column("cache", sa.String(200), primary_key=True),
            sa.Column("artifact_id", sa.String(64), primary_key=True),
            sa.Column("size", sa.BigInteger, nullable=False),
            sa.Column("created_at", sa.Float, nullable=False),
            sa.Column("touched_at", sa.Float, nullable=False),
        )
        op.create_index("ix_freshkeep_artifact_objects_touched", OBJECTS, ["cache", "touched_at"])


def downgrade() -> None:
    """Drop both tables (stored objects stay; a GC with orphan collection removes them)."""
    inspector = sa.inspect(op.get_bind())
    for table in (ROWS, OBJECTS):
        if inspector.has_table(table):
            op.drop_table(table)
