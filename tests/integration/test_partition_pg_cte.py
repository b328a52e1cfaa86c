"""PostgreSQL: a SELECT whose CTE is a data-modifying statement writes its table: the hooks
move it and every partition of it."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from tests.integration.partition_shop import Customer, Order, make_shop


async def shop_of(pg_schema):
    shop = await make_shop(pg_schema.sync_engine())
    with shop.sessions.begin() as s:
        s.add_all([Customer(id=i) for i in (1, 2, 3)])
        s.flush()
        s.add_all([Order(id=11, customer_id=1, amount=1), Order(id=12, customer_id=2, amount=2)])
    assert await shop.stale(1, 2, 3) == {}
    return shop


async def test_select_of_an_update_cte(pg_schema):
    shop = await shop_of(pg_schema)
    with shop.sessions.begin() as s:
        upd = update(Order).where(Order.id == 11).values(amount=99).returning(Order.id).cte("u")
        s.execute(select(upd.c.id)).all()
    assert await shop.stale(1) == {}


async def test_pg_upsert_moves_existing_row(pg_schema):
    shop = await shop_of(pg_schema)
    with shop.sessions.begin() as s:
        stmt = pg_insert(Order).values(id=11, customer_id=3, amount=9)
        s.execute(
            stmt.on_conflict_do_update(
                index_elements=["id"], set_={"customer_id": stmt.excluded.customer_id}
            )
        )
    assert await shop.stale(1, 3) == {}
