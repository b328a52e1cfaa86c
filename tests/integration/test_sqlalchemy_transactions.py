"""The write hooks and transaction boundaries on SQLite: rollbacks, savepoints, failed commits,
writes made while committing, and a bus that fails."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path

import pytest
from sqlalchemy import event, select, update
from sqlalchemy.orm import Session

from freshkeep import BuildContext, Revision
from freshkeep.integrations.sqlalchemy import revisions_table
from freshkeep.ports import Bus, Listener
from tests.integration.sa_support import (
    PROJECTS,
    TAGS,
    TASKS,
    Project,
    Tag,
    Task,
    TrackedDb,
    sqlite_db,
    titles,
    whole,
)


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[TrackedDb]:
    async with sqlite_db(tmp_path / "tx.db") as db:
        yield db


async def seeded(db: TrackedDb) -> dict[str, int]:
    async with db.session() as s:
        s.add_all([Project(id=1, name="p"), Task(id=1, title="a")])
        await s.commit()
    return await db.counters()


def listen(db: TrackedDb, name: str, fn: Callable[[Session], None]) -> None:
    """A listener on the tracked sessions, registered after freshkeep's own."""
    event.listen(db.tracking.target, name, fn)


async def test_a_rollback_changes_and_publishes_nothing(db: TrackedDb) -> None:
    before = await seeded(db)
    published, snapshot = len(db.published), dict(whole(db.keeper.tracker.snapshot))
    async with db.session() as s:
        s.add(Task(id=2, title="b"))
        await s.flush()
        await s.rollback()
    async with db.session() as s:  # closed without commit: an implicit rollback
        s.add(Project(id=2, name="q"))
        await s.flush()
    assert await db.counters() == before
    assert len(db.published) == published
    assert whole(db.keeper.tracker.snapshot) == snapshot


async def test_a_commit_that_fails_after_the_bump_leaves_the_counters(db: TrackedDb) -> None:
    before = await seeded(db)
    published = len(db.published)

    def refuse(session: Session) -> None:
        if session.info.get("refuse"):
            raise RuntimeError("refused at commit")

    listen(db, "before_commit", refuse)
    async with db.session() as s:
        s.info["refuse"] = True
        s.add(Task(id=2, title="b"))
        with pytest.raises(RuntimeError, match="refused"):
            await s.commit()  # the counter was bumped in this transaction, then rolled back
        await s.rollback()
        s.info["refuse"] = False
        assert await db.counters() == before
        assert len(db.published) == published
        s.add(Task(id=3, title="c"))
        await s.commit()  # nothing of the failed attempt leaks into the next commit
    assert await db.counters() == {**before, TASKS: before[TASKS] + 1}
    assert whole(db.published[-1]) == {TASKS: before[TASKS] + 1}


async def test_a_released_savepoint_then_an_outer_rollback_changes_nothing(
    db: TrackedDb,
) -> None:
    before = await seeded(db)
    published = len(db.published)
    async with db.session() as s:
        async with s.begin_nested():
            s.add(Task(id=2, title="b"))
        # The savepoint is released: nothing is bumped until the outermost commit, so the
        # counter rows are not locked for the rest of the transaction.
        t = revisions_table
        in_tx = await s.execute(select(t.c.source, t.c.revision))
        assert whole({r.source: r.revision for r in in_tx}) == before
        await s.rollback()
    assert await db.counters() == before
    assert len(db.published) == published
    assert await titles(db.engine) == {"1": "a"}


async def test_a_rolled_back_savepoint_then_an_outer_commit_bumps_what_committed(
    db: TrackedDb,
) -> None:
    before = await seeded(db)
    async with db.session() as s:
        s.add(Tag(id=1, name="kept"))
        sp = await s.begin_nested()
        s.add(Task(id=2, title="undone"))
        await s.flush()
        await sp.rollback()
        await s.commit()
    after = await db.counters()
    assert after[TAGS] == 1  # committed: must be bumped
    assert after[TASKS] in (before[TASKS], before[TASKS] + 1)  # over-invalidation is allowed
    assert after[PROJECTS] == before[PROJECTS]
    assert {s: db.keeper.tracker.snapshot[s] for s in after} == after
    assert await titles(db.engine) == {"1": "a"}


