"""Processes of the multi-process artifact test (run by multiprocessing with spawn): builders
whose keys share objects, and a GC loop, on one PostgreSQL schema and one storage directory.

Not a test module: :mod:`tests.integration.test_artifacts_processes` starts them.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

KEYS = 18
CONTENTS = 6  # three keys per object


def run(role: str, url: str, schema: str, root: str, worker: int, start: Any, results: Any) -> None:
    """Run ``role`` ("build", "gc", or "gc:<prefix>" for GC scoped to a key prefix); put
    ``(worker, stats or error)`` on ``results``."""
    try:
        stats = asyncio.run(_run(role, url, schema, Path(root), worker, start))
        results.put((worker, stats))
    except BaseException as exc:  # report, so the parent fails fast instead of timing out
        results.put((worker, repr(exc)))
        raise


async def _run(role: str, url: str, schema: str, root: Path, worker: int, start: Any) -> Any:
    from sqlalchemy.ext.asyncio import create_async_engine

    from tests.integration.artifacts_helpers import Builder, make_cache

    engine = create_async_engine(url, connect_args={"server_settings": {"search_path": schema}})
    build = Builder(delay=0.001)
    for i in range(KEYS):
        build.content[f"k{i}"] = f"content {i % CONTENTS}".encode()
    cache = make_cache(engine, root, build, ttl=0.1, orphan_grace=0.1, max_stale_on_error=0.0)
    try:
        await asyncio.to_thread(start.wait, 60)
        if role == "gc" or role.startswith("gc:"):
            prefix = role[3:] or None
            runs = 0
            loop = asyncio.get_running_loop()
            until = loop.time() + 3.0
            while loop.time() < until:
                await cache.gc(prefix=prefix)
                runs += 1
            return {"gc_runs": runs, **cache.snapshot().to_dict()}
        missing = 0
        for round_ in range(30):
            keys = [f"k{(worker * 7 + round_ + j) % KEYS}" for j in range(5)]
            await cache.prebuild(keys)
            for key in keys[:2]:
                art = await cache.get(key)
                if not await cache.storage.exists("exports", art.id):
                    missing += 1
            await asyncio.sleep(0.05)
        return {"missing": missing, **cache.snapshot().to_dict()}
    finally:
        await engine.dispose()
