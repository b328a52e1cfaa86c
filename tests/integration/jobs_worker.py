"""A separate process on a job database (run with ``python -m tests.integration.jobs_worker``).

Not a test module: :mod:`tests.integration.test_jobs_sql` starts it.

- ``enqueue URL SCHEMA N``: waits for the file ``$GO``, then enqueues N jobs at once with the
  dedup keys ``k0..k4``; prints how many were enqueued.
- ``hang URL SCHEMA MARKER``: runs workers; the ``hang`` task writes MARKER and never ends
  (the parent kills this process with SIGKILL).
- ``procrastinate-hang URL - MARKER``: the same with a procrastinate worker.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any


def _engine(url: str, schema: str) -> Any:
    from sqlalchemy.ext.asyncio import create_async_engine

    if schema == "-":
        return create_async_engine(url, connect_args={"timeout": 30})
    return create_async_engine(url, connect_args={"server_settings": {"search_path": schema}})


async def _noop(ctx: Any, args: dict[str, Any]) -> None:
    return None


async def enqueue(url: str, schema: str, n: int) -> None:
    from freshkeep.jobs import SQLJobQueue

    engine = _engine(url, schema)
    queue = SQLJobQueue(engine)
    queue.task("t", _noop)
    go = Path(os.environ["GO"])
    while not go.exists():
        time.sleep(0.005)
    results = await asyncio.gather(
        *(queue.enqueue("t", {"i": i}, dedup_key=f"k{i % 5}") for i in range(n))
    )
    print(sum(r.enqueued for r in results), flush=True)
    await engine.dispose()


async def hang(url: str, schema: str, marker: str) -> None:
    from freshkeep.jobs import SQLJobQueue

    async def hang_task(ctx: Any, args: dict[str, Any]) -> None:
        Path(marker).write_text(ctx.job_id)
        await asyncio.Event().wait()

    queue = SQLJobQueue(_engine(url, schema), poll_interval=0.02)
    queue.task("hang", hang_task)
    await queue.start()
    await asyncio.Event().wait()


async def procrastinate_hang(url: str, marker: str) -> None:
    from freshkeep.jobs import ProcrastinateJobQueue

    async def hang_task(ctx: Any, args: dict[str, Any]) -> None:
        Path(marker).write_text(ctx.job_id)
        await asyncio.Event().wait()

    queue = ProcrastinateJobQueue(url, poll_interval=0.05, lease=1.0)
    queue.task("hang", hang_task)
    await queue.start()
    await asyncio.Event().wait()


if __name__ == "__main__":
    command, url, schema, arg = sys.argv[1:5]
    if command == "enqueue":
        asyncio.run(enqueue(url, schema, int(arg)))
    elif command == "procrastinate-hang":
        asyncio.run(procrastinate_hang(url, arg))
    else:
        asyncio.run(hang(url, schema, arg))
