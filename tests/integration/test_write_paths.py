"""Every row of the user guide's table "How each write path is seen, and within what bound".

One test per row, named after it, on SQLite and PostgreSQL (the rows whose mechanism differs
have a test per database). Each writes through the path, then reads real views of real
keepers; a FakeClock drives the resync interval, so "at the next resync" is one
``clock.advance``, never a sleep. The keepers stand for processes:

- ``app``: the process that wrote, its session factory tracked;
- ``peer``: another process the bus reached;
- ``loner``: another process the bus did not reach (``local://``, a lost message).

``test_the_table_and_the_tests_agree`` reads the table from docs/user-guide.md: a row added
or renamed there without a test here, or a test here without its row, fails.
"""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager, closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from sqlalchemy import (
    Column,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    delete,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from freshkeep import BuildContext, Keeper, LocalBus, Policy, Read
from freshkeep.buses.postgres import PostgresBus
from freshkeep.integrations.sqlalchemy import (
    SQLAlchemyRevisions,
    Tracking,
    Watermark,
    bump,
    track,
)
from freshkeep.ports import Bus
from freshkeep.sql.engine import create_engine
from freshkeep.sql.statements import UNKNOWN, written_tables
from freshkeep.sql.triggers import install_triggers_async
from freshkeep.testing import FakeClock
from freshkeep.views import View
from tests.conftest import POSTGRES_URL, PgSchema
from tests.integration.sa_support import (
    PROJECTS,
    TAGS,
    TASK_TAGS,
    TASKS,
    TRACKED,
    Task,
    TitlesBuilder,
    at,
    create_schema,
    db_counters,
    raw_counters,
    tasks_table,
    whole,
)

GUIDE = Path(__file__).parents[2] / "docs" / "user-guide.md"
HEADING = "How each write path is seen, and within what bound"
INTERVAL = 1.0
"""The keepers' ``resync_interval`` (seconds of the FakeClock)."""
MAX_AGE = 30.0
TIMEOUT = 10.0
"""Real seconds a network bus (PostgreSQL NOTIFY) may take."""

extra = MetaData()
parents = Table(
    "parents",
    extra,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("name", String(50)),
)
children = Table(
    "children",
    extra,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("parent_id", ForeignKey("parents.id", ondelete="CASCADE")),
    Column("name", String(50)),
)
PARENTS = "table:parents"
CHILDREN = "table:children"
EVERY_TRACKED = {TASKS, PROJECTS, TAGS, TASK_TAGS, PARENTS, CHILDREN}
FILES = "files:notes"
LEGACY = "legacy:tasks"

A = {"1": "a"}
AB = {"1": "a", "2": "b"}


# -- the world of one test -------------------------------------------------------------------


class ChildrenBuilder:
    """The children's names, by id."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def __call__(self, ctx: BuildContext) -> dict[str, str]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(children.c.id, children.c.name))
            return {str(i): str(n) for i, n in rows}


class FileBuilder:
    """The text of a file: a source no database sees."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def __call__(self, ctx: BuildContext) -> dict[str, str]:
        return {"text": self.path.read_text()}


@dataclass(eq=False)
class Process:
    """One keeper (a process) with its own engine, revision source and views:

    ``titles`` (tasks), ``children`` and ``notes`` (a file), in ``probe="interval"`` mode;
    with ``extras``, also ``titles-always`` and ``children-always`` (``probe="always"``),
    ``capped`` (tasks, ``Policy.strict(max_age=MAX_AGE)``) and ``legacy`` (tasks as a
    watermark source).
    """

    keeper: Keeper
    revisions: SQLAlchemyRevisions
    engine: AsyncEngine
    notes: Path
    views: dict[str, View] = field(default_factory=dict)

    def add_views(self, *, extras: bool = False) -> None:
        k, engine = self.keeper, self.engine
        self.views["titles"] = k.view("titles", TitlesBuilder(engine), sources=[TASKS])
        self.views["children"] = k.view("children", ChildrenBuilder(engine), sources=[CHILDREN])
        self.views["notes"] = k.view("notes", FileBuilder(self.notes), sources=[FILES])
        if not extras:
            return
        for name, build, src in (
            ("titles", TitlesBuilder(engine), TASKS),
            ("children", ChildrenBuilder(engine), CHILDREN),
        ):
            self.views[f"{name}-always"] = k.view(
                f"{name}-always", build, sources=[src], probe="always"
            )
        self.views["capped"] = k.view(
            "capped",
            TitlesBuilder(engine),
            sources=[TASKS],
            policy=Policy.strict(max_age=MAX_AGE),
        )
        self.views["legacy"] = k.view("legacy", TitlesBuilder(engine), sources=[LEGACY])

    async def read(self, view: str = "titles") -> Read:
        return await self.views[view].get()

    async def prime(self) -> None:
        for name in self.views:
            await self.read(name)


@dataclass(eq=False)
class World:
    """A database with one task (1, 'a'), a file, three processes and a shared FakeClock."""

    backend: str
    engine: AsyncEngine
    clock: FakeClock
    app: Process
    peer: Process
    loner: Process
    maker: async_sessionmaker[AsyncSession]
    tracking: Tracking
    other_program: Callable[[str], None]
    """Runs SQL as another program would (the sqlite3 shell, psql), in a transaction."""
    new_engine: Callable[[], Awaitable[AsyncEngine]]
    """Another engine on the same database: another process's."""
    schema: PgSchema | None = None
    published: list[dict[str, Any]] = field(default_factory=list)

    def session(self) -> AsyncSession:
        return self.maker()

    async def counters(self) -> dict[str, int]:
        return await db_counters(self.engine)

    @property
    def processes(self) -> tuple[Process, ...]:
        return (self.app, self.peer, self.loner)

    def advance(self, seconds: float = INTERVAL) -> None:
        """Time passes for every keeper (they share the clock): by default, one interval."""
        self.clock.advance(seconds)

    async def pushed(self, view: str, old: Any, new: Any) -> None:
        """The bound of a pushed change: ``app`` at once, without reading revisions
        (read-your-writes, or the bus), ``peer`` at once (the bus), ``loner`` at its next
        resync."""
        probes = self.app.keeper.tracker.probes
        read = await self.app.read(view)
        assert (read.status, read.value) == ("miss", new)
        assert self.app.keeper.tracker.probes == probes  # pushed, not probed
        assert (await self.peer.read(view)).value == new
        read = await self.loner.read(view)
        assert (read.status, read.value) == ("hit", old)  # nothing told it yet
        self.advance()
        for p in self.processes:  # each begins a new interval
            assert (await p.read(view)).value == new, p
        if f"{view}-always" in self.app.views:
            assert (await self.app.read(f"{view}-always")).value == new

    async def at_next_resync(self, view: str, old: Any, new: Any) -> None:
        """The bound of a change the counters show but nothing pushed: every process, the
        writer included, at its next resync; a view under ``probe="always"`` at once."""
        for p in self.processes:
            read = await p.read(view)
            assert (read.status, read.value) == ("hit", old), p
        assert (await self.app.read(f"{view}-always")).value == new
        self.advance()
        for p in self.processes:
            assert (await p.read(view)).value == new, p

    async def unseen(self, view: str, old: Any) -> None:
        """Nothing moved: every process serves ``old`` after a resync, ``probe="always"``
        too."""
        self.advance()
        for p in self.processes:
            read = await p.read(view)
            assert (read.status, read.value) == ("hit", old), p
        if f"{view}-always" in self.app.views:
            read = await self.app.read(f"{view}-always")
            assert (read.status, read.value) == ("hit", old)


def sqlite_program(path: Path) -> Callable[[str], None]:
    def run(sql: str) -> None:
        with closing(sqlite3.connect(path, isolation_level=None)) as conn:
            conn.execute("BEGIN")
            conn.execute(sql)
            conn.execute("COMMIT")

    return run


def libpq_url(url: str) -> str:
    return "postgresql://" + url.split("://", 1)[1]


def psql(schema: PgSchema) -> Callable[[str], None]:
    def run(sql: str) -> None:
        conn = psycopg2.connect(libpq_url(schema.sync_url))
        try:
            with conn, conn.cursor() as cur:
                cur.execute(f'SET search_path = "{schema.name}"')
                cur.execute(sql)
        finally:
            conn.close()

    return run


def make_process(
    engine: AsyncEngine, bus: Bus, clock: FakeClock, notes: Path, **revision_kw: Any
) -> Process:
    revisions = SQLAlchemyRevisions(engine, **revision_kw)
    keeper = Keeper(
        revisions,
        bus=bus,
        clock=clock,
        probe="interval",
        resync_interval=INTERVAL,
        sources=[FILES],  # the application bumps it itself
    )
    return Process(keeper, revisions, engine, notes)


async def close_process(p: Process) -> None:
    await p.keeper.aclose()
    p.revisions.close()


@asynccontextmanager
async def open_world(tmp_path: Path, schema: PgSchema | None = None) -> AsyncIterator[World]:
    async with AsyncExitStack() as stack:

        async def new_engine() -> AsyncEngine:
            if schema is None:  # freshkeep's SQLite engine: WAL, foreign keys, transactions
                engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'app.db'}")
            else:
                engine = schema.async_engine()
            stack.push_async_callback(engine.dispose)
            return engine

        engine = await new_engine()
        await create_schema(engine)
        async with engine.begin() as conn:
            await conn.run_sync(extra.create_all)
            await conn.execute(insert(tasks_table).values(id=1, title="a", updated_at=at(0)))
        notes = tmp_path / "notes.txt"
        notes.write_text("v1")
        clock = FakeClock()
        bus = LocalBus()
        watermark = {LEGACY: Watermark(tasks_table, tasks_table.c.updated_at)}
        app = make_process(engine, bus, clock, notes, watermarks=watermark)
        peer = make_process(await new_engine(), bus, clock, notes)
        loner = make_process(await new_engine(), LocalBus(), clock, notes)
        for p in (app, peer, loner):
            stack.push_async_callback(close_process, p)
            p.add_views(extras=p is app)
        maker = async_sessionmaker(engine, expire_on_commit=False)
        tracking = track(app.keeper, maker, models=(*TRACKED, parents, children))
        stack.callback(tracking.remove)
        program = sqlite_program(tmp_path / "app.db") if schema is None else psql(schema)
        backend = "sqlite" if schema is None else "postgresql"
        w = World(
            backend, engine, clock, app, peer, loner, maker, tracking, program, new_engine, schema
        )
        bus.subscribe(lambda revs, origin: w.published.append(dict(revs)))
        for p in w.processes:
            await p.prime()
        yield w


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def world(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[World]:
    schema = None if request.param == "sqlite" else request.getfixturevalue("pg_schema")
    async with open_world(tmp_path, schema) as w:
        yield w


@pytest.fixture
async def sqlite_world(tmp_path: Path) -> AsyncIterator[World]:
    async with open_world(tmp_path) as w:
        yield w


@pytest.fixture
async def pg_world(pg_schema: PgSchema, tmp_path: Path) -> AsyncIterator[World]:
    async with open_world(tmp_path, pg_schema) as w:
        yield w


async def until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Wait (real time, the FakeClock standing still) until ``check()``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    while not await check():
        assert loop.time() < deadline, f"{what}: not seen in {TIMEOUT} s"
        await asyncio.sleep(0.02)


def moved(before: dict[str, int], after: dict[str, int]) -> set[str]:
    return {s for s, r in after.items() if r != before.get(s, 0)}


@asynccontextmanager
async def postgres_process(w: World, channel: str) -> AsyncIterator[Process]:
    """Another process whose bus is a started PostgresBus on ``channel``."""
    engine = await w.new_engine()
    p = make_process(engine, PostgresBus(POSTGRES_URL, channel), w.clock, w.app.notes)
    try:
        await p.keeper.start()
        assert not p.keeper.bus_down
        p.add_views()
        await p.prime()
        yield p
    finally:
        await close_process(p)


# -- the rows --------------------------------------------------------------------------------


async def test_orm_flush_commit_through_a_tracked_session(world: World) -> None:
    async with world.session() as s:
        s.add(Task(id=2, title="b", updated_at=at(1)))
        await s.commit()
    assert whole(world.published[-1]) == {TASKS: (await world.counters())[TASKS]}
    await world.pushed("titles", A, AB)


async def test_orm_bulk_update_delete(world: World) -> None:
    async with world.session() as s:
        await s.execute(update(Task).where(Task.id == 1).values(title="z"))
        await s.commit()
    await world.pushed("titles", A, {"1": "z"})
    async with world.session() as s:
        await s.execute(delete(Task).where(Task.id == 1))
        await s.commit()
    await world.pushed("titles", {"1": "z"}, {})


async def test_core_dml_through_the_session(world: World) -> None:
    async with world.session() as s:
        await s.execute(insert(tasks_table).values(id=2, title="b", updated_at=at(1)))
        await s.commit()
    await world.pushed("titles", A, AB)
    async with world.session() as s:  # on the session's connection too
        conn = await s.connection()
        await conn.execute(update(tasks_table).where(tasks_table.c.id == 2).values(title="c"))
        await s.commit()
    await world.pushed("titles", AB, {"1": "a", "2": "c"})


async def test_raw_text_dml_through_the_session(world: World) -> None:
    async with world.session() as s:
        await s.execute(
            text("INSERT INTO tasks (id, title, updated_at) VALUES (2, 'b', :t)"), {"t": at(1)}
        )
        await s.commit()
    await world.pushed("titles", A, AB)


async def test_exec_driver_sql_through_the_session(world: World) -> None:
    async with world.session() as s:
        conn = await s.connection()
        await conn.exec_driver_sql("UPDATE tasks SET title = 'd' WHERE id = 1")
        await s.commit()
    await world.pushed("titles", A, {"1": "d"})


async def unattributed(w: World, sql: str) -> None:
    before = await w.counters()
    async with w.session() as s:
        await s.execute(text(sql))
        await s.commit()
    assert w.tracking.unattributed == 1
    assert moved(before, await w.counters()) == EVERY_TRACKED  # over, never under
    await w.pushed("titles", A, {"1": "u"})


async def test_dml_whose_target_cannot_be_determined_sqlite(sqlite_world: World) -> None:
    sql = "UPDATE OR IGNORE tasks SET title = 'u' WHERE id = 1"
    assert written_tables(sql, "sqlite") is UNKNOWN  # SQLite runs it; the parser cannot read it
    await unattributed(sqlite_world, sql)


@pytest.mark.postgres
async def test_dml_whose_target_cannot_be_determined_postgresql(pg_world: World) -> None:
    await unattributed(pg_world, "DO $$ BEGIN UPDATE tasks SET title = 'u' WHERE id = 1; END $$")


async def test_a_write_on_the_same_engine_outside_a_tracked_session(world: World) -> None:
    before = await world.counters()
    published = len(world.published)
    async with world.engine.begin() as conn:
        await conn.execute(
            text("INSERT INTO tasks (id, title, updated_at) VALUES (2, 'b', :t)"), {"t": at(1)}
        )
    assert moved(before, await world.counters()) == {TASKS}  # bumped, in its transaction
    await world.at_next_resync("titles", A, AB)
    untracked = async_sessionmaker(world.engine)  # another Session class, the same engine
    async with untracked() as s:
        await s.execute(update(Task).where(Task.id == 2).values(title="c"))
        await s.commit()
    await world.at_next_resync("titles", AB, {"1": "a", "2": "c"})
    assert len(world.published) == published  # never published


async def test_another_process_through_the_applications_code_sqlite(
    sqlite_world: World,
) -> None:
    w = sqlite_world
    # Its own engine, keeper and tracked factory; the app's bus (as a Redis bus would).
    other = make_process(await w.new_engine(), w.app.keeper.bus, w.clock, w.app.notes)
    try:
        maker = async_sessionmaker(other.engine, expire_on_commit=False)
        tracking = track(other.keeper, maker, models=TRACKED)
        async with maker() as s:
            s.add(Task(id=2, title="b", updated_at=at(1)))
            await s.commit()
        tracking.remove()
        await w.pushed("titles", A, AB)  # app and peer: bus delivery; loner: its resync
    finally:
        await close_process(other)


@pytest.mark.postgres
async def test_another_process_through_the_applications_code_postgresql(
    pg_world: World,
) -> None:
    w = pg_world
    channel = f"fk_{uuid.uuid4().hex[:16]}"
    async with postgres_process(w, channel) as writer, postgres_process(w, channel) as reader:
        maker = async_sessionmaker(writer.engine, expire_on_commit=False)
        tracking = track(writer.keeper, maker, models=TRACKED)
        async with maker() as s:
            s.add(Task(id=2, title="b", updated_at=at(1)))
            await s.commit()
        tracking.remove()
        assert (await writer.read()).value == AB  # read-your-writes
        await until(lambda: _shows(reader, AB), "the writer's commit, through NOTIFY")
        read = await w.loner.read()  # not on that bus: its next resync
        assert (read.status, read.value) == ("hit", A)
        w.advance()
        assert (await w.loner.read()).value == AB


async def _shows(p: Process, value: Any, view: str = "titles") -> bool:
    return bool((await p.read(view)).value == value)


async def test_another_program_on_a_triggered_table_sqlite(sqlite_world: World) -> None:
    w = sqlite_world
    await install_triggers_async(w.engine, ["tasks"])
    before = await w.counters()
    w.other_program("INSERT INTO tasks (id, title, updated_at) VALUES (2, 'b', '2024-01-01')")
    w.other_program("UPDATE tasks SET title = title")  # two rows: two bumps (row-level)
    assert (await w.counters())[TASKS] == before.get(TASKS, 0) + 3
    await w.at_next_resync("titles", A, AB)
    # PRAGMA data_version: an interval in which nothing committed re-reads no counter.
    queries, skipped = w.app.revisions.queries, w.app.revisions.skipped
    w.advance()
    assert (await w.app.read()).status == "hit"
    assert (w.app.revisions.queries, w.app.revisions.skipped) == (queries, skipped + 1)
    w.other_program("DELETE FROM tasks WHERE id = 2")
    w.advance()
    assert (await w.app.read()).value == A
    assert w.app.revisions.queries > queries


@pytest.mark.postgres
async def test_another_program_on_a_triggered_table_postgresql(pg_world: World) -> None:
    w = pg_world
    channel = f"fk_{uuid.uuid4().hex[:16]}"
    await install_triggers_async(w.engine, ["tasks"], channel=channel)
    async with postgres_process(w, channel) as listener:
        before = await raw_counters(w.engine)
        w.other_program(
            "INSERT INTO tasks SELECT g, 'b', '2024-01-01' FROM generate_series(2, 3) AS g"
        )
        # A table triggered without partitions moves every partition too.
        assert moved(before, await raw_counters(w.engine)) == {TASKS, f"{TASKS}/*"}
        assert (await raw_counters(w.engine))[TASKS] == before.get(TASKS, 0) + 1  # statement-level
        expected = {"1": "a", "2": "b", "3": "b"}
        await until(lambda: _shows(listener, expected), "the trigger's NOTIFY")
        # Keepers without a PostgresBus on that channel: their next resync.
        await w.at_next_resync("titles", A, expected)


async def test_another_program_on_a_table_without_triggers(world: World) -> None:
    w = world
    before = await w.counters()
    w.other_program(
        "INSERT INTO tasks (id, title, updated_at) VALUES (2, 'b', '2024-01-01 12:01:00')"
    )
    assert await w.counters() == before  # the counters do not move
    await w.app.keeper.resync()
    await w.unseen("titles", A)  # no resync, no probe can see it
    for _ in range(3):
        await w.unseen("titles", A)
    # A watermark source (COUNT and MAX(updated_at)) sees it at the next resync.
    assert (await w.app.read("legacy")).value == AB
    # max_age caps it: the capped view, built at 0, is rebuilt once older than MAX_AGE.
    assert w.clock.monotonic() < MAX_AGE
    read = await w.app.read("capped")
    assert (read.status, read.value) == ("hit", A)
    w.advance(MAX_AGE - w.clock.monotonic() + 0.5)
    read = await w.app.read("capped")
    assert (read.status, read.reason, read.value) == ("miss", "expired", AB)
    assert (await w.app.read("titles")).value == A  # views without max_age: still unseen


async def test_changes_the_database_makes_by_itself(world: World) -> None:
    w = world

    async def family(n: int) -> None:
        async with w.session() as s:
            await s.execute(insert(parents).values(id=n, name="p"))
            await s.execute(insert(children).values(id=n, parent_id=n, name="c"))
            await s.commit()

    async def drop_parent(n: int, *also: str) -> None:
        async with w.session() as s:
            await s.execute(delete(parents).where(parents.c.id == n))
            bump(s, *also)
            await s.commit()

    # The hooks see the DELETE on parents, not the rows the cascade deleted in children.
    await family(1)
    await w.pushed("children", {}, {"1": "c"})
    before = await w.counters()
    await drop_parent(1)
    assert moved(before, await w.counters()) == {PARENTS}
    await w.unseen("children", {"1": "c"})
    # bump() in the same transaction: read-your-writes.
    await family(2)
    await w.pushed("children", {"1": "c"}, {"2": "c"})
    await drop_parent(2, "children")
    await w.pushed("children", {"2": "c"}, {})
    # freshkeep's trigger on the child table fires for the cascade: the next resync.
    await install_triggers_async(w.engine, ["children"], channel=f"fk_{uuid.uuid4().hex[:16]}")
    await family(3)
    await w.pushed("children", {}, {"3": "c"})
    before = await raw_counters(w.engine)
    await drop_parent(3)
    # The hooks moved parents (and parents/*); the trigger moved children and children/*.
    assert moved(before, await raw_counters(w.engine)) >= {PARENTS, CHILDREN, f"{CHILDREN}/*"}
    await w.at_next_resync("children", {"3": "c"}, {})


async def test_a_rolled_back_transaction(world: World) -> None:
    w = world
    before = await w.counters()
    published = len(w.published)
    async with w.session() as s:
        s.add(Task(id=2, title="b", updated_at=at(1)))
        await s.flush()
        await s.execute(text("UPDATE tasks SET title = 'r'"))
        await s.rollback()
    with pytest.raises(RuntimeError):
        async with w.engine.begin() as conn:
            await conn.execute(text("UPDATE tasks SET title = 'r'"))
            raise RuntimeError("rolled back")
    assert await w.counters() == before
    assert len(w.published) == published
    await w.unseen("titles", A)
    # A savepoint rolled back in a transaction that commits: at most an extra rebuild.
    async with w.session() as s:
        nested = await s.begin_nested()
        await s.execute(update(Task).where(Task.id == 1).values(title="gone"))
        await nested.rollback()
        await s.commit()
    assert moved(before, await w.counters()) <= {TASKS}
    for p in w.processes:
        w.advance()
        assert (await p.read()).value == A


async def test_writes_to_non_database_sources(world: World) -> None:
    w = world
    old, new = {"text": "v1"}, {"text": "v2"}
    w.app.notes.write_text("v2")
    await w.unseen("notes", old)  # nothing told freshkeep
    revs = await w.app.keeper.bump(FILES)
    assert (await w.counters())[FILES] == revs[FILES]  # a counter like a table's
    await w.pushed("notes", old, new)  # read-your-writes; the bus; the loner's resync


# -- the table and the tests -----------------------------------------------------------------

ROWS: dict[str, tuple[str, ...]] = {
    "ORM flush/commit through a tracked session": (
        "test_orm_flush_commit_through_a_tracked_session",
    ),
    "ORM bulk UPDATE/DELETE": ("test_orm_bulk_update_delete",),
    "Core DML through the session": ("test_core_dml_through_the_session",),
    "Raw `text()` DML through the session": ("test_raw_text_dml_through_the_session",),
    "`exec_driver_sql` through the session": ("test_exec_driver_sql_through_the_session",),
    "DML whose target cannot be determined": (
        "test_dml_whose_target_cannot_be_determined_sqlite",
        "test_dml_whose_target_cannot_be_determined_postgresql",
    ),
    "A write on the same engine outside a tracked session": (
        "test_a_write_on_the_same_engine_outside_a_tracked_session",
    ),
    "Another process through the application's code": (
        "test_another_process_through_the_applications_code_sqlite",
        "test_another_process_through_the_applications_code_postgresql",
    ),
    "Another program on a triggered table (PostgreSQL)": (
        "test_another_program_on_a_triggered_table_postgresql",
    ),
    "Another program on a triggered table (SQLite)": (
        "test_another_program_on_a_triggered_table_sqlite",
    ),
    "Another program on a table without triggers": (
        "test_another_program_on_a_table_without_triggers",
    ),
    "Changes the database makes by itself": ("test_changes_the_database_makes_by_itself",),
    "A rolled-back transaction": ("test_a_rolled_back_transaction",),
    "Writes to non-database sources (files, remote systems)": (
        "test_writes_to_non_database_sources",
    ),
}
"""Each row of the guide's table (its first cell, as written) and the tests that cover it."""


def guide_rows() -> list[str]:
    """The first cell of every row of the table under the heading :data:`HEADING`."""
    lines = GUIDE.read_text().splitlines()
    start = next((i for i, line in enumerate(lines) if line.lstrip("#").strip() == HEADING), None)
    assert start is not None, f"no heading {HEADING!r} in {GUIDE}"
    rows: list[str] = []
    for line in lines[start + 1 :]:
        if line.startswith("|"):
            rows.append(line.split("|")[1].strip())
        elif rows or line.startswith("#"):
            break  # the end of the first table, or of the section
    assert len(rows) > 2, f"no table under the heading {HEADING!r}"
    assert set(rows[1]) <= set("-: "), "the table's second line is not its separator"
    return rows[2:]


def test_the_table_and_the_tests_agree() -> None:
    rows = guide_rows()
    assert len(rows) == len(set(rows)), "a row is in the table twice"
    assert set(rows) == set(ROWS), (
        f"rows without tests: {sorted(set(rows) - set(ROWS))}; "
        f"tests of rows no longer in the table: {sorted(set(ROWS) - set(rows))}"
    )
    module = globals()
    covered = {name for names in ROWS.values() for name in names}
    for name in covered:
        assert callable(module.get(name)), f"{name} is not a test of this module"
    tests = {n for n, f in module.items() if n.startswith("test_") and callable(f)}
    assert tests - covered == {"test_the_table_and_the_tests_agree"}, "a test of no row"
