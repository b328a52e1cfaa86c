"""The README's and the user guide's examples, run as they are written (on SQLite files in a
temporary directory), with the names their text gives them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Column, Float, ForeignKey, Integer, MetaData, String, Table, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from starlette.applications import Starlette

from freshkeep import BuildContext, Keeper, UnavailableError
from tests.docs_blocks import python_block, run_block


class Base(DeclarativeBase):
    pass


class Topic(Base):
    __tablename__ = "topics"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(100), default="")


class Task(Base):
    __tablename__ = "tasks"
    id: Mapped[int] = mapped_column(primary_key=True)
    topic_id: Mapped[int] = mapped_column(ForeignKey("topics.id"))
    title: Mapped[str] = mapped_column(String(100), default="")


class ProgressEvent(Base):
    __tablename__ = "progress_events"
    id: Mapped[int] = mapped_column(primary_key=True)
    summary: Mapped[str] = mapped_column(String(200))


class Order(Base):
    __tablename__ = "orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int]


class Line(Base):
    __tablename__ = "lines"
    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"))


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Run in an empty directory: the examples open ``sqlite+aiosqlite:///app.db``."""
    monkeypatch.chdir(tmp_path)
    yield tmp_path


async def create_tables(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app")


@pytest.fixture
async def quickstart(in_tmp: Path) -> AsyncIterator[dict[str, Any]]:
    """The user guide's quickstart, its tables created."""
    given = {"Task": Task, "ProgressEvent": ProgressEvent}
    found = given | await run_block(python_block("user-guide.md", "quickstart"), given)
    await create_tables(found["engine"])
    await found["revisions"].create_table()
    try:
        yield found
    finally:
        await found["keeper"].aclose()
        await found["engine"].dispose()


async def test_the_readme_service_serves_miss_hit_then_a_rebuild(in_tmp: Path) -> None:
    names: dict[str, Any] = {}

    async def build_core() -> dict[str, Any]:
        async with names["Session"]() as s:
            return {"tasks": len((await s.scalars(select(Task))).all())}

    async def build_progress() -> dict[str, Any]:
        async with names["Session"]() as s:
            return {"progress": len((await s.scalars(select(ProgressEvent))).all())}

    names |= {"build_core": build_core, "build_progress": build_progress}
    block = python_block("README.md", "in-your-service")
    words = ("freshkeep", "keeper", "HitFastPath", "cached_route", "Policy")
    ours = [line for line in block.code.splitlines() if any(w in line for w in words)]
    assert len(ours) <= 8, ours  # adopting freshkeep in a FastAPI app: at most 8 lines
    found = await run_block(block, names)
    names |= found
    engine, keeper = found["engine"], found["keeper"]
    try:
        await create_tables(engine)
        await keeper.revisions.create_table()
        assert (in_tmp / "app.db").exists()
        async with client(found["app"]) as http:
            first = await http.get("/state/summary")
            second = await http.get("/state/summary")
            async with found["Session"]() as s:  # a tracked commit bumps progress_events
                s.add(ProgressEvent(summary="hello"))
                await s.commit()
            third = await http.get("/state/summary")
            cached = await http.get(
                "/state/summary", headers={"if-none-match": third.headers["etag"]}
            )
        assert [r.headers["x-freshkeep-cache"] for r in (first, second, third)] == [
            "miss",
            "hit",
            "miss",  # this process's own commit: read-your-writes, even under swr
        ]
        assert first.json() == {"tasks": 0, "progress": 0}
        assert third.json() == {"tasks": 0, "progress": 1} and cached.status_code == 304
        view = found["get_summary"].view
        assert view.policy.mode == "swr" and view.sources == (
            "table:progress_events",
            "table:tasks",
            "table:topics",
        )
    finally:
        await keeper.aclose()
        await engine.dispose()


async def test_the_quickstart_answers_as_its_headers_say(quickstart: dict[str, Any]) -> None:
    Session = quickstart["Session"]
    async with Session() as s:
        s.add_all([Topic(id=1), Task(id=1, topic_id=1)])
        await s.commit()
    async with client(quickstart["app"]) as http:
        miss = await http.get("/state/summary")
        hit = await http.get("/state/summary")
        async with Session() as s:
            s.add(ProgressEvent(summary="hello"))
            await s.commit()
        section = await http.get("/state/summary")
        not_modified = await http.get(
            "/state/summary", headers={"if-none-match": section.headers["etag"]}
        )
    assert (miss.headers["x-freshkeep-cache"], miss.headers["cache-status"]) == (
        "miss",
        "freshkeep; fwd=miss; stored",
    )
    assert (hit.headers["x-freshkeep-cache"], hit.headers["cache-status"]) == (
        "hit",
        "freshkeep; hit",
    )
    assert (section.headers["x-freshkeep-cache"], section.headers["cache-status"]) == (
        "section",
        "freshkeep; fwd=partial; stored",
    )
    assert section.json() == {"tasks": 1, "progress": ["hello"]}
    assert not_modified.status_code == 304


async def test_a_keyed_view_and_its_endpoint(quickstart: dict[str, Any]) -> None:
    """The keyed view continues the quickstart; ``endpoint`` serves the same view."""

    async def build_topic(ctx: BuildContext) -> dict[str, Any]:
        return {"topic": ctx.key}

    names = {**quickstart, "build_topic": build_topic, "Topic": Topic}
    keyed = await run_block(python_block("user-guide.md", "keyed-view"), names)
    async with client(quickstart["app"]) as http:
        first = await http.get("/topics/1")
        again = await http.get("/topics/1")
        async with quickstart["Session"]() as s:  # a write to any row of tasks...
            s.add_all([Topic(id=2), Task(id=5, topic_id=2)])
            await s.commit()
        after = await http.get("/topics/1")  # ...changes every key's entry
    assert first.json() == {"topic": 1}
    assert [r.headers["x-freshkeep-cache"] for r in (first, again, after)] == [
        "miss",
        "hit",
        "miss",
    ]
    route = (await run_block(python_block("user-guide.md", "endpoint"), keyed))["route"]
    async with client(Starlette(routes=[route])) as http:
        served = await http.get("/topics/1")
    assert served.json() == {"topic": 1}
    assert served.headers["x-freshkeep-cache"] == "hit"  # the entry the route above built


async def test_key_scoped_revisions_leave_other_keys_a_hit(in_tmp: Path) -> None:
    from sqlalchemy import select

    from freshkeep.integrations.sqlalchemy import track
    from freshkeep.sql import SQLAlchemyRevisions, table_source

    engine = create_async_engine("sqlite+aiosqlite:///orders.db")
    await create_tables(engine)
    revisions = SQLAlchemyRevisions(engine)
    await revisions.create_table()
    keeper, sessions = Keeper(revisions), async_sessionmaker(engine)
    async with sessions() as s:
        s.add_all([Order(id=1, customer_id=17), Order(id=2, customer_id=18)])
        s.add_all([Line(id=1, order_id=1), Line(id=2, order_id=2)])
        await s.commit()
    names = {"keeper": keeper, "sessions": sessions, "Order": Order, "Line": Line}
    names |= {"select": select, "BuildContext": BuildContext}
    names |= {"table_source": table_source, "track": track}
    try:
        found = await run_block(python_block("user-guide.md", "key-scoped"), names)
        view = found["view"]
        assert view.peek(17) is not None  # the block read customer 17

        async def write(*rows: Any) -> None:
            async with sessions() as s:
                s.add_all(rows)
                await s.commit()

        await write(Order(id=3, customer_id=18))  # customer 18's partition
        assert (await view.get(17)).status == "hit"
        await write(Line(id=3, order_id=2))  # a line of customer 18's order
        assert (await view.get(17)).status == "hit"
        await write(Line(id=4, order_id=1))  # a line of customer 17's order: found while building
        assert (await view.get(17)).status == "miss"
        await write(Order(id=4, customer_id=17))
        assert (await view.get(17)).status == "miss"
    finally:
        await keeper.aclose()
        await engine.dispose()


async def test_the_unavailable_handler_answers_503() -> None:
    keeper = Keeper()

    async def failing(ctx: BuildContext) -> dict[str, Any]:
        raise RuntimeError("SELECT secret FROM payroll")

    summary = keeper.view("summary", failing, sources=["table:tasks"])
    app = FastAPI()

    @app.get("/state/summary")
    async def read_summary() -> Any:
        return (await summary.get()).value

    await run_block(python_block("user-guide.md", "unavailable-handler"), {"app": app})
    async with client(app) as http:
        response = await http.get("/state/summary")
    assert response.status_code == 503
    body = response.json()
    assert body["error"] == "unavailable" and len(body["error_id"]) == 16
    assert "payroll" not in response.text
    with pytest.raises(UnavailableError):
        await summary.get()


async def test_a_watermark_is_count_at_max(in_tmp: Path) -> None:
    metadata = MetaData()
    orders_table = Table(
        "legacy_orders",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("updated_at", Float, nullable=False),
    )
    engine = create_async_engine("sqlite+aiosqlite:///legacy.db")
    try:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
            await conn.execute(insert(orders_table), [{"updated_at": 10.0}, {"updated_at": 12.5}])
        names = {"engine": engine, "orders_table": orders_table}
        found = await run_block(python_block("user-guide.md", "watermark"), names)
        revisions = found["revisions"]
        assert await revisions.read(["legacy:orders"]) == {"legacy:orders": "2@12.5"}
        async with engine.begin() as conn:  # another program writes
            await conn.execute(insert(orders_table), [{"updated_at": 13.0}])
        assert await revisions.read(["legacy:orders"]) == {"legacy:orders": "3@13.0"}
    finally:
        await engine.dispose()


async def test_the_testing_example_passes() -> None:
    found = await run_block(python_block("user-guide.md", "testing"), {})
    await found["test_summary_is_rebuilt_after_a_write"]()
