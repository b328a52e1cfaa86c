"""Importing a legacy per-file processing state table into freshkeep's (per processor, item):
from an empty database, from a legacy one, twice; in one transaction; on SQLite and
PostgreSQL; ``freshkeep migrate --import-processing-state``."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import pytest
from sqlalchemy import Engine, create_engine, inspect, text
from sqlalchemy.ext.asyncio import create_async_engine
from typer.testing import CliRunner

from freshkeep import cli
from freshkeep.exceptions import ConfigurationError
from freshkeep.processing import Item, ItemState, Outcome, Pipeline, ProcessContext, Processor
from freshkeep.processing.legacy import (
    BATCH,
    import_processing_state,
    import_processing_state_async,
)
from freshkeep.processing.sql import PROCESSING_STATE_TABLE, SQLProcessingState
from freshkeep.sql import migrate as m
from tests.conftest import PgSchema
from tests.integration.test_migrations import HEAD

runner = CliRunner()
WIDE = {"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
NOW = 1_750_000_000.0

LEGACY = """CREATE TABLE session_state (
    path VARCHAR(1024) PRIMARY KEY,
    mtime_ns BIGINT,
    size BIGINT,
    content_hash VARCHAR(128),
    processed_at DOUBLE PRECISION,
    counts TEXT,
    last_error TEXT,
    attempts INTEGER,
    retry_at DOUBLE PRECISION,
    owner TEXT
)"""


@dataclass
class Db:
    """A database to import into: ``target`` for the import, ``engine`` to set up and look."""

    target: str | Engine
    engine: Engine

    def sql(self, *statements: str) -> None:
        with self.engine.begin() as conn:
            for statement in statements:
                conn.execute(text(statement))

    def has(self, table: str) -> bool:
        return inspect(self.engine).has_table(table)

    def rows(self, table: str) -> set[tuple[object, ...]]:
        with self.engine.connect() as conn:
            return {tuple(r) for r in conn.execute(text(f"SELECT * FROM {table}"))}

    def states(self, processor: str) -> dict[str, ItemState]:
        return asyncio.run(SQLProcessingState(self.engine).load(processor))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    if request.param == "sqlite":
        path = tmp_path / "legacy.db"
        engine = create_engine(f"sqlite:///{path}")
        yield Db(str(path), engine)  # a URL: freshkeep opens it with real transactions
    else:
        pg: PgSchema = request.getfixturevalue("pg_schema")
        engine = pg.sync_engine()
        yield Db(engine, engine)
    engine.dispose()


def test_a_fresh_install_has_nothing_to_import(db: Db) -> None:
    first = import_processing_state(db.target, "session_state", processor="usage")
    assert (first.found, first.read, first.imported, first.dropped) == (False, 0, 0, False)
    assert first.migration is not None and first.migration.after == HEAD
    assert first.migration.changed
    again = import_processing_state(db.target, "session_state", processor="usage")
    assert again.migration is not None and not again.migration.changed
    assert (again.found, again.imported) == (False, 0)
    assert db.has(PROCESSING_STATE_TABLE) and db.rows(PROCESSING_STATE_TABLE) == set()


def test_legacy_rows_are_imported_once_and_the_table_dropped(db: Db) -> None:
    db.sql(
        LEGACY,
        "INSERT INTO session_state VALUES ('/srv/sessions/alice/a.jsonl', 1700000000000000001, "
        "120, 'aa11', 1700000100.5, '{\"input_tokens\": 7, \"tool_calls\": 2}', NULL, NULL, "
        "NULL, 'x')",
        "INSERT INTO session_state VALUES ('/srv/sessions/bob/b.jsonl', 1700000000000000002, "
        "30, 'bb22', NULL, NULL, 'ValueError: line 3', 2, 1700000900.0, 'y')",
        "INSERT INTO session_state VALUES ('carol\\c.jsonl', NULL, NULL, NULL, NULL, NULL, NULL,"
        " NULL, NULL, NULL)",
        "INSERT INTO session_state VALUES ('./dan/d.jsonl', 5, 6, 'dd', 1.0, '{}', NULL, 0, "
        "NULL, NULL)",
        "INSERT INTO session_state VALUES ('   ', 1, 1, NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
    )
    # freshkeep ran already for this processor: its own row of dan's file is kept; other
    # processors' rows are untouched.
    m.upgrade(db.engine)
    mine = ItemState("usage", "dan/d.jsonl", 9, 9, "new", 2.0, {"entries": 1})
    theirs = ItemState("evidence", "alice/a.jsonl", 1, 1, "e", 3.0, {})
    asyncio.run(SQLProcessingState(db.engine).save([mine, theirs]))

    done = import_processing_state(
        db.target, "session_state", processor="usage", strip_prefix="/srv/sessions/"
    )
    assert (done.found, done.read, done.imported, done.kept, done.skipped) == (True, 5, 3, 1, 1)
    assert not db.has("session_state")
    states = db.states("usage")
    assert states == {
        "alice/a.jsonl": ItemState(
            "usage",
            "alice/a.jsonl",
            1700000000000000001,
            120,
            "aa11",
            1700000100.5,
            {"input_tokens": 7, "tool_calls": 2},
        ),
        "bob/b.jsonl": ItemState(
            "usage",
            "bob/b.jsonl",
            1700000000000000002,
            30,
            "bb22",
            None,
            {},
            "ValueError: line 3",
            2,
            1700000900.0,
        ),
        "carol/c.jsonl": ItemState("usage", "carol/c.jsonl", -1, -1, None, None, {}),
        "dan/d.jsonl": mine,
    }
    assert db.states("evidence") == {"alice/a.jsonl": theirs}

    again = import_processing_state(
        db.target, "session_state", processor="usage", strip_prefix="/srv/sessions/"
    )
    assert (again.found, again.read, again.imported) == (False, 0, 0)
    assert db.states("usage") == states  # run twice: the same result


def test_other_column_names_and_timestamps(db: Db) -> None:
    db.sql(
        "CREATE TABLE files_done (file VARCHAR(500) PRIMARY KEY, mtime DOUBLE PRECISION, "
        "size INTEGER, sha256 VARCHAR(64), error TEXT, retry_at TIMESTAMP)",
        "INSERT INTO files_done VALUES ('a.txt', 1700000000.25, 3, 'h1', NULL, NULL)",
        "INSERT INTO files_done VALUES ('b.txt', 1700000001, 4, NULL, 'boom', "
        "'2024-01-02 03:04:05')",
    )
    before = datetime.now(UTC).timestamp()
    done = import_processing_state(db.target, "files_done", processor="lines")
    assert (done.read, done.imported) == (2, 2)
    states = db.states("lines")
    a, b = states["a.txt"], states["b.txt"]
    assert (a.mtime_ns, a.size, a.content_hash, a.last_error, a.attempts) == (
        1700000000250000000,
        3,
        "h1",
        None,
        0,
    )
    assert a.processed_at is not None and a.processed_at >= before  # no column: the import
    assert (b.last_error, b.attempts, b.processed_at) == ("boom", 1, None)
    assert b.retry_at == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()


def test_a_bad_row_changes_nothing(db: Db) -> None:
    """One transaction: the migrations, every batch copied so far, the drop: all or nothing."""
    assert m.upgrade(db.engine, "0002").after == "0002"
    db.sql(LEGACY)
    with db.engine.begin() as conn:
        conn.execute(
            text("INSERT INTO session_state (path, size, counts) VALUES (:p, 1, '{}')"),
            [{"p": f"f{i:05d}.txt"} for i in range(2 * BATCH + 10)],
        )
        conn.execute(text("INSERT INTO session_state (path, counts) VALUES ('zz.txt', '[1, 2]')"))
    with pytest.raises(ConfigurationError, match=r"legacy row 'zz.txt': counts is not a JSON"):
        import_processing_state(db.target, "session_state", processor="usage")
    assert m.current(db.engine) == "0002"  # the upgrade was rolled back too
    assert not db.has(PROCESSING_STATE_TABLE)
    assert len(db.rows("session_state")) == 2 * BATCH + 11

    # Fixed, it goes through: two full batches and a part.
    db.sql("UPDATE session_state SET counts = '{\"n\": 1}' WHERE path = 'zz.txt'")
    done = import_processing_state(db.target, "session_state", processor="usage")
    assert (done.imported, done.migration and done.migration.after) == (2 * BATCH + 11, HEAD)
    assert db.states("usage")["zz.txt"].counts == {"n": 1}


def test_a_table_that_does_not_fit_is_refused(db: Db) -> None:
    db.sql("CREATE TABLE other_state (name TEXT, done INTEGER)")
    with pytest.raises(ConfigurationError, match="no path column"):
        import_processing_state(db.target, "other_state", processor="usage")
    assert db.has("other_state") and not db.has(PROCESSING_STATE_TABLE)
    for own in (PROCESSING_STATE_TABLE, "freshkeep_alembic_version", "x.freshkeep_revisions"):
        with pytest.raises(ConfigurationError, match="freshkeep's own tables"):
            import_processing_state(db.target, own, processor="usage")
    with pytest.raises(ConfigurationError, match="processor"):
        import_processing_state(db.target, "other_state", processor="")


class Lines(Processor):
    def __init__(self, root: Path) -> None:
        self.name, self.root, self.pattern = "lines", root, "*.txt"
        self.seen: list[str] = []

    async def process(self, item: Item, ctx: ProcessContext) -> Outcome:
        self.seen.append(item.key)
        return Outcome({"lines": item.path.read_bytes().count(b"\n")})


async def test_imported_files_are_not_processed_again(tmp_path: Path) -> None:
    """The point of the import: a file the earlier service processed, unchanged since, is
    hashed once and found unchanged, not processed again."""
    root = tmp_path / "files"
    root.mkdir()
    digests = {}
    for name in ("a.txt", "b.txt", "c.txt"):
        (root / name).write_text(f"{name}\n")
        os.utime(root / name, ns=(10**18, 10**18))
        digests[name] = hashlib.sha256((root / name).read_bytes()).hexdigest()
    url = f"sqlite+aiosqlite:///{tmp_path / 'p.db'}"
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE done (path TEXT, content_hash TEXT)"))
            await conn.execute(
                text("INSERT INTO done VALUES (:p, :h)"),
                [
                    {"p": str(root / "a.txt"), "h": digests["a.txt"]},
                    {"p": str(root / "b.txt"), "h": "an older content"},
                ],
            )
        done = await import_processing_state_async(
            engine, "done", processor="lines", strip_prefix=str(root)
        )
        assert done.imported == 2
        pipeline = Pipeline(SQLProcessingState(engine), racy_window=0)
        lines = Lines(root)
        pipeline.register(lines)
        stats = await pipeline.run("lines")
        assert (stats.unchanged, stats.processed, stats.hashed) == (1, 2, 3)
        assert sorted(lines.seen) == ["b.txt", "c.txt"]
        assert (await pipeline.run("lines")).skipped == 3  # the real mtimes are recorded now
        # an async URL from async code, a second time: nothing left to import
        again = await import_processing_state_async(url, "done", processor="lines")
        assert not again.found
    finally:
        await engine.dispose()


@pytest.mark.postgres
async def test_postgres_async_engine(pg_schema: PgSchema) -> None:
    engine = pg_schema.async_engine()
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE done (path TEXT, size BIGINT)"))
            await conn.execute(text("INSERT INTO done VALUES ('a', 1), ('b', 2)"))
        done = await import_processing_state_async(engine, "done", processor="p")
        assert (done.found, done.imported) == (True, 2)
        assert not (await import_processing_state_async(engine, "done", processor="p")).found
        states = await SQLProcessingState(engine).load("p")
        assert {k: s.size for k, s in states.items()} == {"a": 1, "b": 2}
    finally:
        await engine.dispose()


def test_sync_api_refuses_an_async_target_in_a_loop() -> None:
    async def inside() -> None:
        import_processing_state("sqlite+aiosqlite://", "t", processor="p")

    with pytest.raises(ConfigurationError, match="import_processing_state_async"):
        asyncio.run(inside())


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def cli_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Engine]]:
    if request.param == "sqlite":
        path = tmp_path / "cli.db"
        engine = create_engine(f"sqlite:///{path}")
        yield str(path), engine
    else:
        pg: PgSchema = request.getfixturevalue("pg_schema")
        url = f"{pg.sync_url}?options={quote(f'-csearch_path={pg.name}')}"
        engine = create_engine(url)
        yield url, engine
    engine.dispose()


def test_cli_migrate_imports_processing_state(cli_db: tuple[str, Engine]) -> None:
    url, engine = cli_db
    args = ["migrate", "--db", url, "--import-processing-state", "session_state"]
    fresh = runner.invoke(cli.app, [*args, "--processor", "usage"], env=WIDE)
    assert fresh.exit_code == 0, fresh.output
    assert f"freshkeep tables at revision {HEAD}" in fresh.output
    assert "no table 'session_state': no processing state to import" in fresh.output

    with engine.begin() as conn:
        conn.execute(text(LEGACY))
        conn.execute(
            text("INSERT INTO session_state (path, size, counts) VALUES ('/r/a', 1, '{}')")
        )
        conn.execute(text("INSERT INTO session_state (path, size) VALUES ('/r/b', 2)"))
    first = runner.invoke(
        cli.app, [*args, "--processor", "usage", "--strip-prefix", "/r"], env=WIDE
    )
    assert first.exit_code == 0, first.output
    assert f"already up to date (revision {HEAD})" in first.output
    assert "imported 2 row(s) of 'session_state' as processor 'usage'" in first.output
    assert "'session_state' dropped" in first.output
    second = runner.invoke(cli.app, [*args, "--processor", "usage"], env=WIDE)
    assert second.exit_code == 0 and "no table 'session_state'" in second.output
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT processor, item, size FROM freshkeep_processing_state"))
        assert sorted(tuple(r) for r in rows) == [("usage", "a", 1), ("usage", "b", 2)]

    alone = runner.invoke(cli.app, args, env=WIDE)
    assert alone.exit_code == 2 and "go together" in alone.output
    strip = runner.invoke(cli.app, ["migrate", "--db", url, "--strip-prefix", "/r"], env=WIDE)
    assert strip.exit_code == 2 and "--import-processing-state" in strip.output
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE odd (x INTEGER)"))
    odd = runner.invoke(
        cli.app,
        ["migrate", "--db", url, "--import-processing-state", "odd", "--processor", "p"],
        env=WIDE,
    )
    assert odd.exit_code == 2 and "no path column" in odd.output
