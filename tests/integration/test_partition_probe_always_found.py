"""probe="always": a read re-reads the sources a build found with ctx.depend too, so a write no
hook sees is seen at the next read."""

from __future__ import annotations

from collections.abc import Hashable

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from freshkeep import BuildContext, Keeper, LocalBus
from freshkeep.core.partitions import Partitioned
from freshkeep.integrations.sqlalchemy import SQLAlchemyRevisions
from freshkeep.sql.schema import metadata as freshkeep_metadata

FOUND = Partitioned("table:lines", "order_id")
DECLARED = Partitioned("table:orders", "customer_id")


@pytest.mark.parametrize("key", [None, 1])
async def test_probe_always_rereads_found_sources(tmp_path, key: Hashable) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    async with engine.begin() as conn:
        await conn.run_sync(freshkeep_metadata.create_all)
    writer = Keeper(SQLAlchemyRevisions(engine), bus=LocalBus(), resync_interval=3600)
    reader = Keeper(
        SQLAlchemyRevisions(engine),
        bus=LocalBus(),
        resync_interval=3600,
        probe="always",
        sources=[DECLARED.table, FOUND.table],
    )
    reader.partition(FOUND)
    builds = 0

    async def build(ctx: BuildContext) -> int:
        nonlocal builds
        builds += 1
        await ctx.depend(FOUND.source(10))
        return builds

    view = reader.view("v", build, sources=[DECLARED if key is not None else DECLARED.table])
    await writer.start()
    await reader.start()
    try:
        assert (await view.get(key)).status == "miss"
        assert (await view.get(key)).status == "hit"
        await writer.bump(FOUND.source(10))  # another process: nothing pushed to the reader
        read = await view.get(key)  # probe="always": must see it
        assert read.status == "miss" and read.value == 2
    finally:
        await writer.aclose()
        await reader.aclose()
        await engine.dispose()
