"""freshkeep's own Alembic migrations: idempotent, adopt an existing table, keep to their own
version table and schema, serialize concurrent runs; ``freshkeep migrate``."""

from __future__ import annotations

import re
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from urllib.parse import quote

import pytest
from sqlalchemy import create_engine, inspect, select, text
from sqlalchemy.ext.asyncio import create_async_engine
from typer.testing import CliRunner

from freshkeep import cli
from freshkeep.core.partitions import Partitioned
from freshkeep.exceptions import ConfigurationError
from freshkeep.integrations.sqlalchemy import SQLAlchemyRevisions, revisions_table
from freshkeep.sql import migrate as m
from tests.conftest import PgSchema

HEAD = "0006"
GUIDE = Path(__file__).resolve().parents[2] / "docs" / "operator-guide.md"

runner = CliRunner()
WIDE = {"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}


def test_the_migrations_ship_in_the_package() -> None:
    assert (m.MIGRATIONS / "env.py").is_file()
    assert m.head() == HEAD


def test_sqlite_upgrade_is_idempotent(tmp_path: Path) -> None:
    path = str(tmp_path / "a.db")
    assert m.current(path) is None
    first = m.upgrade(f"sqlite+aiosqlite:///{path}")  # an async URL works from sync code
    assert (first.before, first.after, first.changed) == (None, HEAD, True)
    assert first.applied[0].startswith("0001: Create the freshkeep_revisions table")
    assert first.applied[1].startswith("0002: Create the freshkeep_notify_state table")
    assert first.applied[2].startswith("0003: Create the freshkeep_processing_state table")
    second = m.upgrade(path)
    assert (second.before, second.after, second.changed) == (HEAD, HEAD, False)
    engine = create_engine(f"sqlite:///{path}")
    try:
        tables = set(inspect(engine).get_table_names())
        ours = {"freshkeep_revisions", "freshkeep_notify_state", "freshkeep_processing_state"}
        assert ours | {m.VERSION_TABLE} <= tables
        assert "alembic_version" not in tables
    finally:
        engine.dispose()


def test_downgrade_to_base_and_back(tmp_path: Path) -> None:
    path = str(tmp_path / "b.db")
    m.upgrade(path)
    down = m.downgrade(path, "base")
    assert (down.before, down.after, down.changed) == (HEAD, None, True)
    engine = create_engine(f"sqlite:///{path}")
    try:
        assert not inspect(engine).has_table("freshkeep_revisions")
    finally:
        engine.dispose()
    assert m.upgrade(path).after == HEAD


async def test_adopts_a_table_create_table_made(tmp_path: Path) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'c.db'}")
    try:
        revisions = SQLAlchemyRevisions(engine)
        await revisions.create_table()
        await revisions.bump(["table:tasks"])
        result = await m.upgrade_async(engine)
        assert result.after == HEAD and result.changed
        assert await m.current_async(engine) == HEAD
        assert await revisions.read(["table:tasks"]) == {"table:tasks": 1}
    finally:
        await engine.dispose()


def test_sync_api_refuses_async_targets_and_bad_urls() -> None:
    engine = create_async_engine("sqlite+aiosqlite://")
    with pytest.raises(ConfigurationError, match="_async"):
        m.upgrade(engine)
    with pytest.raises(ConfigurationError, match="not a usable database URL"):
        m.upgrade("nosuchdb://x")


@pytest.mark.postgres
def test_postgres_upgrade_in_the_search_path_schema(pg_schema: PgSchema) -> None:
    engine = pg_schema.sync_engine()
    try:
        with engine.begin() as conn:  # the application's own Alembic version table
            conn.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32))"))
            conn.execute(text("INSERT INTO alembic_version VALUES ('app0042')"))
        assert m.upgrade(engine).after == HEAD
        assert not m.upgrade(engine).changed
        insp = inspect(engine)
        names = set(insp.get_table_names(schema=pg_schema.name))
        assert {"freshkeep_revisions", m.VERSION_TABLE, "alembic_version"} <= names
        assert "freshkeep_revisions" not in insp.get_table_names(schema="public")
        with engine.connect() as conn:
            assert conn.scalar(text("SELECT version_num FROM alembic_version")) == "app0042"
            assert m.current(conn) == HEAD
    finally:
        engine.dispose()


@pytest.mark.postgres
async def test_postgres_async_engine_adopts_an_existing_table(pg_schema: PgSchema) -> None:
    engine = pg_schema.async_engine()
    try:
        revisions = SQLAlchemyRevisions(engine)
        await revisions.create_table()
        await revisions.bump(["table:a", "table:a"])
        assert (await m.upgrade_async(engine)).changed
        assert not (await m.upgrade_async(engine)).changed
        async with engine.connect() as conn:
            rows = (await conn.execute(select(revisions_table))).all()
        assert [tuple(r) for r in rows] == [("table:a", 1)]
    finally:
        await engine.dispose()


