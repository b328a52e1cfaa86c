"""Alembic environment of freshkeep's migrations.

It runs only on a connection handed over by :mod:`freshkeep.sql.migrate` (in
``config.attributes["connection"]``), inside that connection's transaction. Tables are created
in the connection's default schema (on PostgreSQL: the first schema of its ``search_path``).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from freshkeep.sql.schema import metadata

VERSION_TABLE = "freshkeep_alembic_version"

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection) or context.is_offline_mode():
    raise RuntimeError(
        "freshkeep's migrations run through freshkeep.sql.migrate (or `freshkeep "
        "migrate`), on a connection"
    )
context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
)
with context.begin_transaction():
    context.run_migrations()
