"""Reading revisions on SQLite: counters in one query, watermarks in one more, and what a
``MAX(updated_at)`` watermark sees of deletes and what it misses."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, delete, update
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from freshkeep import RevisionSourceError
from freshkeep.integrations.sqlalchemy import SQLAlchemyRevisions, Watermark, table_source
from tests.integration.sa_support import (
    PROJECTS,
    TASKS,
    Task,
    TrackedDb,
    at,
    sqlite_db,
    statement_log,
    tasks_table,
    whole,
)

WM = "watermark:tasks"


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[TrackedDb]:
    async with sqlite_db(tmp_path / "revs.db") as db:
        yield db


def watermarked(engine: AsyncEngine) -> SQLAlchemyRevisions:
    return SQLAlchemyRevisions(
        engine, watermarks={WM: Watermark(tasks_table, tasks_table.c.updated_at)}
    )


async def add_tasks(db: TrackedDb, *stamps: int) -> None:
    async with db.session() as s:
        s.add_all(Task(id=i, title=f"t{i}", updated_at=at(m)) for i, m in enumerate(stamps, 1))
        await s.commit()


async def test_counters_are_read_in_one_query(db: TrackedDb) -> None:
    await add_tasks(db, 0, 1)
    async with db.session() as s:
        await s.execute(update(Task).values(title="x"))
        await s.commit()
    revisions = SQLAlchemyRevisions(db.engine)
    sources = [TASKS, PROJECTS, "table:never_written", "files:elsewhere"]
    with statement_log(db.engine) as log:
        revs = await revisions.read(sources)
    assert revs == {TASKS: 2, PROJECTS: 0, "table:never_written": 0, "files:elsewhere": 0}
    assert len(log.statements) == 1 and "freshkeep_revisions" in log.statements[0]
    assert revisions.queries == 1
    with statement_log(db.engine) as log:
        assert await revisions.read([]) == {}
    assert log.statements == [] and revisions.queries == 1


async def test_watermarks_cost_one_more_query_and_are_strings(db: TrackedDb) -> None:
    await add_tasks(db, 0, 5, 3)
    revisions = watermarked(db.engine)
    with statement_log(db.engine) as log:
        revs = await revisions.read([TASKS, WM])
    assert len(log.statements) == 2 and revisions.queries == 2
    assert revs[TASKS] == 1
    wm = revs[WM]
    assert isinstance(wm, str)
    count, _, latest = wm.partition("@")
    assert int(count) == 3 and latest.startswith(str(at(5).date()))
    with statement_log(db.engine) as log:  # nothing committed since: no query at all
        assert (await revisions.read([WM]))[WM] == wm
    assert log.statements == [] and revisions.skipped == 1
    async with db.session() as s:
        await s.execute(update(Task).where(Task.id == 1).values(updated_at=at(9)))
        await s.commit()
    with statement_log(db.engine) as log:  # watermarks alone: no counter query
        assert (await revisions.read([WM]))[WM] != wm
    assert len(log.statements) == 1


async def test_an_unchanged_sqlite_file_is_not_queried_again(db: TrackedDb) -> None:
    revisions = SQLAlchemyRevisions(db.engine)
    first = await revisions.read([TASKS])
    with statement_log(db.engine) as log:
        for _ in range(5):
            assert await revisions.read([TASKS]) == first
        assert await revisions.read([TASKS, PROJECTS]) == {**first, PROJECTS: 0}  # a new one
    assert len(log.statements) == 1 and revisions.skipped == 5
    await add_tasks(db, 0, 1, 1)  # a commit on another connection: read again
    assert (await revisions.read([TASKS]))[TASKS] == first[TASKS] + 1
    assert revisions.queries == 3
    revisions.close()


async def test_skip_unchanged_false_queries_on_every_read(db: TrackedDb) -> None:
    revisions = SQLAlchemyRevisions(db.engine, skip_unchanged=False)
    first = await revisions.read([TASKS])
    with statement_log(db.engine) as log:
        for _ in range(3):
            assert await revisions.read([TASKS]) == first
    assert len(log.statements) == 3 and revisions.skipped == 0 and revisions.queries == 4
    revisions.close()  # nothing to close: no data version was opened


async def test_a_delete_changes_the_counter_and_the_watermark_only_through_count(
    db: TrackedDb,
) -> None:
    await add_tasks(db, 0, 9, 3)  # task 2 holds MAX(updated_at)
    revisions = watermarked(db.engine)
    before = await revisions.read([TASKS, WM])
    async with db.session() as s:
        await s.execute(delete(Task).where(Task.id == 3))  # not the newest row
        await s.commit()
    after = await revisions.read([TASKS, WM])
    assert after[TASKS] == int(before[TASKS]) + 1
    assert after[WM] != before[WM]
    (count_before, max_before), (count_after, max_after) = (
        str(before[WM]).split("@"),
        str(after[WM]).split("@"),
    )
    assert max_after == max_before  # MAX(updated_at) cannot see a delete...
    assert (int(count_before), int(count_after)) == (3, 2)  # ...only COUNT(*) does


async def test_what_a_watermark_misses_and_a_counter_does_not(db: TrackedDb) -> None:
    await add_tasks(db, 0, 9, 3)
    revisions = watermarked(db.engine)
    start = await revisions.read([TASKS, WM])
    async with db.session() as s:  # a delete and an older insert in one interval
        await s.execute(delete(Task).where(Task.id == 3))
        s.add(Task(id=4, title="late", updated_at=at(1)))
        await s.commit()
    mid = await revisions.read([TASKS, WM])
    assert mid[WM] == start[WM] and mid[TASKS] == int(start[TASKS]) + 1
    async with db.session() as s:  # an update that does not move updated_at
        await s.execute(update(Task).where(Task.id == 1).values(title="renamed"))
        await s.commit()
    end = await revisions.read([TASKS, WM])
    assert end[WM] == start[WM] and end[TASKS] == int(start[TASKS]) + 2


async def test_an_empty_table_has_a_watermark_and_counters_start_at_zero(db: TrackedDb) -> None:
    revs = await watermarked(db.engine).read([TASKS, WM])
    assert revs == {TASKS: 0, WM: "0@None"}


async def test_bump_and_create_table_through_the_revision_source(db: TrackedDb) -> None:
    revisions = SQLAlchemyRevisions(db.engine)
    await revisions.create_table()  # idempotent
    assert await revisions.bump([TASKS, TASKS, PROJECTS]) == {TASKS: 1, PROJECTS: 1}
    assert await revisions.bump([TASKS]) == {TASKS: 2}
    assert await db.counters() == {TASKS: 2, PROJECTS: 1}
    assert whole(await db.keeper.bump(TASKS)) == {TASKS: 3}  # a keeper bumps through its source
    assert db.keeper.tracker.snapshot[TASKS] == 3 and whole(db.published[-1]) == {TASKS: 3}
    assert table_source(Task) == table_source(tasks_table) == table_source("tasks") == TASKS


async def test_a_sync_engine_reads_the_same(db: TrackedDb, tmp_path: Path) -> None:
    await add_tasks(db, 0)
    engine = create_engine(f"sqlite:///{tmp_path / 'revs.db'}")
    try:
        revisions = SQLAlchemyRevisions(engine)
        assert await revisions.read([TASKS, PROJECTS]) == {TASKS: 1, PROJECTS: 0}
        assert await revisions.bump([PROJECTS]) == {PROJECTS: 1}
    finally:
        engine.dispose()


async def test_a_missing_revision_table_is_a_revision_source_error(tmp_path: Path) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}")
    try:
        with pytest.raises(RevisionSourceError, match="freshkeep_revisions"):
            await SQLAlchemyRevisions(engine).read([TASKS])
    finally:
        await engine.dispose()