@pytest.mark.postgres
def test_concurrent_upgrades_apply_once(pg_schema: PgSchema) -> None:
    engines = [pg_schema.sync_engine() for _ in range(4)]
    try:
        with ThreadPoolExecutor(len(engines)) as pool:
            results = list(pool.map(m.upgrade, engines))
        assert sorted(r.changed for r in results) == [False, False, False, True]
        assert {r.after for r in results} == {HEAD}
    finally:
        for e in engines:
            e.dispose()


def test_cli_migrate_twice(tmp_path: Path) -> None:
    db = str(tmp_path / "cli.db")
    first = runner.invoke(cli.app, ["migrate", "--db", db], env=WIDE)
    assert first.exit_code == 0, first.output
    assert "applied 0001" in first.output and "applied 0002" in first.output
    assert "applied 0003" in first.output
    assert f"revision {HEAD}" in first.output
    second = runner.invoke(cli.app, ["migrate"], env={**WIDE, "FRESHKEEP_DATABASE_URL": db})
    assert second.exit_code == 0, second.output
    assert f"already up to date (revision {HEAD})" in second.output
    quoted = re.search(r"a second run prints `([^`]*)`", GUIDE.read_text())
    assert quoted is not None and quoted[1] in second.output  # the operator guide's words


def test_cli_migrate_triggers_name_a_missing_table(tmp_path: Path) -> None:
    result = runner.invoke(
        cli.app, ["migrate", "--db", str(tmp_path / "t.db"), "--triggers", "x"], env=WIDE
    )
    assert result.exit_code == 2
    assert "no table 'x'" in result.output


def test_cli_migrate_partition_values_are_checked_first(tmp_path: Path) -> None:
    db = str(tmp_path / "p.db")
    for value in ["orders", "orders.", ".customer_id", "orders.customer_id:x", "orders.c:0"]:
        result = runner.invoke(
            cli.app, ["migrate", "--db", db, "--triggers", "orders", "--partition", value], env=WIDE
        )
        assert result.exit_code == 2, (value, result.output)
        assert f"--partition {value!r}: expected TABLE.COLUMN or TABLE.COLUMN:BUCKETS" in (
            result.output
        )
        assert "e.g. --partition orders.customer_id:1024" in result.output
        assert len(result.output.strip().splitlines()) == 1  # before any migration
    alone = runner.invoke(cli.app, ["migrate", "--db", db, "--partition", "a.b"], env=WIDE)
    assert alone.exit_code == 2 and "add --triggers TABLE" in alone.output


def test_cli_migrate_with_partitioned_triggers(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER)")
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY)")
    args = ["migrate", "--db", str(path), "--triggers", "--partition", "orders.customer_id:64"]
    result = runner.invoke(cli.app, args, env=WIDE)
    assert result.exit_code == 0, result.output
    assert "triggers installed on: notes, orders (by customer_id, 64 buckets)" in result.output
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("INSERT INTO orders VALUES (1, 70)")
        conn.commit()
        rows = dict(conn.execute("SELECT source, revision FROM freshkeep_revisions"))
    assert rows == {"table:orders": 1, Partitioned("table:orders", "customer_id", 64).source(70): 1}
    missing = runner.invoke(cli.app, [*args[:-1], "orders.nope"], env=WIDE)
    assert missing.exit_code == 2
    assert "no column 'nope' in table 'orders'" in missing.output


@pytest.mark.postgres
def test_cli_migrate_with_triggers_on_postgres(pg_schema: PgSchema) -> None:
    url = f"{pg_schema.sync_url}?options={quote(f'-csearch_path={pg_schema.name}')}"
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE a (id int)"))
            conn.execute(text("CREATE TABLE b (id int)"))
        args = ["migrate", "--db", url, "--triggers", "a,b"]
        first = runner.invoke(cli.app, args, env=WIDE)
        assert first.exit_code == 0, first.output
        assert "triggers installed on: a, b" in first.output
        again = runner.invoke(cli.app, [*args, "--remove-triggers", "b"], env=WIDE)
        assert again.exit_code == 0, again.output
        assert "already up to date" in again.output
        assert "triggers removed from: b" in again.output
        missing = runner.invoke(cli.app, ["migrate", "--db", url, "--triggers", "nope"], env=WIDE)
        assert missing.exit_code == 2 and "no table 'nope'" in missing.output
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO a VALUES (1)"))
            conn.execute(text("INSERT INTO b VALUES (1)"))
            rows = conn.execute(text("SELECT source, revision FROM freshkeep_revisions"))
            assert {tuple(r) for r in rows} == {("table:a", 1), ("table:a/*", 1)}
    finally:
        engine.dispose()
