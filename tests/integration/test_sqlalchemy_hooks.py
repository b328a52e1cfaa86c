"""The write hooks on SQLite (aiosqlite and pysqlite): what bumps, what does not, and when.

Every assertion on counters reads the ``freshkeep_revisions`` table on a connection of its own,
so it checks what was committed, not what the keeper believes; the keeper's snapshot, its
read-your-writes floor and what its bus published are then checked against it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, delete, insert, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from freshkeep import Keeper, LocalBus
from freshkeep.integrations.sqlalchemy import SQLAlchemyRevisions, bump, track
from tests.integration.sa_support import (
    PROJECTS,
    TAGS,
    TASK_TAGS,
    TASKS,
    TRACKED,
    Base,
    Note,
    Project,
    Tag,
    Task,
    TrackedDb,
    at,
    sqlite_db,
    statement_log,
    sync_db_counters,
    tasks_table,
    titles,
    whole,
)


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[TrackedDb]:
    async with sqlite_db(tmp_path / "hooks.db") as db:
        yield db


async def assert_agrees(db: TrackedDb, expected: dict[str, int]) -> None:
    """The database holds ``expected`` and the keeper already knows it (read-your-writes)."""
    assert await db.counters() == expected
    snapshot, floor = whole(db.keeper.tracker.snapshot), whole(db.keeper.tracker.floor)
    assert {s: snapshot[s] for s in expected} == expected
    assert {s: floor[s] for s in expected} == expected


async def test_insert_update_delete_bump_at_commit_and_publish(db: TrackedDb) -> None:
    async with db.session() as s:
        s.add(Project(id=1, name="p", tasks=[Task(id=1, title="a"), Task(id=2, title="b")]))
        await s.flush()
        assert await db.counters() == {}  # a flush bumps nothing (rule 2)
        assert [whole(p) for p in db.published] == []
        await s.commit()
        # commit() has returned: the keeper has the revisions already (no probe, no bus wait).
        await assert_agrees(db, {PROJECTS: 1, TASKS: 1})
        assert [whole(p) for p in db.published] == [{PROJECTS: 1, TASKS: 1}]

        task = await s.get(Task, 1)
        assert task is not None
        task.title = "a2"
        await s.commit()
        await assert_agrees(db, {PROJECTS: 1, TASKS: 2})

        await s.delete(task)
        await s.commit()
        await assert_agrees(db, {PROJECTS: 1, TASKS: 3})
    assert [whole(p) for p in db.published] == [{PROJECTS: 1, TASKS: 1}, {TASKS: 2}, {TASKS: 3}]
    assert db.keeper.stats.commits == 3


async def test_the_bump_runs_in_the_writing_transaction_before_its_commit(db: TrackedDb) -> None:
    with statement_log(db.engine) as log:
        async with db.session() as s:
            s.add(Task(id=1, title="a"))
            await s.commit()
    conns = {conn for conn, _ in log.entries}
    assert len(conns) == 1, "the data and the counter were written on different connections"
    kinds = [s.split(" (")[0][:32] for _, s in log.entries]
    assert kinds == ["INSERT INTO tasks", "INSERT INTO freshkeep_revisions", "COMMIT"]


async def test_read_your_writes_through_a_view_without_probing(db: TrackedDb) -> None:
    async def build(ctx: object) -> dict[str, str]:
        return await titles(db.engine)

    view = db.keeper.view("titles", build, sources=[TASKS])
    assert db.keeper.probe == "interval"  # the hooks push revisions
    assert (await view.get()).status == "miss"
    assert (await view.get()).status == "hit"
    probes = db.keeper.tracker.probes
    async with db.session() as s:
        s.add(Task(id=1, title="mine"))
        await s.commit()
    read = await view.get()
    assert (read.status, read.value) == ("miss", {"1": "mine"})
    assert db.keeper.tracker.probes == probes  # learned from the hook, not from the database


async def test_untracked_models_and_no_op_updates_do_not_bump(db: TrackedDb) -> None:
    async with db.session() as s:
        s.add(Task(id=1, title="a"))
        await s.commit()
    before = await db.counters()
    published = len(db.published)
    async with db.session() as s:
        s.add(Note(id=1, body="untracked"))
        await s.commit()
        task = await s.get(Task, 1)
        assert task is not None
        task.title = "a"  # the same value: no UPDATE, no bump
        await s.commit()
        await s.execute(update(Note).values(body="still untracked"))
        await s.commit()
    assert await db.counters() == before
    assert len(db.published) == published


async def test_many_to_many_rows_bump_the_association_table(db: TrackedDb) -> None:
    async with db.session() as s:
        s.add_all([Task(id=1, title="a", tags=[Tag(id=1, name="red")]), Task(id=2, title="b")])
        await s.commit()
        await assert_agrees(db, {TASKS: 1, TAGS: 1, TASK_TAGS: 1})
        task, tag = await s.get(Task, 2), await s.get(Tag, 1)
        assert task is not None and tag is not None
        await s.refresh(task, ["tags"])
        task.tags.append(tag)  # only an association row is written
        await s.commit()
        await assert_agrees(db, {TASKS: 1, TAGS: 1, TASK_TAGS: 2})
        await s.delete(task)  # its association row goes with it
        await s.commit()
        await assert_agrees(db, {TASKS: 2, TAGS: 1, TASK_TAGS: 3})


async def test_moving_a_child_through_a_collection_bumps_the_child_table(db: TrackedDb) -> None:
    async with db.session() as s:
        s.add_all(
            [Project(id=1, name="p1", tasks=[Task(id=1, title="a")]), Project(id=2, name="p2")]
        )
        await s.commit()
        p1, p2 = await s.get(Project, 1), await s.get(Project, 2)
        assert p1 is not None and p2 is not None
        await s.refresh(p1, ["tasks"])
        await s.refresh(p2, ["tasks"])
        task = p1.tasks.pop()  # only the parents' collections change...
        p2.tasks.append(task)
        await s.commit()
    # ...but the UPDATE hits tasks (its foreign key); projects' rows did not change.
    await assert_agrees(db, {PROJECTS: 1, TASKS: 2})


async def test_orm_bulk_and_core_dml_through_the_session_bump(db: TrackedDb) -> None:
    statements = [
        insert(Task).values(id=1, title="a", updated_at=at(0)),
        update(Task).where(Task.id == 1).values(title="b"),
        insert(tasks_table).values(id=2, title="core", updated_at=at(0)),
        update(tasks_table).where(tasks_table.c.id == 2).values(title="core2"),
        delete(Task).where(Task.id == 2),
        delete(tasks_table).where(tasks_table.c.id == 99),  # no row: over-invalidation is fine
    ]
    for n, stmt in enumerate(statements, start=1):
        async with db.session() as s:
            await s.execute(stmt)
            await s.commit()
        await assert_agrees(db, {TASKS: n})
    async with db.session() as s:  # ORM bulk INSERT with a list of parameter sets
        await s.execute(insert(Task), [{"id": 10, "title": "x"}, {"id": 11, "title": "y"}])
        await s.commit()
    await assert_agrees(db, {TASKS: len(statements) + 1})
    assert await titles(db.engine) == {"1": "b", "10": "x", "11": "y"}


async def test_legacy_bulk_methods_and_the_sessions_connection_bump(db: TrackedDb) -> None:
    """Regression: these write without a flush and without an ORM execute event."""
    async with db.session() as s:
        await s.run_sync(lambda sync: sync.bulk_insert_mappings(Task, [{"id": 1, "title": "a"}]))
        await s.commit()
        await assert_agrees(db, {TASKS: 1})
        await s.run_sync(lambda sync: sync.bulk_save_objects([Project(id=1, name="p")]))
        await s.commit()
        await assert_agrees(db, {TASKS: 1, PROJECTS: 1})
        await s.run_sync(lambda sync: sync.bulk_update_mappings(Task, [{"id": 1, "title": "b"}]))
        await s.commit()
        await assert_agrees(db, {TASKS: 2, PROJECTS: 1})
        conn = await s.connection()
        await conn.execute(insert(tasks_table).values(id=2, title="c", updated_at=at(0)))
        await s.commit()
        await assert_agrees(db, {TASKS: 3, PROJECTS: 1})
        alias = tasks_table.alias("t")
        await s.execute(update(alias).where(alias.c.id == 2).values(title="d"))
        await s.commit()
        await assert_agrees(db, {TASKS: 4, PROJECTS: 1})
    assert await titles(db.engine) == {"1": "b", "2": "d"}


async def test_writes_outside_tracked_sessions_bump_in_their_own_transaction(
    db: TrackedDb,
) -> None:
    async with db.session() as s:
        await s.connection()  # a tracked session has begun its transaction meanwhile
        async with db.engine.begin() as conn:  # same engine, not through the session
            await conn.execute(insert(tasks_table).values(id=1, title="x", updated_at=at(0)))
        assert await db.counters() == {TASKS: 1}  # committed with the row
        s.add(Project(id=1, name="p"))
        await s.commit()
    assert await db.counters() == {TASKS: 1, PROJECTS: 1}
    assert whole(db.keeper.tracker.floor) == {PROJECTS: 1}  # read-your-writes for the session's
    # Not published: the keeper learns it at its next resync, like another program's write.
    assert TASKS not in whole(db.keeper.tracker.snapshot)
    async with db.engine.begin() as conn:
        await conn.execute(insert(tasks_table).values(id=2, title="y", updated_at=at(0)))
        await conn.rollback()
    assert await db.counters() == {TASKS: 1, PROJECTS: 1}  # a rollback takes the bump back


async def test_raw_sql_is_attributed_and_bump_marks_more(db: TrackedDb) -> None:
    async with db.session() as s:
        await s.execute(
            text("INSERT INTO tasks (id, title, updated_at) VALUES (1, 'raw', :t)"), {"t": at(0)}
        )
        assert await db.counters() == {}  # attributed now, bumped at commit
        await s.commit()
    await assert_agrees(db, {TASKS: 1})  # read-your-writes
    async with db.session() as s:
        await s.execute(text("UPDATE tasks SET title = 'raw2'"))
        bump(s, TASKS)  # marking what is already seen bumps it once
        await s.commit()
    await assert_agrees(db, {TASKS: 2})
    async with db.session() as s:
        await s.execute(text("SELECT count(*) FROM projects"))
        bump(s, Project, "tags")  # a mapped class and a bare table name work too
        await s.commit()
    await assert_agrees(db, {TASKS: 2, PROJECTS: 1, TAGS: 1})


async def test_sync_session_bumps_and_publishes(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'sync.db'}")
    try:
        Base.metadata.create_all(engine)
        revisions = SQLAlchemyRevisions(engine)
        await revisions.create_table()
        keeper = Keeper(revisions, bus=LocalBus())
        published: list[dict[str, object]] = []
        keeper.bus.subscribe(lambda revs, origin: published.append(dict(revs)))
        maker = sessionmaker(engine, expire_on_commit=False)
        tracking = track(keeper, maker, models=TRACKED)
        with maker() as s:
            s.add(Task(id=1, title="a"))
            s.commit()
            assert keeper.tracker.snapshot[TASKS] == keeper.tracker.floor[TASKS] == 1
            task = s.get(Task, 1)
            assert task is not None
            task.title = "b"
            s.commit()
            s.delete(task)
            s.commit()
            s.add(Note(id=1, body="n"))
            s.commit()
        assert sync_db_counters(engine) == {TASKS: 3}
        assert await revisions.read([TASKS, PROJECTS]) == {TASKS: 3, PROJECTS: 0}
        assert [whole(p) for p in published] == [{TASKS: 1}, {TASKS: 2}, {TASKS: 3}]
        with Session(engine) as other:  # not made by the tracked factory, on its engine
            other.add(Task(id=2, title="c"))
            other.commit()
        assert sync_db_counters(engine) == {TASKS: 4}  # bumped in its own transaction
        assert whole(published[-1]) == {TASKS: 3}  # not published: seen at the next resync
        tracking.remove()
        with maker() as s:
            s.execute(update(Task).values(title="d"))
            s.commit()
        assert sync_db_counters(engine) == {TASKS: 4}
        await keeper.aclose()
    finally:
        engine.dispose()


async def test_an_async_sessionmaker_keeps_its_own_sync_session_class(tmp_path: Path) -> None:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

    class AppSession(Session):
        pass

    class AppAsyncSession(AsyncSession):
        sync_session_class = AppSession

    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'cls.db'}")
    try:
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        revisions = SQLAlchemyRevisions(engine)
        await revisions.create_table()
        keeper = Keeper(revisions)
        maker = async_sessionmaker(engine, class_=AppAsyncSession)
        track(keeper, maker, models=[Task])
        async with maker() as s:
            assert isinstance(s.sync_session, AppSession)
            s.add(Task(id=1, title="a"))
            await s.commit()
        assert await revisions.read([TASKS]) == {TASKS: 1}
        async with AppAsyncSession(engine) as other:  # the class itself is not tracked...
            await other.execute(select(Task))
            other.add(Task(id=2, title="b"))
            await other.commit()
            assert other.sync_session.info.get("freshkeep.committed") is None
        assert await revisions.read([TASKS]) == {TASKS: 2}  # ...its engine is
        await keeper.aclose()
    finally:
        await engine.dispose()
