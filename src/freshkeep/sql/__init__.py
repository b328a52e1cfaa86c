"""freshkeep's SQL substrate (extra ``sqlalchemy``; ``sqlite`` or ``postgres`` for a driver).

Everything of freshkeep that lives in a database, below the shapes that use it:

- :mod:`freshkeep.sql.engine`: URLs (``postgresql://`` and ``postgresql+asyncpg://`` alike),
  engines with SQLite's pragmas and real transactions, ``BEGIN IMMEDIATE`` writers, and
  :func:`run_on` for sync and async engines;
- :mod:`freshkeep.sql.schema`: every freshkeep table on one :data:`metadata`;
- :mod:`freshkeep.sql.revisions`: the revision source (:class:`SQLAlchemyRevisions`) and the
  counter bump the write hooks run in the writing transaction;
- :mod:`freshkeep.sql.replica`: builds on a PostgreSQL read replica (:class:`ReadReplica`),
  the revisions and the data of one snapshot;
- :mod:`freshkeep.sql.state`: the base of the SQL state stores;
- :mod:`freshkeep.sql.migrate` and :mod:`freshkeep.sql.triggers`: Alembic migrations of those
  tables, and PostgreSQL change-capture triggers.

The write hooks themselves (``track``) are an integration: :mod:`freshkeep.integrations.sqlalchemy`.
"""

from __future__ import annotations

from freshkeep.sql.engine import SQLITE_BEGIN as SQLITE_BEGIN
from freshkeep.sql.engine import async_url as async_url
from freshkeep.sql.engine import create_engine as create_engine
from freshkeep.sql.engine import display_url as display_url
from freshkeep.sql.engine import run_on as run_on
from freshkeep.sql.engine import sqlite_transactions as sqlite_transactions
from freshkeep.sql.engine import writer_engine as writer_engine
from freshkeep.sql.replica import BuildSnapshot as BuildSnapshot
from freshkeep.sql.replica import ReadReplica as ReadReplica
from freshkeep.sql.revisions import SQLAlchemyRevisions as SQLAlchemyRevisions
from freshkeep.sql.revisions import Watermark as Watermark
from freshkeep.sql.revisions import bump_counters as bump_counters
from freshkeep.sql.revisions import table_source as table_source
from freshkeep.sql.schema import REVISION_TABLE as REVISION_TABLE
from freshkeep.sql.schema import metadata as metadata
from freshkeep.sql.schema import revisions_table as revisions_table
from freshkeep.sql.state import SQLStateStore as SQLStateStore
from freshkeep.sql.state import upsert_rows as upsert_rows

__all__ = [
    "REVISION_TABLE",
    "SQLITE_BEGIN",
    "BuildSnapshot",
    "ReadReplica",
    "SQLAlchemyRevisions",
    "SQLStateStore",
    "Watermark",
    "async_url",
    "bump_counters",
    "create_engine",
    "display_url",
    "metadata",
    "revisions_table",
    "run_on",
    "sqlite_transactions",
    "table_source",
    "upsert_rows",
    "writer_engine",
]
