"""Statements run during a flush by the application's own listeners: a row no flushed object
stands for moves every partition of its table; a statement after the flush is analysed alone."""

from __future__ import annotations

from sqlalchemy import ForeignKey, Integer, create_engine, event, update
from sqlalchemy.orm import Mapped, mapped_column

from tests.integration.partition_shop import Base, Customer, Order, make_shop


class Line(Base):
    __tablename__ = "lines"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"))
    qty: Mapped[int] = mapped_column(Integer, default=1)


def add_line_qty(mapper, connection, target):
    """A denormalisation listener: the order's amount follows its lines."""
    t = Order.__table__
    connection.execute(
        update(t).where(t.c.id == target.order_id).values(amount=t.c.amount + target.qty)
    )


async def shop_of(tmp_path):
    shop = await make_shop(create_engine(f"sqlite:///{tmp_path / 'a.db'}"))
    with shop.sessions.begin() as s:
        s.add_all([Customer(id=i) for i in (1, 2)])
        s.flush()
        s.add_all([Order(id=11, customer_id=1, amount=1), Order(id=12, customer_id=2, amount=2)])
    assert await shop.stale(1, 2) == {}
    return shop


async def test_listener_update_covered_by_another_order_in_the_flush(tmp_path):
    shop = await shop_of(tmp_path)
    event.listen(Line, "after_insert", add_line_qty)
    try:
        with shop.sessions.begin() as s:
            s.add(Order(id=13, customer_id=2, amount=0))  # an Order state: "covers" orders
            s.add(Line(id=1, order_id=11, qty=5))  # listener updates order 11 (customer 1)
        assert await shop.stale(1, 2) == {}
    finally:
        event.remove(Line, "after_insert", add_line_qty)


async def test_statement_in_a_later_after_flush_listener_is_lost(tmp_path):
    shop = await shop_of(tmp_path)

    def touch(session, ctx):
        t = Order.__table__
        session.connection().execute(update(t).where(t.c.id == 11).values(amount=77))

    event.listen(shop.sessions, "after_flush", touch)  # registered after track()'s
    try:
        with shop.sessions.begin() as s:
            s.add(Customer(id=3))
        assert await shop.stale(1, 2) == {}
    finally:
        event.remove(shop.sessions, "after_flush", touch)
