"""Core statements: a SET taken from the execute parameters, executemany, upserts and
INSERT OR REPLACE move the partitions of the rows they rewrote (or every partition)."""

from __future__ import annotations

from sqlalchemy import bindparam, create_engine, insert, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from tests.integration.partition_shop import Customer, Order, make_shop


async def shop_of(tmp_path):
    shop = await make_shop(create_engine(f"sqlite:///{tmp_path / 'a.db'}"))
    with shop.sessions.begin() as s:
        s.add_all([Customer(id=i) for i in (1, 2, 3)])
        s.flush()
        s.add_all([Order(id=11, customer_id=1, amount=1), Order(id=12, customer_id=2, amount=2)])
    assert await shop.stale(1, 2, 3) == {}
    return shop


async def test_update_set_clause_from_execute_parameters(tmp_path):
    shop = await shop_of(tmp_path)
    with shop.sessions.begin() as s:
        # No .values(): the SET clause comes from the parameters (SQLAlchemy's documented form)
        s.connection().execute(
            update(Order.__table__).where(Order.__table__.c.customer_id == 1), {"customer_id": 3}
        )
    assert await shop.stale(1, 3) == {}


async def test_executemany_update_set_from_parameters(tmp_path):
    shop = await shop_of(tmp_path)
    t = Order.__table__
    with shop.sessions.begin() as s:
        s.connection().execute(
            update(t).where(t.c.customer_id == bindparam("old")),
            [{"old": 1, "customer_id": 3}, {"old": 2, "customer_id": 3}],
        )
    assert await shop.stale(1, 2, 3) == {}


async def test_core_update_outside_session_set_from_parameters(tmp_path):
    shop = await shop_of(tmp_path)
    t = Order.__table__
    with shop.engine.begin() as conn:
        conn.execute(update(t).where(t.c.customer_id == 1), {"customer_id": 3})
    assert await shop.stale(1, 3) == {}


async def test_sqlite_upsert_do_update_moves_existing_row(tmp_path):
    shop = await shop_of(tmp_path)
    with shop.sessions.begin() as s:
        stmt = sqlite_insert(Order).values(id=11, customer_id=3, amount=9)
        stmt = stmt.on_conflict_do_update(
            index_elements=["id"], set_={"customer_id": stmt.excluded.customer_id}
        )
        s.execute(stmt)
    assert await shop.stale(1, 3) == {}


async def test_sqlite_upsert_do_update_other_column(tmp_path):
    shop = await shop_of(tmp_path)
    with shop.sessions.begin() as s:
        # the row (customer 1) keeps its customer; only amount changes; the insert names customer 3
        stmt = sqlite_insert(Order).values(id=11, customer_id=3, amount=9)
        stmt = stmt.on_conflict_do_update(index_elements=["id"], set_={"amount": 50})
        s.execute(stmt)
    assert await shop.stale(1, 3) == {}


async def test_insert_or_replace(tmp_path):
    shop = await shop_of(tmp_path)
    with shop.sessions.begin() as s:
        s.execute(insert(Order).prefix_with("OR REPLACE").values(id=11, customer_id=3, amount=9))
    assert await shop.stale(1, 3) == {}


async def test_orm_bulk_insert_on_conflict_multi(tmp_path):
    shop = await shop_of(tmp_path)
    with shop.sessions.begin() as s:
        stmt = sqlite_insert(Order.__table__).values(
            [{"id": 11, "customer_id": 3, "amount": 9}, {"id": 30, "customer_id": 3, "amount": 1}]
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["id"], set_={"amount": stmt.excluded.amount}
        )
        s.execute(stmt)
    assert await shop.stale(1, 3) == {}
