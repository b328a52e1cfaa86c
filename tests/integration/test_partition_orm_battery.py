"""ORM and Core paths whose partitions the hooks find: merge, relationship assignment, OR, IN
(subquery), multi-row values, INSERT ... SELECT."""

from __future__ import annotations

from sqlalchemy import (
    create_engine,
    delete,
    select,
    update,
)

from tests.integration.partition_shop import Customer, Order, make_shop


async def shop_of(tmp_path, **kw):
    shop = await make_shop(create_engine(f"sqlite:///{tmp_path / 'a.db'}"), **kw)
    with shop.sessions.begin() as s:
        s.add_all([Customer(id=i) for i in (1, 2, 3)])
        s.flush()
        s.add_all([Order(id=11, customer_id=1, amount=1), Order(id=12, customer_id=2, amount=2)])
    assert await shop.stale(1, 2, 3) == {}
    return shop


async def test_merge_detached_moved(tmp_path):
    shop = await shop_of(tmp_path)
    with shop.sessions.begin() as s:
        s.merge(Order(id=11, customer_id=3, amount=1))
    assert await shop.stale(1, 3) == {}


async def test_orm_bulk_update_by_pk(tmp_path):
    shop = await shop_of(tmp_path)
    with shop.sessions.begin() as s:
        s.execute(update(Order), [{"id": 11, "customer_id": 3}])
    assert await shop.stale(1, 3) == {}


async def test_synchronize_fetch_update(tmp_path):
    shop = await shop_of(tmp_path)
    with shop.sessions.begin() as s:
        s.execute(
            update(Order)
            .where(Order.customer_id == 1)
            .values(customer_id=3)
            .execution_options(synchronize_session="fetch")
        )
    assert await shop.stale(1, 3) == {}


async def test_delete_in_subquery_and_or_not(tmp_path):
    shop = await shop_of(tmp_path)
    with shop.sessions.begin() as s:
        s.execute(
            update(Order)
            .where((Order.customer_id == 1) | (Order.customer_id == 2))
            .values(amount=8)
        )
    assert await shop.stale(1, 2) == {}
    with shop.sessions.begin() as s:
        s.execute(
            delete(Order).where(Order.customer_id.in_(select(Customer.id).where(Customer.id < 2)))
        )
    assert await shop.stale(1, 2) == {}
    with shop.sessions.begin() as s:
        s.execute(update(Order).where(~(Order.customer_id != 2)).values(amount=9))
    assert await shop.stale(1, 2) == {}


async def test_insert_multi_values_and_from_select(tmp_path):
    shop = await shop_of(tmp_path)
    from sqlalchemy import insert, literal

    with shop.sessions.begin() as s:
        s.execute(
            insert(Order).values([{"id": 20, "customer_id": 1}, {"id": 21, "customer_id": 2}])
        )
    assert await shop.stale(1, 2) == {}
    with shop.sessions.begin() as s:
        s.execute(
            insert(Order.__table__).from_select(
                ["id", "customer_id", "amount"],
                select(Order.id + 100, Order.customer_id, literal(5)).where(Order.id == 11),
            )
        )
    assert await shop.stale(1, 2) == {}


async def test_savepoint_rollback_then_commit(tmp_path):
    shop = await shop_of(tmp_path)
    with shop.sessions.begin() as s:
        sp = s.begin_nested()
        s.get(Order, 11).customer_id = 3
        sp.rollback()
        s.get(Order, 12).customer_id = 3
    assert await shop.stale(1, 2, 3) == {}
