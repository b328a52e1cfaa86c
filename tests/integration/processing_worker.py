"""A process that runs one processor on PostgreSQL (run by multiprocessing with spawn).

Not a test module: :mod:`tests.integration.test_processing_sql` starts it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any


def run_processor(url: str, schema: str, root: str, entered: Any, hold: Any, results: Any) -> None:
    """Run processor ``slow`` over ``root``: it sets ``entered`` and blocks until ``hold``.
    Puts ``"ran"``, ``"busy"`` or the error on ``results``."""
    try:
        results.put(asyncio.run(_run(url, schema, Path(root), entered, hold)))
    except BaseException as exc:
        results.put(repr(exc))
        raise


async def _run(url: str, schema: str, root: Path, entered: Any, hold: Any) -> str:
    from sqlalchemy.ext.asyncio import create_async_engine

    from freshkeep.exceptions import ProcessorBusy
    from freshkeep.processing import (
        Item,
        Outcome,
        Pipeline,
        PostgresLocks,
        ProcessContext,
        Processor,
    )
    from freshkeep.processing.sql import SQLProcessingState

    class Slow(Processor):
        name, pattern = "slow", "*.txt"

        async def process(self, item: Item, ctx: ProcessContext) -> Outcome:
            entered.set()
            while not hold.is_set():  # a multiprocessing Event: poll it off the loop
                await asyncio.to_thread(hold.wait, 0.05)
            return Outcome({"n": 1})

    engine = create_async_engine(url, connect_args={"server_settings": {"search_path": schema}})
    try:
        slow = Slow()
        slow.root = root
        pipeline = Pipeline(SQLProcessingState(engine), locks=PostgresLocks(engine))
        pipeline.register(slow)
        try:
            await pipeline.run("slow")
        except ProcessorBusy:
            return "busy"
        return "ran"
    finally:
        await engine.dispose()
