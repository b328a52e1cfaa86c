"""ORM update of the partition column of an object whose old value was never loaded: every
partition of the table moves (its old partition cannot be known)."""

from __future__ import annotations

from sqlalchemy import create_engine
from sqlalchemy.orm import load_only

from tests.integration.partition_shop import Customer, Order, make_shop


async def seed(shop):
    with shop.sessions.begin() as s:
        s.add_all([Customer(id=i) for i in (1, 2)])
        s.flush()
        s.add_all([Order(id=11, customer_id=1, amount=1), Order(id=12, customer_id=2, amount=2)])
    assert await shop.stale(1, 2) == {}
    assert (await shop.read(1))[0] == "hit"


async def test_expire_on_commit_then_move(tmp_path):
    """Default expire_on_commit=True: object loaded, committed, then moved."""
    shop = await make_shop(create_engine(f"sqlite:///{tmp_path / 'a.db'}"))
    await seed(shop)
    with shop.sessions() as s:
        o = s.get(Order, 11)
        o.amount = 5
        s.commit()  # o expires
        o.customer_id = 2  # old value (1) never loaded
        s.commit()
    assert await shop.stale(1, 2) == {}


async def test_expired_attribute_then_move(tmp_path):
    shop = await make_shop(create_engine(f"sqlite:///{tmp_path / 'a.db'}"))
    await seed(shop)
    with shop.sessions.begin() as s:
        o = s.get(Order, 11)
        s.expire(o, ["customer_id"])
        o.customer_id = 2
    assert await shop.stale(1, 2) == {}


async def test_load_only_then_move(tmp_path):
    shop = await make_shop(create_engine(f"sqlite:///{tmp_path / 'a.db'}"))
    await seed(shop)
    with shop.sessions.begin() as s:
        o = s.query(Order).options(load_only(Order.amount)).filter_by(id=11).one()
        o.customer_id = 2
    assert await shop.stale(1, 2) == {}


async def test_relationship_assignment_on_expired_object(tmp_path):
    shop = await make_shop(create_engine(f"sqlite:///{tmp_path / 'a.db'}"))
    await seed(shop)
    with shop.sessions() as s:
        o = s.get(Order, 11)
        c2 = s.get(Customer, 2)
        s.commit()
        o.customer = c2  # relationship, not the column
        s.commit()
    assert await shop.stale(1, 2) == {}


async def test_relationship_assignment_loaded(tmp_path):
    shop = await make_shop(create_engine(f"sqlite:///{tmp_path / 'a.db'}"))
    await seed(shop)
    with shop.sessions.begin() as s:
        o = s.get(Order, 11)
        c2 = s.get(Customer, 2)
        o.customer = c2
    assert await shop.stale(1, 2) == {}


async def test_collection_append_moves_child(tmp_path):
    shop = await make_shop(create_engine(f"sqlite:///{tmp_path / 'a.db'}"))
    await seed(shop)
    with shop.sessions.begin() as s:
        o = s.get(Order, 11)
        c2 = s.get(Customer, 2)
        c2.orders.append(o)
    assert await shop.stale(1, 2) == {}


async def test_parent_delete_nulls_children(tmp_path):
    shop = await make_shop(create_engine(f"sqlite:///{tmp_path / 'a.db'}"))
    await seed(shop)
    with shop.sessions.begin() as s:
        c1 = s.get(Customer, 1)
        s.delete(c1)  # orders.customer_id set NULL by the ORM
    assert await shop.stale(1, 2, None) == {}
