"""The write hooks record a commit's changed rows for the tables delta sections read: whole
images from ORM flushes; anything else makes the table's changes in that commit unknown."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import String, insert, text, update
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from freshkeep import BuildContext, Keeper, Section
from freshkeep.core.changes import Change
from freshkeep.integrations.sqlalchemy import SQLAlchemyRevisions, bump, track
from tests.docs_blocks import python_block, run_block
from tests.integration.sa_support import (
    PROJECTS,
    TASKS,
    Project,
    Tag,
    Task,
    TrackedDb,
    at,
    sqlite_db,
    sqlite_engine,
    tasks_table,
)


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[TrackedDb]:
    async with sqlite_db(tmp_path / "changes.db") as db:
        yield db


class Seen:
    """A delta section over tasks and projects that keeps the changes it was given."""

    def __init__(self) -> None:
        self.batches: list[list[Change]] = []
        self.builds = 0

    async def build(self, ctx: Any) -> dict[str, Any]:
        self.builds += 1
        return {"n": self.builds}

    def apply(self, value: dict[str, Any], changes: list[Change]) -> dict[str, Any]:
        self.batches.append(list(changes))
        return value


def follow(db: TrackedDb) -> tuple[Any, Seen]:
    seen = Seen()
    view = db.keeper.view(
        "v", sections={"all": Section(seen.build, [TASKS, PROJECTS], apply=seen.apply)}
    )
    return view, seen


def images(batch: list[Change]) -> list[tuple[str, str, Any, Any]]:
    def keep(row: Any) -> Any:
        return None if row is None else {k: row[k] for k in ("id", "title") if k in row}

    return [(c.table, c.op, keep(c.before), keep(c.after)) for c in batch]


async def test_flushed_rows_are_applied_with_their_images(db: TrackedDb) -> None:
    view, seen = follow(db)
    await view.get()
    async with db.session() as s, s.begin():
        s.add(Project(id=1, name="p"))
        s.add(Task(id=1, title="a", project_id=1, updated_at=at(1)))
    read = await view.get()
    assert read.reason == "delta" and seen.builds == 1
    batch = seen.batches[-1]
    assert {(c.table, c.op) for c in batch} == {(PROJECTS, "insert"), (TASKS, "insert")}
    task = next(c for c in batch if c.table == TASKS)
    assert task.before is None and task.after == {
        "id": 1,
        "title": "a",
        "updated_at": at(1),
        "project_id": 1,
    }
    async with db.session() as s, s.begin():
        t = await s.get(Task, 1)
        assert t is not None
        t.title = "b"
    await view.get()
    assert images(seen.batches[-1]) == [
        (TASKS, "update", {"id": 1, "title": "a"}, {"id": 1, "title": "b"})
    ]
    async with db.session() as s, s.begin():
        t = await s.get(Task, 1)
        await s.delete(t)
    await view.get()
    assert images(seen.batches[-1]) == [(TASKS, "delete", {"id": 1, "title": "b"}, None)]
    assert view.snapshot().deltas == {"all": 3} and seen.builds == 1


@pytest.mark.parametrize(
    "write",
    [
        "core_update",
        "bulk_insert",
        "raw_sql",
        "bump",
        "savepoint",
    ],
)
async def test_writes_whose_rows_are_not_known_rebuild(db: TrackedDb, write: str) -> None:
    view, seen = follow(db)
    async with db.session() as s, s.begin():
        s.add(Task(id=1, title="a"))
    await view.get()
    async with db.session() as s, s.begin():
        if write == "core_update":
            await s.execute(update(tasks_table).values(title="x"))
        elif write == "bulk_insert":
            await s.execute(insert(Task), [{"id": 2, "title": "b"}])
        elif write == "raw_sql":
            await s.execute(text("UPDATE tasks SET title = 'y'"))
        elif write == "bump":
            s.add(Task(id=2, title="b"))
            bump(s, Task)
        elif write == "savepoint":
            async with s.begin_nested():
                s.add(Task(id=2, title="b"))
    read = await view.get()
    assert read.reason is None and seen.builds == 2 and not seen.batches
    assert view.snapshot().delta_fallbacks == {"unknown": 1}


async def test_a_rollback_records_nothing(db: TrackedDb) -> None:
    view, seen = follow(db)
    await view.get()
    async with db.session() as s:
        s.add(Task(id=1, title="a"))
        await s.flush()
        await s.rollback()
    async with db.session() as s, s.begin():
        s.add(Task(id=2, title="b"))
    await view.get()
    assert images(seen.batches[-1]) == [(TASKS, "insert", None, {"id": 2, "title": "b"})]


async def test_an_association_table_written_by_a_flush_is_unknown(db: TrackedDb) -> None:
    seen = Seen()
    view = db.keeper.view(
        "tags", sections={"all": Section(seen.build, ["table:task_tags"], apply=seen.apply)}
    )
    await view.get()
    async with db.session() as s, s.begin():
        s.add(Task(id=1, title="a", tags=[Tag(id=1, name="t")]))  # a secondary's row
    await view.get()
    assert seen.builds == 2 and view.snapshot().delta_fallbacks == {"unknown": 1}


async def test_a_write_this_process_did_not_commit_rebuilds(db: TrackedDb) -> None:
    view, seen = follow(db)
    await view.get()
    async with db.engine.begin() as conn:  # outside tracked sessions: bumped, not told
        await conn.execute(insert(tasks_table).values(id=5, title="e"))
    await db.keeper.resync()
    await view.get()
    assert seen.builds == 2 and view.snapshot().delta_fallbacks == {"gap": 1}


async def test_apply_raising_rebuilds(db: TrackedDb) -> None:
    builds = 0

    async def build(ctx: Any) -> dict[str, Any]:
        nonlocal builds
        builds += 1
        return {"n": builds}

    def apply(value: Any, changes: Any) -> Any:
        raise ValueError("cannot")

    view = db.keeper.view("v", sections={"all": Section(build, [TASKS], apply=apply)})
    await view.get()
    async with db.session() as s, s.begin():
        s.add(Task(id=1, title="a"))
    read = await view.get()
    assert read.body == b'{"n":2}' and view.snapshot().delta_fallbacks == {"apply": 1}


class _DocBase(DeclarativeBase):
    pass


class _DocTask(_DocBase):
    __tablename__ = "tasks"
    id: Mapped[int] = mapped_column(primary_key=True)
    status: Mapped[str] = mapped_column(String(20))


async def test_the_guides_delta_section(tmp_path: Path) -> None:
    """user-guide.md, "Delta sections": the block's view applies inserts, updates and deletes,
    and serves what its builder would."""
    engine = sqlite_engine(tmp_path / "doc.db")
    async with engine.begin() as conn:
        await conn.run_sync(_DocBase.metadata.create_all)
    revisions = SQLAlchemyRevisions(engine)
    await revisions.create_table()
    keeper, Session = Keeper(revisions), async_sessionmaker(engine, expire_on_commit=False)
    tracking = track(keeper, Session, models=[_DocTask])
    try:
        names = {"Session": Session, "Task": _DocTask, "keeper": keeper}
        defined = await run_block(python_block("user-guide.md", "delta-section"), names)
        counts = defined["counts"]
        ctx = BuildContext("task-counts", "all", None, None, {})
        assert (await counts.get()).value == {"by_status": {}}
        async with Session() as s, s.begin():
            s.add_all([_DocTask(id=i, status="todo") for i in (1, 2, 3)])
        async with Session() as s, s.begin():
            task = await s.get(_DocTask, 1)
            assert task is not None
            task.status = "done"
            await s.delete(await s.get(_DocTask, 2))
        read = await counts.get()
        assert read.reason == "delta" and read.value == {"by_status": {"done": 1, "todo": 1}}
        assert read.value == await defined["build_counts"](ctx)
        assert counts.snapshot().deltas == {"all": 1} and counts.snapshot().builds == {"all": 1}
    finally:
        tracking.remove()
        await keeper.aclose()
        await engine.dispose()
