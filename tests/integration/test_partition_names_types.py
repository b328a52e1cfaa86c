"""Attribute names that differ from column names, and values whose Python type differs between
the write and the read (an id given as a string, an enum): both bucket alike."""

from __future__ import annotations

import enum

from sqlalchemy import Enum, Integer, MetaData, create_engine, update
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from freshkeep.integrations.sqlalchemy import table_source
from tests.integration.partition_shop import Customer, Order, make_shop


class B(DeclarativeBase):
    metadata = MetaData()


class Item(B):
    __tablename__ = "items"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner: Mapped[int] = mapped_column("customer_id", Integer)  # attribute != column name
    amount: Mapped[int] = mapped_column(Integer, default=0)


ITEMS = table_source(Item, by="customer_id")


async def test_orm_update_values_by_attribute_name(tmp_path):
    shop = await make_shop(
        create_engine(f"sqlite:///{tmp_path / 'a.db'}"), partitioned=ITEMS, metadata=B.metadata
    )
    shop.model = type(
        "M",
        (),
        {
            "id": Item.__table__.c.id,
            "amount": Item.__table__.c.amount,
            "customer_id": Item.__table__.c.customer_id,
        },
    )
    with shop.sessions.begin() as s:
        s.add_all([Item(id=1, owner=1), Item(id=2, owner=2)])
    assert await shop.stale(1, 2, 3) == {}
    with shop.sessions.begin() as s:
        s.execute(update(Item).where(Item.owner == 1).values(owner=3))
    assert await shop.stale(1, 3) == {}


async def test_orm_update_values_by_attribute_object(tmp_path):
    shop = await make_shop(
        create_engine(f"sqlite:///{tmp_path / 'a.db'}"), partitioned=ITEMS, metadata=B.metadata
    )
    shop.model = type(
        "M",
        (),
        {
            "id": Item.__table__.c.id,
            "amount": Item.__table__.c.amount,
            "customer_id": Item.__table__.c.customer_id,
        },
    )
    with shop.sessions.begin() as s:
        s.add_all([Item(id=1, owner=1), Item(id=2, owner=2)])
    assert await shop.stale(1, 2, 3) == {}
    with shop.sessions.begin() as s:
        s.execute(update(Item).where(Item.owner == 1).values({Item.owner: 3}))
    assert await shop.stale(1, 3) == {}


async def test_orm_bulk_insert_by_attribute_name(tmp_path):
    shop = await make_shop(
        create_engine(f"sqlite:///{tmp_path / 'a.db'}"), partitioned=ITEMS, metadata=B.metadata
    )
    shop.model = type(
        "M",
        (),
        {
            "id": Item.__table__.c.id,
            "amount": Item.__table__.c.amount,
            "customer_id": Item.__table__.c.customer_id,
        },
    )
    assert await shop.stale(1, 2) == {}
    with shop.sessions.begin() as s:
        s.bulk_insert_mappings(Item, [{"id": 5, "owner": 1}])
        s.bulk_save_objects([Item(id=6, owner=2)])
    assert await shop.stale(1, 2) == {}


async def test_write_with_str_value_for_int_column(tmp_path):
    """A form field gives "1"; the database stores 1; the reader asks for key 1."""
    shop = await make_shop(create_engine(f"sqlite:///{tmp_path / 'a.db'}"))
    with shop.sessions.begin() as s:
        s.add_all([Customer(id=1), Customer(id=2)])
        s.flush()
        s.add(Order(id=11, customer_id=1, amount=1))
    assert await shop.stale(1) == {}
    with shop.sessions.begin() as s:
        s.add(Order(id=12, customer_id="1", amount=7))
    assert await shop.stale(1) == {}


async def test_bulk_update_with_str_value(tmp_path):
    shop = await make_shop(create_engine(f"sqlite:///{tmp_path / 'a.db'}"))
    with shop.sessions.begin() as s:
        s.add_all([Customer(id=1), Customer(id=2)])
        s.flush()
        s.add(Order(id=11, customer_id=1, amount=1))
    assert await shop.stale(1) == {}
    with shop.sessions.begin() as s:
        s.execute(update(Order).where(Order.customer_id == "1").values(amount=5))
    assert await shop.stale(1) == {}


class Status(enum.Enum):
    OPEN = "open"
    DONE = "done"


class Ticket(B):
    __tablename__ = "tickets"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    customer_id: Mapped[Status] = mapped_column(Enum(Status))  # partition by an enum
    amount: Mapped[int] = mapped_column(Integer, default=0)


TICKETS = table_source(Ticket, by="customer_id")


async def test_enum_key_given_as_its_stored_text(tmp_path):
    """The view is read with the string the URL carries ("OPEN", what the DB stores)."""
    shop = await make_shop(
        create_engine(f"sqlite:///{tmp_path / 'a.db'}"),
        partitioned=TICKETS,
        metadata=B.metadata,
        keyfn=lambda k: Status[k],
    )
    shop.model = Ticket
    shop.truth_key = None
    orig = shop.truth
    shop.truth = lambda k: orig(Status[k] if isinstance(k, str) else k)
    assert await shop.stale("OPEN") == {}
    with shop.sessions.begin() as s:
        s.add(Ticket(id=1, customer_id=Status.OPEN))
    assert await shop.stale("OPEN") == {}
