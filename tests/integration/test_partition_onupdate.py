"""A partition column with a Python-side onupdate: the ORM changes it without history, so an
update of such an object moves every partition of its table."""

from __future__ import annotations

import itertools

from sqlalchemy import Integer, MetaData, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from freshkeep.integrations.sqlalchemy import table_source
from tests.integration.partition_shop import make_shop

_ticks = itertools.count(100)


class B(DeclarativeBase):
    metadata = MetaData()


class Job(B):
    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    customer_id: Mapped[int] = mapped_column(Integer, default=1, onupdate=lambda: next(_ticks))
    amount: Mapped[int] = mapped_column(Integer, default=0)


async def test_onupdate_moves_partition(tmp_path):
    shop = await make_shop(
        create_engine(f"sqlite:///{tmp_path / 'a.db'}"),
        partitioned=table_source(Job, by="customer_id"),
        metadata=B.metadata,
    )
    shop.model = Job
    with shop.sessions.begin() as s:
        s.add(Job(id=1))
    assert await shop.stale(1) == {}
    with shop.sessions.begin() as s:
        s.get(Job, 1).amount = 5  # onupdate moves the row to partition 100
    assert await shop.stale(1, 100) == {}
