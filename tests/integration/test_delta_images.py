"""A change's images are the rows as the database stores them, read from it: a delta applied
from them equals a rebuild even when the ORM's state differs from the row (an object loaded
before another commit, a value the flush generated, a value stored other than as given)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from itertools import count
from pathlib import Path
from typing import Any, ClassVar

import orjson
import pytest
from sqlalchemy import Integer, Numeric, String, create_engine, func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from freshkeep import Change, Keeper, LocalBus, Section
from freshkeep.demo.hub import Hub
from freshkeep.demo.models import Task as HubTask
from freshkeep.demo.summary import SummaryBuilders
from freshkeep.integrations.sqlalchemy import SQLAlchemyRevisions, track
from tests.conftest import POSTGRES_URL, need_service
from tests.integration.sa_support import TASKS, Task, at, sqlite_db, sqlite_engine

_stamps = count(100)


class Base(DeclarativeBase):
    pass


class Doc(Base):
    __tablename__ = "docs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    title: Mapped[str] = mapped_column(String(50))
    stamp: Mapped[int] = mapped_column(Integer, default=0, onupdate=lambda: next(_stamps))


class Versioned(Base):
    __tablename__ = "versioned"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    kind: Mapped[str | None] = mapped_column(String(10), server_default="x", nullable=True)
    ver: Mapped[int] = mapped_column(Integer, nullable=False)
    __mapper_args__: ClassVar[dict[str, Any]] = {"version_id_col": ver}


class Item(Base):
    __tablename__ = "items"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    amount: Mapped[Decimal] = mapped_column(Numeric(10, 2))


class Pair(Base):
    __tablename__ = "pairs"
    a: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    b: Mapped[str] = mapped_column(String(10), primary_key=True)
    label: Mapped[str] = mapped_column(String(10))


def counting(column: str) -> Callable[[dict[str, Any], list[Change]], dict[str, Any]]:
    """A delta of ``{"n": {value of column: rows}}``."""

    def apply(value: dict[str, Any], changes: list[Change]) -> dict[str, Any]:
        n = value["n"]
        for c in changes:
            for row, step in ((c.before, -1), (c.after, 1)):
                if row is not None:
                    n[str(row[column])] = n.get(str(row[column]), 0) + step
        return {"n": {k: v for k, v in sorted(n.items()) if v}}

    return apply


class Tracked:
    def __init__(self, engine: AsyncEngine, keeper: Keeper, model: Any) -> None:
        self.engine = engine
        self.keeper = keeper
        self.maker = async_sessionmaker(engine, expire_on_commit=False)
        self.model = model
        self.seen: list[Change] = []

    def view(self, column: str, table: str) -> Any:
        async def build(ctx: Any) -> dict[str, Any]:
            async with self.maker() as s:
                values = (await s.execute(select(getattr(self.model, column)))).scalars().all()
            n: dict[str, int] = {}
            for v in values:
                n[str(v)] = n.get(str(v), 0) + 1
            return {"n": dict(sorted(n.items()))}

        count_ = counting(column)

        def apply(value: dict[str, Any], changes: list[Change]) -> dict[str, Any]:
            self.seen.extend(changes)
            return count_(value, changes)

        return self.keeper.view("v", sections={"all": Section(build, [table], apply=apply)})

    async def served_and_rebuilt(self, view: Any) -> tuple[Any, Any]:
        read = await view.get()
        view.apply_deltas = False
        rebuilt = await view.get(refresh=True)
        view.apply_deltas = True
        return read, rebuilt


@asynccontextmanager
async def tracked(engine: AsyncEngine, model: Any) -> AsyncIterator[Tracked]:
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    revisions = SQLAlchemyRevisions(engine)
    await revisions.create_table()
    t = Tracked(engine, Keeper(revisions, bus=LocalBus()), model)
    tracking = track(t.keeper, t.maker, models=(model,))
    try:
        yield t
    finally:
        tracking.remove()
        await t.keeper.aclose()
        await engine.dispose()


async def test_before_image_is_the_row_not_an_object_loaded_before_another_commit(
    tmp_path: Path,
) -> None:
    async with sqlite_db(tmp_path / "d.db") as db:
        async with db.session() as s, s.begin():
            s.add(Task(id=1, title="a", updated_at=at(1)))

        async def build(ctx: Any) -> dict[str, Any]:
            async with db.session() as s:
                titles = (await s.execute(select(Task.title))).scalars().all()
            return {"n": {t: titles.count(t) for t in sorted(set(titles))}}

        view = db.keeper.view(
            "titles", sections={"all": Section(build, [TASKS], apply=counting("title"))}
        )
        assert (await view.get()).value == {"n": {"a": 1}}
        a = db.session()  # expire_on_commit=False: its object keeps title "a"
        async with a.begin():
            task = await a.get(Task, 1)
        async with db.session() as b, b.begin():
            loaded = await b.get(Task, 1)
            assert loaded is not None
            loaded.title = "b"
        first = await view.get()
        assert first.reason == "delta" and first.value == {"n": {"b": 1}}
        async with a.begin():
            assert task is not None
            task.title = "c"  # the row goes b -> c, not a -> c
        await a.close()
        read = await view.get()
        assert read.reason == "delta" and read.value == {"n": {"c": 1}}


async def test_an_unloaded_old_value_is_read_from_the_row(tmp_path: Path) -> None:
    async with sqlite_db(tmp_path / "d.db") as db:
        async with db.session() as s, s.begin():
            s.add(Task(id=1, title="a", updated_at=at(1)))
        seen: list[Change] = []

        async def build(ctx: Any) -> dict[str, Any]:
            return {"n": {}}

        def apply(value: dict[str, Any], changes: list[Change]) -> dict[str, Any]:
            seen.extend(changes)
            return value

        view = db.keeper.view("v", sections={"all": Section(build, [TASKS], apply=apply)})
        await view.get()
        async with db.session() as s, s.begin():
            t = await s.get(Task, 1)
            assert t is not None
            s.expire(t, ["title"])
            t.title = "z"  # its old value was never loaded
        assert (await view.get()).reason == "delta"
        (change,) = seen
        assert change.before is not None and change.after is not None
        assert (change.before["title"], change.after["title"]) == ("a", "z")


async def test_onupdate_value_is_in_the_after_image_only(tmp_path: Path) -> None:
    async with tracked(sqlite_engine(tmp_path / "o.db"), Doc) as t:
        async with t.maker() as s, s.begin():
            s.add(Doc(id=1, title="a"))
        view = t.view("stamp", "table:docs")
        assert (await view.get()).value == {"n": {"0": 1}}
        async with t.maker() as s, s.begin():
            doc = await s.get(Doc, 1)
            assert doc is not None
            doc.title = "b"
        read, rebuilt = await t.served_and_rebuilt(view)
        assert read.reason == "delta" and read.value == rebuilt.value
        (update,) = [c for c in t.seen if c.op == "update"]
        assert update.before is not None and update.before["stamp"] == 0


@pytest.mark.parametrize("kind", [None, "k"])
async def test_version_and_server_default_images_are_as_stored(
    tmp_path: Path, kind: str | None
) -> None:
    async with tracked(sqlite_engine(tmp_path / "v.db"), Versioned) as t:
        view = t.view("kind", "table:versioned")
        await view.get()
        async with t.maker() as s, s.begin():
            s.add(Versioned(id=1, kind=kind))
        read, rebuilt = await t.served_and_rebuilt(view)
        assert read.reason == "delta" and read.value == rebuilt.value
        async with t.maker() as s, s.begin():
            row = await s.get(Versioned, 1)
            assert row is not None
            row.kind = "j"
        read, rebuilt = await t.served_and_rebuilt(view)
        assert read.reason == "delta" and read.value == rebuilt.value
        update = [c for c in t.seen if c.op == "update"][-1]
        assert update.before is not None and update.after is not None
        assert (update.before["ver"], update.after["ver"]) == (1, 2)


async def test_rows_of_a_composite_primary_key_are_read_by_it(tmp_path: Path) -> None:
    async with tracked(sqlite_engine(tmp_path / "p.db"), Pair) as t:
        async with t.maker() as s, s.begin():
            s.add_all([Pair(a=i % 3, b=str(i), label="x") for i in range(9)])
        view = t.view("label", "table:pairs")
        await view.get()
        async with t.maker() as s, s.begin():
            pairs = (await s.scalars(select(Pair).order_by(Pair.b))).all()
            for p in pairs[:4]:
                p.label = f"y{p.a}"
            await s.delete(pairs[5])
            s.add(Pair(a=7, b="7", label="z"))
        read, rebuilt = await t.served_and_rebuilt(view)
        assert read.reason == "delta" and read.value == rebuilt.value
        assert {c.op for c in t.seen} == {"insert", "update", "delete"}


@asynccontextmanager
async def pg_database(prefix: str) -> AsyncIterator[str]:
    need_service("PostgreSQL", POSTGRES_URL, 5432)
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(
        POSTGRES_URL.replace("+asyncpg", "+psycopg2"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.mark.postgres
async def test_numeric_after_image_is_rounded_as_stored() -> None:
    async with pg_database("fk_img") as url, tracked(create_async_engine(url), Item) as t:

        async def build(ctx: Any) -> dict[str, Any]:
            async with t.maker() as s:
                total = await s.scalar(select(func.coalesce(func.sum(Item.amount), 0)))
            return {"total": str(Decimal(total).quantize(Decimal("0.001")))}

        def apply(value: dict[str, Any], changes: list[Change]) -> dict[str, Any]:
            total = Decimal(value["total"])
            for c in changes:
                total -= Decimal(c.before["amount"]) if c.before else 0
                total += Decimal(c.after["amount"]) if c.after else 0
            return {"total": str(total.quantize(Decimal("0.001")))}

        view = t.keeper.view("sum", sections={"all": Section(build, ["table:items"], apply=apply)})
        assert (await view.get()).value == {"total": "0.000"}
        async with t.maker() as s, s.begin():
            s.add(Item(id=1, amount=Decimal("1.005")))
        read, rebuilt = await t.served_and_rebuilt(view)
        assert read.reason == "delta" and read.value == rebuilt.value == {"total": "1.010"}


@pytest.mark.postgres
async def test_concurrent_writers_of_the_same_rows_apply_what_each_wrote() -> None:
    async with (
        pg_database("fk_img_conc") as url,
        tracked(create_async_engine(url, pool_size=8), Item) as t,
    ):
        async with t.maker() as s, s.begin():
            s.add_all([Item(id=i, amount=Decimal("1.00")) for i in range(1, 4)])
        view = t.view("amount", "table:items")
        await view.get()

        async def writer(n: int) -> None:
            for step in range(6):
                async with t.maker() as s, s.begin():
                    items = (await s.scalars(select(Item).order_by(Item.id))).all()
                    await asyncio.sleep(0)  # let the others load the same rows
                    for item in items:
                        if (item.id + step + n) % 2:
                            item.amount = Decimal(f"{n * 10 + step}.00")  # as stored

        applied = 0
        for _ in range(5):  # a round whose commits were told out of order rebuilds
            await asyncio.gather(*(writer(n) for n in range(6)))
            read, rebuilt = await t.served_and_rebuilt(view)
            assert read.value == rebuilt.value
            applied += read.reason == "delta"
        assert applied >= 1


@pytest.fixture
async def pg_hub() -> AsyncIterator[Hub]:
    async with pg_database("fk_img_hub") as url:
        hub = Hub.create(url, seed_tasks=10, triggers=False)
        try:
            await hub.start()
            yield hub
        finally:
            if hub.started:
                await hub.stop()


async def _rebuilt(hub: Hub) -> Any:
    built = await SummaryBuilders(hub.sessionmaker).core(None)  # type: ignore[arg-type]
    return orjson.loads(orjson.dumps(built))


@pytest.mark.postgres
async def test_interleaved_updates_of_one_task_apply_what_each_wrote(pg_hub: Hub) -> None:
    hub = pg_hub
    await hub.summary.get()
    async with hub.sessionmaker() as s:
        open_tasks = select(HubTask.id).where(HubTask.status != "done").order_by(HubTask.id)
        tid = (await s.scalars(open_tasks)).first()
    async with hub.sessionmaker() as s, s.begin():  # unassigned: counted by status alone
        unassign = await s.get(HubTask, tid)
        assert unassign is not None
        unassign.assignee_id = None
    await hub.summary.get()
    a = hub.sessionmaker()
    await a.begin()
    ta = await a.get(HubTask, tid)  # request A loads the task
    assert ta is not None
    old = ta.status
    async with hub.sessionmaker() as b, b.begin():  # request B finishes it and commits
        tb = await b.get(HubTask, tid)
        assert tb is not None
        tb.status = "done"
    await hub.summary.get()
    ta.status = "blocked" if old != "blocked" else "progress"  # A writes its stale object
    await a.commit()
    await a.close()
    read = await hub.summary.get()
    assert hub.summary.stats.deltas.get("core", 0) >= 1
    served = orjson.loads(read.body)["totals"]["tasks_by_status"]
    assert served == (await _rebuilt(hub))["totals"]["tasks_by_status"]


@pytest.mark.postgres
async def test_a_time_in_another_zone_is_applied_as_stored(pg_hub: Hub) -> None:
    hub = pg_hub
    await hub.summary.get()
    async with hub.sessionmaker() as s, s.begin():
        task = (await s.scalars(select(HubTask).order_by(HubTask.id))).first()
        assert task is not None
        task.updated_at = datetime.now(timezone(timedelta(hours=2))) + timedelta(days=1)
    read = await hub.summary.get()
    assert read.reason == "delta"
    assert orjson.loads(read.body)["topics"] == (await _rebuilt(hub))["topics"]
