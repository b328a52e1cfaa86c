"""What reading a change's images from the database costs a write (user guide, "Delta sections").

    python -m benchmarks.delta_images                     # SQLite file, then PostgreSQL
    python -m benchmarks.delta_images --commits 400 --skip-postgres

ORM commits that load and update 1 or 100 rows of a 1,000-row table through a tracked session,
timed per commit (best of 3 runs), with the table followed by a delta section (its before and
after images are selected from the database) and without (no images are taken). PostgreSQL is
a database of its own (``fk_images_<hex>`` on ``FRESHKEEP_TEST_POSTGRES_URL``, dropped after).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import Integer, String, create_engine, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from freshkeep import Change, Keeper, LocalBus, Section
from freshkeep.integrations.sqlalchemy import track
from freshkeep.sql import SQLAlchemyRevisions

POSTGRES_URL = os.environ.get(
    "FRESHKEEP_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
ROWS = 1000


class Base(DeclarativeBase):
    pass


class Row(Base):
    __tablename__ = "rows"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    title: Mapped[str] = mapped_column(String(40))


async def _build(ctx: Any) -> dict[str, Any]:
    return {"n": 0}


def _apply(value: dict[str, Any], changes: list[Change]) -> dict[str, Any]:
    return value


async def measure(engine: AsyncEngine, *, followed: bool, commits: int) -> dict[int, float]:
    """Milliseconds per commit, by rows updated per commit."""
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.drop_all)
        await conn.run_sync(Base.metadata.create_all)
    revisions = SQLAlchemyRevisions(engine)
    await revisions.create_table()
    keeper = Keeper(revisions, bus=LocalBus())
    maker = async_sessionmaker(engine, expire_on_commit=False)
    tracking = track(keeper, maker, models=(Row,))
    out: dict[int, float] = {}
    try:
        sections = {"all": Section(_build, ["table:rows"], apply=_apply if followed else None)}
        view = keeper.view("rows", sections=sections)
        await view.get()
        async with maker() as s, s.begin():
            s.add_all([Row(id=i, title="a") for i in range(1, ROWS + 1)])
        for rows, n in ((1, commits), (100, max(commits // 10, 1))):
            best = float("inf")
            for run in range(3):
                t0 = time.perf_counter()
                for c in range(n):
                    async with maker() as s, s.begin():
                        for row in (await s.scalars(select(Row).where(Row.id <= rows))).all():
                            row.title = f"{run}-{c}"
                best = min(best, (time.perf_counter() - t0) / n)
            out[rows] = best * 1e3
        if followed:
            assert (await view.get()).reason == "delta"
    finally:
        tracking.remove()
        await keeper.aclose()
    return out


async def run(name: str, engine: AsyncEngine, commits: int) -> None:
    try:
        without = await measure(engine, followed=False, commits=commits)
        with_ = await measure(engine, followed=True, commits=commits)
    finally:
        await engine.dispose()
    for rows in without:
        print(
            f"{name}: {rows:>3} row(s) updated per commit: {without[rows]:.2f} ms not followed, "
            f"{with_[rows]:.2f} ms followed (+{with_[rows] - without[rows]:.2f} ms)"
        )


async def main(commits: int, postgres: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'images.db'}"
        await run("SQLite", create_async_engine(url), commits)
    if not postgres:
        return
    name = f"fk_images_{uuid.uuid4().hex[:10]}"
    admin = create_engine(
        POSTGRES_URL.replace("+asyncpg", "+psycopg2"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        url = POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
        await run("PostgreSQL", create_async_engine(url), commits)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=400, help="commits of 1 row per run")
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()
    asyncio.run(main(args.commits, not args.skip_postgres))
