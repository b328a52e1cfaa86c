"""Key-scoped revisions through the write hooks: a write invalidates only the keys it touched.

Each write path of the table "write path -> what it bumps" in the user guide is exercised on
SQLite and PostgreSQL: ORM insert / update moving the partition / delete, bulk UPDATE and
DELETE with an equality or IN on the column, a bulk statement without one, raw SQL, a Core
insert outside any session, and a builder's own dependencies (``ctx.depend``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import ForeignKey, Integer, String, delete, insert, select, text, update
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from freshkeep import BuildContext, Keeper, LocalBus
from freshkeep.core.partitions import Partitioned
from freshkeep.integrations.sqlalchemy import SQLAlchemyRevisions, table_source, track
from freshkeep.sql.schema import metadata as freshkeep_metadata
from tests.conftest import PgSchema


class Base(DeclarativeBase):
    pass


class Customer(Base):
    __tablename__ = "customers"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    region: Mapped[str] = mapped_column(String(20), default="eu")


class Order(Base):
    __tablename__ = "orders"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    amount: Mapped[int] = mapped_column(Integer, default=0)


class Line(Base):
    __tablename__ = "lines"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"))
    qty: Mapped[int] = mapped_column(Integer, default=1)


ORDERS = table_source(Order, by="customer_id")
LINES = table_source(Line, by="order_id")


@dataclass
class Shop:
    keeper: Keeper
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    builds: dict[Any, int]

    async def read(self, key: int) -> tuple[str, Any]:
        r = await self.keeper.views["totals"].get(key)
        return r.status, r.value

    async def reads(self, *keys: int) -> dict[int, str]:
        return {k: (await self.read(k))[0] for k in keys}


@pytest.fixture(params=["sqlite", "postgres"])
async def shop(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Shop]:
    if request.param == "sqlite":
        engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'shop.db'}")
    else:
        schema: PgSchema = request.getfixturevalue("pg_schema")
        engine = schema.async_engine()
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
        await conn.run_sync(freshkeep_metadata.create_all)
    keeper = Keeper(SQLAlchemyRevisions(engine), bus=LocalBus(), resync_interval=60)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    builds: dict[Any, int] = {}

    async def totals(ctx: BuildContext) -> dict[str, Any]:
        builds[ctx.key] = builds.get(ctx.key, 0) + 1
        async with sessions() as s:
            ids = list(
                (await s.execute(select(Order.id).where(Order.customer_id == ctx.key))).scalars()
            )
            await ctx.depend(*LINES.of(*ids))  # before the lines are read
            amounts = (
                await s.execute(select(Order.amount).where(Order.customer_id == ctx.key))
            ).scalars()
            qty = (await s.execute(select(Line.qty).where(Line.order_id.in_(ids)))).scalars()
            return {"orders": len(ids), "amount": sum(amounts), "qty": sum(qty)}

    keeper.view("totals", totals, sources=[ORDERS])
    keeper.partition(LINES)  # found while building: the hooks must know it too
    track(keeper, sessions)
    await keeper.start()
    async with sessions() as s, s.begin():
        s.add_all([Customer(id=i) for i in (1, 2, 3)])
        await s.flush()  # no relationship orders the inserts: flush each table in turn
        s.add_all([Order(id=10 + i, customer_id=i, amount=i) for i in (1, 2, 3)])
        await s.flush()
        s.add_all([Line(id=100 + i, order_id=10 + i) for i in (1, 2, 3)])
    shop = Shop(keeper, engine, sessions, builds)
    assert await shop.reads(1, 2, 3) == {1: "miss", 2: "miss", 3: "miss"}
    assert await shop.reads(1, 2, 3) == {1: "hit", 2: "hit", 3: "hit"}
    try:
        yield shop
    finally:
        await keeper.aclose()
        await engine.dispose()


async def test_an_orm_insert_invalidates_its_key_only(shop: Shop) -> None:
    async with shop.sessions() as s, s.begin():
        s.add(Order(id=21, customer_id=1, amount=5))
    assert await shop.read(1) == ("miss", {"orders": 2, "amount": 6, "qty": 1})
    assert await shop.reads(2, 3) == {2: "hit", 3: "hit"}


async def test_an_update_moving_the_row_invalidates_the_old_and_the_new_key(shop: Shop) -> None:
    async with shop.sessions() as s, s.begin():
        order = await s.get(Order, 11)
        assert order is not None
        order.customer_id = 2
    assert await shop.reads(1, 2, 3) == {1: "miss", 2: "miss", 3: "hit"}
    assert (await shop.read(2))[1]["orders"] == 2


async def test_an_update_of_another_column_and_a_delete_invalidate_the_rows_key(shop: Shop) -> None:
    async with shop.sessions() as s, s.begin():
        order = await s.get(Order, 12)
        assert order is not None
        order.amount = 40
    assert await shop.reads(1, 2, 3) == {1: "hit", 2: "miss", 3: "hit"}
    async with shop.sessions() as s, s.begin():
        line = await s.get(Line, 103)
        assert line is not None
        await s.delete(line)
    assert await shop.reads(1, 2, 3) == {1: "hit", 2: "hit", 3: "miss"}
    assert (await shop.read(3))[1]["qty"] == 0


async def test_an_expired_object_deleted_is_read_back_and_scoped(shop: Shop) -> None:
    async with shop.sessions() as s, s.begin():
        order = await s.get(Order, 13)
        assert order is not None
        await s.execute(delete(Line).where(Line.order_id == 13))
        s.expire(order)
        await s.delete(order)  # the ORM loads what it deletes: its customer_id is known
    assert await shop.reads(1, 2, 3) == {1: "hit", 2: "hit", 3: "miss"}


async def test_bulk_statements_with_an_equality_or_in_are_scoped(shop: Shop) -> None:
    async with shop.sessions() as s, s.begin():
        await s.execute(update(Order).where(Order.customer_id == 1).values(amount=7))
    assert await shop.reads(1, 2, 3) == {1: "miss", 2: "hit", 3: "hit"}
    async with shop.sessions() as s, s.begin():
        await s.execute(
            update(Order).where(Order.customer_id.in_([2, 3]), Order.amount > 0).values(amount=1)
        )
    assert await shop.reads(1, 2, 3) == {1: "hit", 2: "miss", 3: "miss"}
    async with shop.sessions() as s, s.begin():  # moves customer 1's orders to customer 3
        await s.execute(update(Order).where(Order.customer_id == 1).values(customer_id=3))
    assert await shop.reads(1, 2, 3) == {1: "miss", 2: "hit", 3: "miss"}
    assert (await shop.read(3))[1]["orders"] == 2
    async with shop.sessions() as s, s.begin():
        await s.execute(insert(Order), [{"id": 30, "customer_id": 2}, {"id": 31, "customer_id": 2}])
    assert await shop.reads(1, 2, 3) == {1: "hit", 2: "miss", 3: "hit"}


async def test_writes_whose_partitions_cannot_be_known_move_every_key(shop: Shop) -> None:
    async with shop.sessions() as s, s.begin():
        await s.execute(update(Order).where(Order.amount > 100).values(amount=0))
    assert await shop.reads(1, 2, 3) == {1: "miss", 2: "miss", 3: "miss"}
    async with shop.sessions() as s, s.begin():
        await s.execute(text("UPDATE orders SET amount = amount + 1 WHERE id = 12"))
    assert await shop.reads(1, 2, 3) == {1: "miss", 2: "miss", 3: "miss"}
    assert (await shop.read(2))[1]["amount"] == 3


async def test_a_write_outside_sessions_is_scoped_too(shop: Shop) -> None:
    async with shop.engine.begin() as conn:
        await conn.execute(insert(Order).values(id=40, customer_id=3, amount=2))
    await shop.keeper.resync()  # not published: seen at the next resync
    assert await shop.reads(1, 2, 3) == {1: "hit", 2: "hit", 3: "miss"}
    assert (await shop.read(3))[1]["amount"] == 5


async def test_a_dependency_found_while_building_is_followed(shop: Shop) -> None:
    async with shop.sessions() as s, s.begin():
        line = await s.get(Line, 101)
        assert line is not None
        line.qty = 9  # the lines table: only customer 1's entry depends on order 11's lines
    assert await shop.reads(1, 2, 3) == {1: "miss", 2: "hit", 3: "hit"}
    assert (await shop.read(1))[1]["qty"] == 9


async def test_a_manual_bump_of_the_table_moves_every_key_and_a_tag_moves_its_views(
    shop: Shop,
) -> None:
    await shop.keeper.bump("table:orders")
    assert await shop.reads(1, 2, 3) == {1: "miss", 2: "miss", 3: "miss"}
    await shop.keeper.bump(ORDERS.source(2))
    assert await shop.reads(1, 2, 3) == {1: "hit", 2: "miss", 3: "hit"}


def test_a_partition_names_a_real_column() -> None:
    from freshkeep.exceptions import ConfigurationError

    with pytest.raises(ConfigurationError, match="no column 'customer'"):
        table_source(Order, by="customer")
    assert table_source("orders", by="customer_id") == Partitioned("table:orders", "customer_id")
