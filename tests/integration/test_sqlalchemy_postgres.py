"""The write hooks on real PostgreSQL: commit-time bumps, the ``MAX(updated_at)`` hole that
counters close, and concurrent committers (commit order = revision order, no deadlock)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import event, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from freshkeep import Keeper, LocalBus
from freshkeep.integrations.sqlalchemy import (
    SQLAlchemyRevisions,
    Watermark,
    revisions_table,
    track,
)
from tests.conftest import PgSchema
from tests.integration.sa_support import (
    PROJECTS,
    TASKS,
    TRACKED,
    Base,
    Project,
    Task,
    TitlesBuilder,
    TrackedDb,
    at,
    create_schema,
    sync_db_counters,
    tasks_table,
    tracked,
    whole,
)

pytestmark = pytest.mark.postgres


@pytest.fixture
async def db(pg_schema: PgSchema) -> AsyncIterator[TrackedDb]:
    engine = pg_schema.async_engine(pool_size=10)
    try:
        await create_schema(engine)
        async with tracked(engine) as db:
            yield db
    finally:
        await engine.dispose()


async def test_insert_update_delete_bump_in_the_transaction(db: TrackedDb) -> None:
    async with db.session() as s:
        s.add_all([Project(id=1, name="p"), Task(id=1, title="a", project_id=1)])
        await s.commit()
        assert db.keeper.tracker.snapshot[TASKS] == db.keeper.tracker.floor[TASKS] == 1
        await s.execute(update(Task).values(title="b"))
        await s.commit()
        await s.delete(await s.get(Task, 1))
        await s.commit()
    assert await db.counters() == {PROJECTS: 1, TASKS: 3}
    assert [r[TASKS] for r in db.published] == [1, 2, 3]


async def test_a_commit_refused_by_the_database_rolls_the_bump_back(db: TrackedDb) -> None:
    """A deferred constraint fails at COMMIT, after the bump ran in the same transaction."""
    async with db.engine.begin() as conn:
        await conn.execute(
            text(
                "CREATE TABLE refs (id int PRIMARY KEY, project_id int REFERENCES projects(id)"
                " DEFERRABLE INITIALLY DEFERRED)"
            )
        )
    async with db.session() as s:
        s.add(Project(id=1, name="p"))
        await s.execute(text("INSERT INTO refs VALUES (1, 999)"))
        with pytest.raises(IntegrityError):
            await s.commit()
    assert await db.counters() == {}
    assert [whole(p) for p in db.published] == [] and PROJECTS not in whole(
        db.keeper.tracker.snapshot
    )
    async with db.session() as s:
        s.add(Project(id=1, name="p"))
        await s.commit()
    assert await db.counters() == {PROJECTS: 1} == whole(db.keeper.tracker.snapshot)


async def test_sync_session_with_psycopg2(pg_schema: PgSchema) -> None:
    engine = pg_schema.sync_engine()
    try:
        Base.metadata.create_all(engine)
        revisions = SQLAlchemyRevisions(engine)
        await revisions.create_table()
        keeper = Keeper(revisions, bus=LocalBus())
        maker = sessionmaker(engine, expire_on_commit=False)
        track(keeper, maker, models=TRACKED)
        with maker() as s:
            s.add(Task(id=1, title="a"))
            s.commit()
            s.execute(update(Task).values(title="b"))
            s.commit()
        assert sync_db_counters(engine) == {TASKS: 2} == whole(keeper.tracker.snapshot)
        assert await revisions.read([TASKS, PROJECTS]) == {TASKS: 2, PROJECTS: 0}
        await keeper.aclose()
    finally:
        engine.dispose()


async def test_counters_catch_the_late_commit_a_max_updated_at_watermark_misses(
    db: TrackedDb,
) -> None:
    async with db.session() as s:
        s.add_all(
            [Task(id=1, title="a", updated_at=at(0)), Task(id=2, title="b", updated_at=at(0))]
        )
        await s.commit()
    wm = "watermark:tasks"
    t = tasks_table
    reader_revs = SQLAlchemyRevisions(db.engine, watermarks={wm: Watermark(t, t.c.updated_at)})
    reader = Keeper(reader_revs, probe="always")  # another process: it sees only the database
    by_counter = reader.view("by-counter", TitlesBuilder(db.engine), sources=[TASKS])
    by_watermark = reader.view("by-watermark", TitlesBuilder(db.engine), sources=[wm])

    a, b = db.session(), db.session()
    try:
        task1 = await a.get(Task, 1)
        assert task1 is not None
        task1.title, task1.updated_at = "A", at(1)
        await a.flush()  # A has written, not committed
        task2 = await b.get(Task, 2)
        assert task2 is not None
        task2.title, task2.updated_at = "B", at(2)
        await b.commit()  # B commits the newer timestamp first

        seen = {"1": "a", "2": "B"}
        assert (await by_counter.get()).value == seen
        assert (await by_watermark.get()).value == seen
        before = await reader_revs.read([TASKS, wm])
        await a.commit()  # A commits the older timestamp
        after = await reader_revs.read([TASKS, wm])
    finally:
        await a.close()
        await b.close()
    assert after[wm] == before[wm]  # the hole: COUNT and MAX did not move
    assert after[TASKS] == int(before[TASKS]) + 1  # the counter was bumped at A's commit
    missed = await by_watermark.get()
    assert (missed.status, missed.value) == ("hit", seen)  # A's write is invisible to it
    caught = await by_counter.get()
    assert caught.status != "hit" and caught.value == {"1": "A", "2": "B"}
    await reader.aclose()


async def test_concurrent_committers_get_distinct_revisions_in_commit_order(
    db: TrackedDb,
) -> None:
    n = 8
    barrier = asyncio.Barrier(n)
    observed: list[tuple[int, int]] = []

    def observe(session: Session) -> None:
        # Runs after freshkeep's before_commit, so after this transaction's bump: the row lock
        # makes every committer that bumped earlier have committed, and only those.
        if session.in_nested_transaction() or not session.info.get("observe"):
            return
        t = revisions_table
        rev = session.execute(select(t.c.revision).where(t.c.source == TASKS)).scalar_one()
        count = session.execute(text("SELECT count(*) FROM tasks")).scalar_one()
        observed.append((rev, count))

    event.listen(db.tracking.target, "before_commit", observe)

    async def commit(i: int) -> None:
        async with db.session() as s:
            s.info["observe"] = True
            s.add_all([Task(id=i, title=f"t{i}"), Project(id=i, name=f"p{i}")])
            await s.flush()  # rows written, no counter touched yet
            await barrier.wait()  # then all commit at once
            await s.commit()

    await asyncio.wait_for(asyncio.gather(*(commit(i) for i in range(n))), timeout=60)
    assert await db.counters() == {TASKS: n, PROJECTS: n}
    revs = sorted(rev for rev, _ in observed)
    assert revs == list(range(1, n + 1))  # distinct, none lost
    # The committer that got revision r saw exactly r committed tasks (its own included):
    # revision order is commit order.
    assert all(rev == count for rev, count in observed), observed
    assert sorted(p[TASKS] for p in db.published) == revs
    assert db.keeper.tracker.snapshot[TASKS] == n
