"""Raw SQL through a tracked session or engine is attributed to its tables (rule 8).

Each statement form runs on SQLite and on PostgreSQL, committed, inside a savepoint, and rolled
back. Counters are read from the database on a connection of their own.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text

from tests.conftest import PgSchema
from tests.integration.sa_support import (
    PROJECTS,
    TAGS,
    TASK_TAGS,
    TASKS,
    TrackedDb,
    create_schema,
    sqlite_db,
    tracked,
)

SEED = [
    "INSERT INTO projects (id, name) VALUES (1, 'p')",
    "INSERT INTO tasks (id, title, project_id, updated_at) "
    "VALUES (1, 'a', 1, '2024-01-01'), (2, 'b', 1, '2024-01-01')",
]

COMMON = [
    ("INSERT INTO tasks (id, title, updated_at) VALUES (10, 'x', '2024-01-01')", {TASKS}),
    ("UPDATE tasks SET title = 'y' WHERE id = 1", {TASKS}),
    ("DELETE FROM tasks WHERE id = 2", {TASKS}),
    (
        "INSERT INTO tasks (id, title, updated_at) VALUES (1, 'z', '2024-01-01') "
        "ON CONFLICT (id) DO UPDATE SET title = 'z'",
        {TASKS},
    ),
    ("UPDATE projects SET name = 'q'", {PROJECTS}),
    ("WITH ids AS (SELECT 1 AS id) DELETE FROM tasks WHERE id IN (SELECT id FROM ids)", {TASKS}),
    ("INSERT INTO notes (id, body) VALUES (1, 'untracked')", set()),
    ("SELECT count(*) FROM tasks", set()),
]
SQLITE_ONLY = [
    ("REPLACE INTO tasks (id, title, updated_at) VALUES (1, 'r', '2024-01-01')", {TASKS}),
    ("INSERT OR REPLACE INTO tasks (id, title, updated_at) VALUES (1, 'r', '2024-01-01')", {TASKS}),
    ("DELETE FROM tasks", {TASKS}),
]
POSTGRES_ONLY = [
    (
        "WITH gone AS (DELETE FROM tasks WHERE id = 1 RETURNING id) SELECT count(*) FROM gone",
        {TASKS},
    ),
    ("TRUNCATE tasks, projects CASCADE", {TASKS, PROJECTS}),
    (
        "MERGE INTO projects p USING (SELECT 1 AS id) s ON p.id = s.id "
        "WHEN MATCHED THEN UPDATE SET name = 'm'",
        {PROJECTS},
    ),
]


@pytest.fixture(params=["sqlite", "postgres"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[TrackedDb]:
    if request.param == "sqlite":
        async with sqlite_db(tmp_path / "raw.db") as db:
            db.dialect = "sqlite"  # type: ignore[attr-defined]
            yield db
        return
    schema: PgSchema = request.getfixturevalue("pg_schema")
    engine = schema.async_engine()
    try:
        await create_schema(engine)
        async with tracked(engine) as db:
            db.dialect = "postgresql"  # type: ignore[attr-defined]
            yield db
    finally:
        await engine.dispose()


def forms(db: TrackedDb) -> list[tuple[str, set[str]]]:
    extra = SQLITE_ONLY if db.dialect == "sqlite" else POSTGRES_ONLY  # type: ignore[attr-defined]
    return COMMON + extra


async def seed(db: TrackedDb) -> dict[str, int]:
    async with db.engine.begin() as conn:
        for sql in SEED:
            await conn.execute(text(sql))
    return await db.counters()


def moved(before: dict[str, int], after: dict[str, int]) -> set[str]:
    return {s for s, r in after.items() if r != before.get(s, 0)}


async def test_each_form_bumps_its_tables_at_commit_and_is_read_your_writes(
    db: TrackedDb,
) -> None:
    for sql, expected in forms(db):
        before = await seed(db) if not await db.counters() else await db.counters()
        async with db.session() as s:
            await s.execute(text(sql))
            assert await db.counters() == before, sql  # bumped at commit, not before
            await s.commit()
        after = await db.counters()
        assert moved(before, after) == expected, sql
        for source in expected:  # this process knows at once
            assert db.keeper.tracker.floor[source] == after[source], sql
        async with db.engine.begin() as conn:  # reset the rows for the next form
            await conn.execute(text("DELETE FROM tasks"))
            await conn.execute(text("DELETE FROM projects"))
            for seed_sql in SEED:
                await conn.execute(text(seed_sql))


async def test_a_rolled_back_transaction_bumps_nothing(db: TrackedDb) -> None:
    await seed(db)
    for sql, _ in forms(db):
        before = await db.counters()
        async with db.session() as s:
            await s.execute(text(sql))
            await s.rollback()
        assert await db.counters() == before, sql


async def test_a_write_in_a_savepoint_is_bumped_at_the_outer_commit(db: TrackedDb) -> None:
    before = await seed(db)
    async with db.session() as s:
        async with s.begin_nested():
            await s.execute(text("UPDATE tasks SET title = 'sp' WHERE id = 1"))
        assert await db.counters() == before
        await s.commit()
    assert moved(before, await db.counters()) == {TASKS}
    before = await db.counters()
    async with db.session() as s:
        nested = await s.begin_nested()
        await s.execute(text("UPDATE projects SET name = 'gone'"))
        await nested.rollback()
        await s.commit()
    # The savepoint's write was undone; its table may be bumped anyway: over, never under.
    assert moved(before, await db.counters()) <= {PROJECTS}


async def test_driver_sql_through_the_session_is_attributed(db: TrackedDb) -> None:
    before = await seed(db)
    async with db.session() as s:
        conn = await s.connection()
        await conn.exec_driver_sql("UPDATE tasks SET title = 'drv' WHERE id = 1")
        await s.commit()
    assert moved(before, await db.counters()) == {TASKS}
    assert db.keeper.tracker.floor[TASKS] == (await db.counters())[TASKS]


async def test_raw_sql_on_the_engine_bumps_in_its_own_transaction(db: TrackedDb) -> None:
    before = await seed(db)
    async with db.engine.begin() as conn:
        await conn.execute(text("UPDATE tasks SET title = 'e'"))
        await conn.exec_driver_sql("UPDATE projects SET name = 'e'")
    assert moved(before, await db.counters()) == {TASKS, PROJECTS}
    before = await db.counters()
    async with db.engine.connect() as conn:
        await conn.execute(text("DELETE FROM tasks"))
        await conn.rollback()
    assert await db.counters() == before


@pytest.mark.postgres
async def test_an_unknown_target_bumps_every_tracked_table_and_is_counted(
    pg_schema: PgSchema, caplog: pytest.LogCaptureFixture
) -> None:
    engine = pg_schema.async_engine()
    try:
        await create_schema(engine)
        async with tracked(engine) as db:
            before = await seed(db)
            opaque = "DO $$ BEGIN UPDATE tasks SET title = 'do'; END $$"
            with caplog.at_level(logging.WARNING, logger="freshkeep.sqlalchemy"):
                for _ in range(2):
                    async with db.session() as s:
                        await s.execute(text(opaque))
                        await s.commit()
            assert moved(before, await db.counters()) == {TASKS, PROJECTS, TAGS, TASK_TAGS}
            assert db.tracking.unattributed == db.keeper.stats.unattributed_writes == 2
            assert db.keeper.snapshot().unattributed_writes == 2
            assert sum("cannot tell which tables" in r.message for r in caplog.records) == 1
    finally:
        await engine.dispose()


async def test_names_match_whatever_their_case(db: TrackedDb) -> None:
    before = await seed(db)
    async with db.session() as s:
        await s.execute(text("UPDATE TASKS SET title = 'upper' WHERE id = 1"))
        await s.commit()
    assert moved(before, await db.counters()) == {TASKS}


async def test_an_unknown_target_in_a_process_without_views_bumps_the_listed_tables(
    tmp_path: Path,
) -> None:
    from sqlalchemy.ext.asyncio import async_sessionmaker

    from freshkeep import Keeper
    from freshkeep.integrations.sqlalchemy import track
    from freshkeep.sql.revisions import SQLAlchemyRevisions
    from tests.integration.sa_support import db_counters, sqlite_engine

    engine = sqlite_engine(tmp_path / "worker.db")
    try:
        await create_schema(engine)
        keeper = Keeper(SQLAlchemyRevisions(engine))  # a worker: no view at all
        tracking = track(keeper, async_sessionmaker(engine))  # every table
        await keeper.start()  # lists the database's tables
        async with engine.begin() as conn:
            for sql in SEED:
                await conn.execute(text(sql))
        assert TASKS in await db_counters(engine)  # the seed outside sessions was bumped
        bumped = tracking.sources_of_sql("CALL refresh()", "sqlite")  # an opaque write
        assert {TASKS, PROJECTS, TAGS, TASK_TAGS, "table:notes"} <= bumped
        tracking.remove()
        await keeper.aclose()
    finally:
        await engine.dispose()


async def test_writes_outside_sessions_never_fail_for_a_missing_revision_table(
    tmp_path: Path,
) -> None:
    from sqlalchemy.ext.asyncio import async_sessionmaker

    from freshkeep import Keeper
    from freshkeep.integrations.sqlalchemy import track
    from freshkeep.sql.revisions import SQLAlchemyRevisions
    from tests.integration.sa_support import Base, sqlite_engine

    engine = sqlite_engine(tmp_path / "unmigrated.db")
    try:
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)  # no freshkeep_revisions
        keeper = Keeper(SQLAlchemyRevisions(engine))
        tracking = track(keeper, async_sessionmaker(engine))
        async with engine.begin() as conn:
            for sql in SEED:
                await conn.execute(text(sql))  # seen, not bumped, not failed
            rows = (await conn.execute(text("SELECT count(*) FROM tasks"))).scalar_one()
        assert rows == 2
        tracking.remove()
        await keeper.aclose()
    finally:
        await engine.dispose()
