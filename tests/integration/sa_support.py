"""Shared pieces of the SQLAlchemy integration tests: models, a tracked database, probes.

Not a test module: the test modules import it (and the multiprocessing workers do too, so it
must stay importable without pytest fixtures).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    ForeignKey,
    Integer,
    String,
    Table,
    event,
    select,
    text,
)
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from freshkeep import BuildContext, Keeper, LocalBus, Revision
from freshkeep.integrations.sqlalchemy import (
    SQLAlchemyRevisions,
    Tracking,
    revisions_table,
    sqlite_transactions,
    track,
)

T0 = datetime(2024, 1, 1, 12, 0, 0)


def at(minutes: int) -> datetime:
    """``T0`` plus ``minutes``: explicit, ordered timestamps."""
    return T0 + timedelta(minutes=minutes)


class Base(DeclarativeBase):
    pass


task_tags = Table(
    "task_tags",
    Base.metadata,
    Column("task_id", ForeignKey("tasks.id"), primary_key=True),
    Column("tag_id", ForeignKey("tags.id"), primary_key=True),
)


class Project(Base):
    __tablename__ = "projects"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(100))
    tasks: Mapped[list[Task]] = relationship(back_populates="project")


class Task(Base):
    __tablename__ = "tasks"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    title: Mapped[str] = mapped_column(String(100))
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=T0)
    project_id: Mapped[int | None] = mapped_column(ForeignKey("projects.id"))
    project: Mapped[Project | None] = relationship(back_populates="tasks")
    tags: Mapped[list[Tag]] = relationship(secondary=task_tags)


class Tag(Base):
    __tablename__ = "tags"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(100))


class Note(Base):
    """Never tracked."""

    __tablename__ = "notes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    body: Mapped[str] = mapped_column(String(100))


TRACKED = (Project, Task, Tag)
tasks_table = cast(Table, Task.__table__)
"""The tasks table, for Core statements."""
TASKS = "table:tasks"
PROJECTS = "table:projects"
TAGS = "table:tags"
TASK_TAGS = "table:task_tags"


async def create_schema(engine: AsyncEngine) -> None:
    """The test models and freshkeep's revision table."""
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    await SQLAlchemyRevisions(engine).create_table()


def whole(revisions: Mapping[str, Any]) -> dict[str, Any]:
    """The revisions of whole sources (``table:t``), without the partition counters
    (``table:t/*``, ``table:t/col#3``), which tests/integration/test_partitions.py checks."""
    return {s: r for s, r in revisions.items() if "/" not in s}


async def raw_counters(engine: AsyncEngine) -> dict[str, int]:
    """Every row of the revision table, partition counters included."""
    t = revisions_table
    async with engine.connect() as conn:
        rows = await conn.execute(select(t.c.source, t.c.revision))
        return {source: int(rev) for source, rev in rows}


async def db_counters(engine: AsyncEngine) -> dict[str, int]:
    """Every whole-source row of the revision table, read on a connection of its own."""
    t = revisions_table
    async with engine.connect() as conn:
        rows = await conn.execute(select(t.c.source, t.c.revision))
        return whole({source: int(rev) for source, rev in rows})


def sync_db_counters(engine: Engine) -> dict[str, int]:
    t = revisions_table
    with engine.connect() as conn:
        return whole({s: int(r) for s, r in conn.execute(select(t.c.source, t.c.revision))})


async def titles(engine: AsyncEngine) -> dict[str, str]:
    """The data a view shows: every task's title, by id."""
    async with engine.connect() as conn:
        rows = await conn.execute(select(Task.id, Task.title).order_by(Task.id))
        return {str(i): title for i, title in rows}


async def external_write(engine: AsyncEngine, sql: str, *, bump: str | None = None) -> None:
    """A writer freshkeep's hooks never see: raw SQL on a connection of its own, optionally
    bumping a counter by hand in the same transaction (as another program would)."""
    async with engine.begin() as conn:
        await conn.execute(text(sql))
        if bump is not None:
            await conn.execute(
                text("UPDATE freshkeep_revisions SET revision = revision + 1 WHERE source = :s"),
                {"s": bump},
            )


