"""Session.bulk_save_objects / bulk_update_mappings fire no flush event: their statements are
analysed alone, and an UPDATE by primary key moves every partition of its table."""

from __future__ import annotations

from sqlalchemy import create_engine

from tests.integration.partition_shop import Customer, Order, make_shop


async def shop_of(tmp_path):
    shop = await make_shop(create_engine(f"sqlite:///{tmp_path / 'a.db'}"))
    with shop.sessions.begin() as s:
        s.add_all([Customer(id=i) for i in (1, 2, 3)])
        s.flush()
        s.add_all([Order(id=11, customer_id=1, amount=1), Order(id=12, customer_id=2, amount=2)])
    assert await shop.stale(1, 2, 3) == {}
    return shop


async def test_bulk_update_mappings(tmp_path):
    shop = await shop_of(tmp_path)
    with shop.sessions.begin() as s:
        s.bulk_update_mappings(Order, [{"id": 11, "customer_id": 3}])
    assert await shop.stale(1, 3) == {}


async def test_bulk_save_objects_update(tmp_path):
    shop = await shop_of(tmp_path)
    with shop.sessions() as s:
        o = s.get(Order, 11)
        s.expunge(o)
        o.amount = 40
    with shop.sessions.begin() as s:
        s.bulk_save_objects([o])
    assert await shop.stale(1) == {}
