"""A model with a schema (main.orders) and a partition declared by the bare name, as the
triggers require: a write whose partitions are unknown moves the bare name's partitions too."""

from __future__ import annotations

from sqlalchemy import Column, Integer, MetaData, Table, create_engine, text

from freshkeep.core.partitions import Partitioned
from tests.integration.partition_shop import make_shop

md = MetaData()
orders = Table(
    "orders",
    md,
    Column("id", Integer, primary_key=True),
    Column("customer_id", Integer),
    Column("amount", Integer, default=0),
    schema="main",
)
BARE = Partitioned("table:orders", "customer_id")


class M:
    id = orders.c.id
    amount = orders.c.amount
    customer_id = orders.c.customer_id


async def shop_of(tmp_path):
    shop = await make_shop(
        create_engine(f"sqlite:///{tmp_path / 'a.db'}"), partitioned=BARE, metadata=md
    )
    shop.model = M
    with shop.sessions.begin() as s:
        s.execute(orders.insert(), [{"id": 11, "customer_id": 1}, {"id": 12, "customer_id": 2}])
    assert await shop.stale(1, 2) == {}
    return shop


async def test_known_partition_write_is_seen(tmp_path):
    shop = await shop_of(tmp_path)
    with shop.sessions.begin() as s:
        s.execute(orders.update().where(orders.c.customer_id == 1).values(amount=5))
    assert await shop.stale(1, 2) == {}


async def test_unknown_partition_write_moves_every_partition(tmp_path):
    shop = await shop_of(tmp_path)
    with shop.sessions.begin() as s:
        s.execute(orders.update().where(orders.c.id == 11).values(amount=5))
    assert await shop.stale(1, 2) == {}


async def test_raw_sql_on_qualified_table(tmp_path):
    shop = await shop_of(tmp_path)
    with shop.sessions.begin() as s:
        s.execute(text("UPDATE main.orders SET amount = 6 WHERE id = 11"))
    assert await shop.stale(1, 2) == {}
