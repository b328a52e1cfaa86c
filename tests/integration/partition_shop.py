"""A keyed view of orders by customer_id over a sync engine, with the write hooks installed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ForeignKey, Integer, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, sessionmaker

from freshkeep import BuildContext, Keeper, LocalBus
from freshkeep.integrations.sqlalchemy import SQLAlchemyRevisions, table_source, track
from freshkeep.sql.schema import metadata as fk_metadata


class Base(DeclarativeBase):
    pass


class Customer(Base):
    __tablename__ = "customers"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    orders: Mapped[list[Order]] = relationship(back_populates="customer")


class Order(Base):
    __tablename__ = "orders"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"), nullable=True)
    amount: Mapped[int] = mapped_column(Integer, default=0)
    customer: Mapped[Customer | None] = relationship(back_populates="orders")


ORDERS = table_source(Order, by="customer_id")


@dataclass
class Shop:
    keeper: Keeper
    engine: Any
    sessions: Any
    model: Any = Order
    view: str = "orders"
    builds: dict[Any, int] = field(default_factory=dict)

    def truth(self, key: Any) -> list[list[int]]:
        with self.engine.connect() as c:
            m = self.model
            return [
                list(r)
                for r in c.execute(
                    select(m.id, m.amount).where(m.customer_id == key).order_by(m.id)
                )
            ]

    async def read(self, key: Any) -> tuple[str, Any]:
        r = await self.keeper.views[self.view].get(key)
        return r.status, r.value

    async def stale(self, *keys: Any, resync: bool = True) -> dict[Any, Any]:
        """The keys whose view value differs from the database (after a resync)."""
        if resync:
            await self.keeper.resync()
        out = {}
        for k in keys:
            status, value = await self.read(k)
            t = self.truth(k)
            if value != t:
                out[k] = (status, value, t)
        return out


async def make_shop(
    engine, *, model=Order, partitioned=None, metadata=Base.metadata, keyfn=None, **sm_kw
) -> Shop:
    metadata.create_all(engine)
    fk_metadata.create_all(engine)
    keeper = Keeper(SQLAlchemyRevisions(engine), bus=LocalBus(), resync_interval=600)
    sessions = sessionmaker(engine, **sm_kw)
    shop = Shop(keeper, engine, sessions, model)

    def build(ctx: BuildContext) -> list[list[int]]:
        shop.builds[ctx.key] = shop.builds.get(ctx.key, 0) + 1
        return shop.truth(ctx.key if keyfn is None else keyfn(ctx.key))

    keeper.view("orders", build, sources=[partitioned or ORDERS])
    track(keeper, sessions)
    await keeper.start()
    return shop
