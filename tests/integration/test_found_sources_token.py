"""A causal token (``min_revision``) that names a source a build found with ``ctx.depend``.

Two keepers on one database that hear nothing of each other (a bus each, a resync an hour
apart) stand for two processes: the writer bumps a source the reader's entry depends on only
because its builder found it. A read with the writer's token must not be answered from the
entry built before the write.

(The reference hub's topic summary depends on tasks by workstream, found while building: read
on another instance with the token of a task write, it must show the task at once.)
"""

from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from freshkeep import BuildContext, Keeper, LocalBus
from freshkeep.core.partitions import Partitioned
from freshkeep.integrations.sqlalchemy import SQLAlchemyRevisions
from freshkeep.sql.schema import metadata as freshkeep_metadata

FOUND = Partitioned("table:lines", "order_id")
DECLARED = Partitioned("table:orders", "customer_id")


@pytest.mark.parametrize("key", [None, 1])
async def test_a_token_naming_a_found_source_is_not_answered_from_an_older_entry(
    tmp_path: Path, key: Hashable
) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    async with engine.begin() as conn:
        await conn.run_sync(freshkeep_metadata.create_all)
    writer = Keeper(SQLAlchemyRevisions(engine), bus=LocalBus(), resync_interval=3600)
    reader = Keeper(
        SQLAlchemyRevisions(engine),
        bus=LocalBus(),
        resync_interval=3600,
        sources=[DECLARED.table, FOUND.table],
    )
    reader.partition(FOUND)
    builds = 0

    async def build(ctx: BuildContext) -> int:
        nonlocal builds
        builds += 1
        await ctx.depend(FOUND.source(10))
        return builds

    # keyed: the partition of the key; unkeyed: the whole table
    view = reader.view("v", build, sources=[DECLARED if key is not None else DECLARED.table])
    await writer.start()
    await reader.start()
    try:
        assert (await view.get(key)).status == "miss"
        assert (await view.get(key)).status == "hit"
        token = await writer.bump(FOUND.source(10))
        read = await view.get(key, min_revision=token)
        assert read.status == "miss" and read.value == 2
    finally:
        await writer.aclose()
        await reader.aclose()
        await engine.dispose()