async def test_a_rolled_back_outer_savepoint_leaves_no_phantom_revision(db: TrackedDb) -> None:
    """Regression: revisions bumped when an inner savepoint was released were kept (and
    published) although an enclosing savepoint rolled the bump back. The keeper then held a
    revision the database never committed, and took the next real commit, which got that same
    number, for one it had already seen: a view stayed stale."""
    await seeded(db)

    async def build(ctx: BuildContext) -> dict[str, str]:
        return await titles(db.engine)

    view = db.keeper.view("titles", build, sources=[TASKS])
    assert (await view.get()).value == {"1": "a"}
    async with db.session() as s:
        outer = await s.begin_nested()
        inner = await s.begin_nested()
        s.add(Task(id=2, title="undone"))
        await inner.commit()
        await outer.rollback()
        await s.commit()
    counters = await db.counters()
    assert db.keeper.tracker.snapshot[TASKS] == counters[TASKS]
    async with db.session() as s:
        s.add(Task(id=3, title="c"))
        await s.commit()
    assert db.keeper.tracker.snapshot[TASKS] == (await db.counters())[TASKS]
    read = await view.get()
    assert (read.status, read.value) == ("miss", {"1": "a", "3": "c"})


async def test_writes_made_while_committing_are_bumped(db: TrackedDb) -> None:
    """Regression: an object added by a before_commit listener that runs after freshkeep's
    (an audit row, an outbox message) is flushed by the commit itself, after the bump; its
    table was never bumped."""

    def audit(session: Session) -> None:
        order.append("audit")
        if session.info.pop("audit", False):
            session.add(Tag(id=1, name="audit"))

    order: list[str] = []
    listen(db, "before_commit", audit)
    async with db.session() as s:
        s.add(Task(id=1, title="a"))
        s.info["audit"] = True
        await s.commit()
        assert await s.get(Tag, 1) is not None
    assert await db.counters() == {TASKS: 1, TAGS: 1}
    assert [whole(p) for p in db.published] == [{TASKS: 1, TAGS: 1}]
    assert db.keeper.tracker.floor[TAGS] == 1


class FailingBus(Bus):
    """A bus that is down."""

    def __init__(self) -> None:
        self.attempts = 0

    async def publish(self, revisions: Mapping[str, Revision], *, origin: str = "") -> None:
        self.attempts += 1
        raise ConnectionError("bus down")

    def publish_nowait(self, revisions: Mapping[str, Revision], *, origin: str = "") -> None:
        self.attempts += 1
        raise ConnectionError("bus down")

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        return lambda: None


async def test_a_failing_bus_does_not_fail_the_commit(tmp_path: Path) -> None:
    """Regression (rule 7): a bus error raised out of commit() although the data committed."""
    bus = FailingBus()
    async with sqlite_db(tmp_path / "bus.db", bus=bus) as db:
        async with db.session() as s:
            s.add(Task(id=1, title="a"))
            await s.commit()  # does not raise
            s.add(Task(id=2, title="b"))
            await s.commit()  # and the session is still usable
        assert await db.counters() == {TASKS: 2}
        assert db.keeper.tracker.snapshot[TASKS] == 2  # this process still reads its writes
        assert (bus.attempts, db.tracking.publish_errors) == (2, 2)


async def test_statements_run_while_committing_are_bumped(db: TrackedDb) -> None:
    """A before_commit listener after freshkeep's that runs DML through the session."""

    def touch(session: Session) -> None:
        if session.info.pop("touch", False):
            session.execute(update(Project).values(name="touched"))

    await seeded(db)
    listen(db, "before_commit", touch)
    async with db.session() as s:
        s.add(Task(id=2, title="b"))
        s.info["touch"] = True
        await s.commit()
    assert await db.counters() == {TASKS: 2, PROJECTS: 2}
    assert whole(db.published[-1]) == {TASKS: 2, PROJECTS: 2}


async def test_a_commit_with_a_savepoint_still_open_bumps(db: TrackedDb) -> None:
    """session.commit() also commits savepoints left open; their writes must be bumped."""
    before = await seeded(db)
    async with db.session() as s:
        await s.begin_nested()
        s.add(Task(id=2, title="b"))
        await s.commit()
    after = await db.counters()
    assert after[TASKS] == before[TASKS] + 1
    assert db.keeper.tracker.snapshot[TASKS] == after[TASKS]
    assert await titles(db.engine) == {"1": "a", "2": "b"}
