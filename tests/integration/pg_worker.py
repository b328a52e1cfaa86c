"""A process that commits through freshkeep's hooks (run by multiprocessing with spawn).

Not a test module: :mod:`tests.integration.test_sqlalchemy_processes` starts it.
"""

from __future__ import annotations

import asyncio
from typing import Any


def commit_tasks(
    url: str, schema: str, worker: int, commits: int, ready: Any, start: Any, results: Any
) -> None:
    """Commit ``commits`` inserts of tasks; put the revisions this process saw on ``results``."""
    try:
        seen = asyncio.run(_commit_tasks(url, schema, worker, commits, ready, start))
        results.put((worker, seen))
    except BaseException as exc:  # report, so the parent fails fast instead of timing out
        results.put((worker, repr(exc)))
        raise


async def _commit_tasks(
    url: str, schema: str, worker: int, commits: int, ready: Any, start: Any
) -> list[int]:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

    from freshkeep import Keeper
    from freshkeep.integrations.sqlalchemy import SQLAlchemyRevisions, track
    from tests.integration.sa_support import TASKS, Task

    engine = create_async_engine(url, connect_args={"server_settings": {"search_path": schema}})
    try:
        keeper = Keeper(SQLAlchemyRevisions(engine))
        maker = async_sessionmaker(engine)
        track(keeper, maker, models=[Task])
        seen: list[int] = []
        keeper.bus.subscribe(lambda revs, origin: seen.append(int(revs[TASKS])))
        async with engine.connect() as conn:  # connected before the start signal
            await conn.execute(text("SELECT 1"))
        ready.put(worker)
        await asyncio.to_thread(start.wait, 60)
        for i in range(commits):
            async with maker() as s:
                s.add(Task(id=worker * 10_000 + i, title=f"w{worker}-{i}"))
                await s.commit()
        await keeper.aclose()
        return seen
    finally:
        await engine.dispose()
