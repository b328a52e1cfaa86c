"""The migrations and :mod:`freshkeep.sql.schema` describe the same tables.

Alembic's autogenerate comparison runs against a database migrated to the head: any table,
column, type, nullability or index that one side has and the other
has not is a failure, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, create_engine

from freshkeep.sql import migrate
from freshkeep.sql.schema import metadata
from tests.conftest import PgSchema

OURS = {t.name for t in metadata.sorted_tables}


def _include(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    if type_ == "table":
        return name in OURS  # not the version table, not another test's tables
    return True


def _drift(conn: Connection) -> list[Any]:
    ctx = MigrationContext.configure(
        conn,
        opts={"compare_type": True, "compare_server_default": False, "include_object": _include},
    )
    return list(compare_metadata(ctx, metadata))


def test_every_table_is_in_one_metadata() -> None:
    assert OURS == {
        "freshkeep_revisions",
        "freshkeep_notify_state",
        "freshkeep_processing_state",
        "freshkeep_processing_runs",
        "freshkeep_jobs",
        "freshkeep_artifacts",
        "freshkeep_artifact_objects",
    }


def test_sqlite_head_matches_the_metadata(tmp_path: Path) -> None:
    path = tmp_path / "drift.db"
    migrate.upgrade(str(path))
    engine = create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            assert _drift(conn) == []
    finally:
        engine.dispose()


def test_postgres_head_matches_the_metadata(pg_schema: PgSchema) -> None:
    engine = pg_schema.sync_engine()
    try:
        with engine.connect() as conn:
            migrate.upgrade(conn)
            conn.commit()
            assert _drift(conn) == []
    finally:
        engine.dispose()


def test_a_drift_is_found(tmp_path: Path) -> None:
    """The comparison is not blind: a table the migrations lack is reported."""
    path = tmp_path / "partial.db"
    migrate.upgrade(str(path), "0004")  # before the artifact tables and the run history
    engine = create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            added = {d[1].name for d in _drift(conn) if d[0] == "add_table"}
            assert added == {
                "freshkeep_artifacts",
                "freshkeep_artifact_objects",
                "freshkeep_processing_runs",
            }
    finally:
        engine.dispose()