@dataclass(eq=False)
class TrackedDb:
    """A keeper whose session factory is tracked, and what its bus published."""

    engine: AsyncEngine
    keeper: Keeper
    revisions: SQLAlchemyRevisions
    maker: async_sessionmaker[AsyncSession]
    tracking: Tracking
    published: list[dict[str, Revision]] = field(default_factory=list)

    async def counters(self) -> dict[str, int]:
        return await db_counters(self.engine)

    def session(self) -> AsyncSession:
        return self.maker()


@asynccontextmanager
async def tracked(engine: AsyncEngine, **keeper_kw: Any) -> AsyncIterator[TrackedDb]:
    """A keeper over ``engine`` with the write hooks on a fresh ``async_sessionmaker``."""
    revisions = SQLAlchemyRevisions(engine)
    keeper_kw.setdefault("bus", LocalBus())
    keeper = Keeper(revisions, **keeper_kw)
    maker = async_sessionmaker(engine, expire_on_commit=False)
    tracking = track(keeper, maker, models=TRACKED)
    db = TrackedDb(engine, keeper, revisions, maker, tracking)
    keeper.bus.subscribe(lambda revs, origin: db.published.append(dict(revs)))
    try:
        yield db
    finally:
        tracking.remove()
        await keeper.aclose()


def sqlite_engine(path: Any) -> AsyncEngine:
    """An aiosqlite engine on the file ``path`` whose transactions are SQLite's own.

    By default the sqlite3 driver emits ``BEGIN`` only before the first INSERT/UPDATE/DELETE, so
    a ``SAVEPOINT`` issued first opens the transaction itself and its ``RELEASE`` commits
    everything: an outer rollback then undoes nothing. SQLAlchemy's documented recipe (driver
    autocommit off, an explicit ``BEGIN`` per transaction) gives real savepoints.
    """
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(f"sqlite+aiosqlite:///{path}")
    sqlite_transactions(engine)
    return engine


@asynccontextmanager
async def sqlite_db(path: Any, **keeper_kw: Any) -> AsyncIterator[TrackedDb]:
    """A fresh SQLite file database (aiosqlite), its schema and a tracked keeper."""
    engine = sqlite_engine(path)
    try:
        await create_schema(engine)
        async with tracked(engine, **keeper_kw) as db:
            yield db
    finally:
        await engine.dispose()


@dataclass
class StatementLog:
    """Statements (and commits) an engine ran, in order, with the connection that ran them."""

    entries: list[tuple[int, str]] = field(default_factory=list)

    @property
    def statements(self) -> list[str]:
        return [s for _, s in self.entries if s != "COMMIT"]

    def clear(self) -> None:
        self.entries.clear()


@contextmanager
def statement_log(engine: AsyncEngine | Engine) -> Iterator[StatementLog]:
    sync = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
    log = StatementLog()

    def on_execute(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement != "BEGIN":  # sqlite_engine()'s explicit BEGIN: not a query
            log.entries.append((id(conn), " ".join(statement.split())))

    def on_commit(conn: Any) -> None:
        log.entries.append((id(conn), "COMMIT"))

    event.listen(sync, "before_cursor_execute", on_execute)
    event.listen(sync, "commit", on_commit)
    try:
        yield log
    finally:
        event.remove(sync, "before_cursor_execute", on_execute)
        event.remove(sync, "commit", on_commit)


class TitlesBuilder:
    """A builder of the tasks' titles that counts its calls, can wait on a gate and can fail."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.calls = 0
        self.seen: list[Mapping[str, Revision]] = []
        self.started = asyncio.Event()
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail: Exception | None = None

    async def __call__(self, ctx: BuildContext) -> dict[str, str]:
        self.calls += 1
        self.seen.append(ctx.revisions)
        self.started.set()
        await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return await titles(self.engine)
