"""Views over a real database (SQLite): compare-and-set across keepers sharing a store, writes
this process never saw, single-flight background refresh, and the bounds of stale serving."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from freshkeep import BuildError, Keeper, MemoryStore, Policy
from freshkeep.integrations.sqlalchemy import SQLAlchemyRevisions
from tests.integration.sa_support import (
    TASKS,
    Task,
    TitlesBuilder,
    TrackedDb,
    create_schema,
    external_write,
    sqlite_db,
    sqlite_engine,
    tracked,
)


class FakeClock:
    """Time that moves only when told to."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return 1_700_000_000.0 + self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = sqlite_engine(tmp_path / "views.db")
    await create_schema(engine)
    try:
        yield engine
    finally:
        await engine.dispose()


async def seed(db: TrackedDb) -> None:
    async with db.session() as s:
        s.add_all([Task(id=1, title="a"), Task(id=2, title="b")])
        await s.commit()


async def test_a_build_that_read_older_revisions_never_overwrites_a_newer_entry(
    engine: AsyncEngine,
) -> None:
    """Rule 3: two keepers (two processes) share one store; A's build read revision R and is
    slow; a write commits R+1; B builds from R+1 and stores; A's late put is refused."""
    store = MemoryStore()
    keeper_a = Keeper(SQLAlchemyRevisions(engine), store=store, probe="always")
    async with tracked(engine, store=store, probe="always") as db_b:
        await seed(db_b)
        r = (await db_b.counters())[TASKS]
        build_a, build_b = TitlesBuilder(engine), TitlesBuilder(engine)
        build_a.gate.clear()
        view_a = keeper_a.view("titles", build_a, sources=[TASKS])
        view_b = db_b.keeper.view("titles", build_b, sources=[TASKS])

        read_a = asyncio.create_task(view_a.get())
        await build_a.started.wait()  # A read its revisions (R) and is building
        assert build_a.seen == [{TASKS: r}]
        async with db_b.session() as s:
            await s.execute(update(Task).where(Task.id == 1).values(title="new"))
            await s.commit()
        read_b = await view_b.get()
        assert (read_b.status, read_b.entry.vector) == ("miss", {TASKS: r + 1})
        assert read_b.value == {"1": "new", "2": "b"}

        build_a.gate.set()
        late = await read_a
        assert store.rejected == 1
        stored = view_a.peek()
        assert stored is read_b.entry and stored.vector == {TASKS: r + 1}
        assert late.entry is read_b.entry  # A's reader is served the newer entry
        assert (await view_a.get()).status == "hit" and (await view_b.get()).status == "hit"
    await keeper_a.aclose()


async def test_a_write_this_process_never_saw_is_caught_by_resync_and_refreshed_once(
    tmp_path: Path,
) -> None:
    async with sqlite_db(tmp_path / "swr.db", resync_interval=3600.0) as db:
        await seed(db)
        builder = TitlesBuilder(db.engine)
        view = db.keeper.view("titles", builder, sources=[TASKS], policy=Policy.swr(60))
        assert (await view.get()).status == "miss"
        # Another program writes the data and bumps the counter on its own connection.
        other = sqlite_engine(db.engine.url.database)
        try:
            await external_write(other, "UPDATE tasks SET title = 'theirs'", bump=TASKS)
        finally:
            await other.dispose()
        stale = await view.get()  # nothing told this process: the snapshot is trusted...
        assert (stale.status, stale.value) == ("hit", {"1": "a", "2": "b"})
        await db.keeper.resync()  # ...until the periodic resync reads the counters
        builder.gate.clear()
        builder.started.clear()
        first = await view.get()
        assert (first.status, first.value) == ("stale", {"1": "a", "2": "b"})
        await builder.started.wait()  # the background rebuild is running and blocked
        reads = await asyncio.gather(*(view.get() for _ in range(50)))
        assert {r.status for r in reads} == {"stale"}
        assert builder.calls == 2  # the first build, and exactly one background rebuild
        assert view.stats.background_refreshes == 1
        builder.gate.set()
        await db.keeper.wait_idle()
        fresh = await view.get()
        assert (fresh.status, fresh.value) == ("hit", {"1": "theirs", "2": "theirs"})
        assert builder.calls == 2


async def test_a_failing_builder_serves_the_last_good_value_within_stale_if_error(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    async with sqlite_db(tmp_path / "err.db", clock=clock, probe="always") as db:
        await seed(db)
        builder = TitlesBuilder(db.engine)
        view = db.keeper.view(
            "titles", builder, sources=[TASKS], policy=Policy.strict(stale_if_error=30)
        )
        good = await view.get()
        assert good.status == "miss"
        async with db.session() as s:
            await s.execute(update(Task).values(title="changed"))
            await s.commit()
        builder.fail = RuntimeError("builder broke")
        clock.advance(29)
        served = await view.get()
        assert (served.status, served.body) == ("error-stale", good.body)
        assert isinstance(served.error, RuntimeError)
        clock.advance(2)  # the last good value is now 31 s old: beyond stale_if_error
        with pytest.raises(BuildError) as info:
            await view.get()
        assert isinstance(info.value.__cause__, RuntimeError)
        builder.fail = None
        recovered = await view.get()
        assert (recovered.status, recovered.value) == ("miss", {"1": "changed", "2": "changed"})
        assert view.stats.build_errors == 2


async def test_an_entry_older_than_max_stale_is_rebuilt_in_line(tmp_path: Path) -> None:
    clock = FakeClock()
    async with sqlite_db(tmp_path / "bound.db", clock=clock, probe="always") as db:
        await seed(db)
        builder = TitlesBuilder(db.engine)
        view = db.keeper.view("titles", builder, sources=[TASKS], policy=Policy.swr(10))
        assert (await view.get()).status == "miss"
        await external_write(db.engine, "UPDATE tasks SET title = 'x'", bump=TASKS)
        clock.advance(5)  # within max_stale: served stale, refreshed in the background
        assert (await view.get()).status == "stale"
        await db.keeper.wait_idle()
        assert (await view.get()).value == {"1": "x", "2": "x"}
        await external_write(db.engine, "UPDATE tasks SET title = 'y'", bump=TASKS)
        clock.advance(11)  # beyond max_stale since last confirmed: never served stale
        late = await view.get()
        assert (late.status, late.value) == ("miss", {"1": "y", "2": "y"})
        assert builder.calls == 3
