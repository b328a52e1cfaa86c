"""What an artifact GC costs: ``ArtifactCache.gc`` on N expired rows, on SQLite and PostgreSQL.

    python -m benchmarks.artifacts_gc                      # 100,000 rows, 10,000 objects
    python -m benchmarks.artifacts_gc --rows 100000 --objects 100000 --backend sqlite

Setup (not timed): N expired rows in ``freshkeep_artifacts``, sharing M objects (row ``i``
uses object ``i % M``), their M rows in ``freshkeep_artifact_objects`` (touched long ago) and
M files of 64 bytes on local storage. Timed: one ``gc()``, which deletes every row, object row
and file. Two variants: ``orphans=False`` (rows and unreferenced objects only) and the default
``orphans=True`` (the storage is listed too, and every file checked against the index).
SQL statements are counted with a ``before_cursor_execute`` listener. PostgreSQL runs in a
throw-away schema of ``FRESHKEEP_TEST_POSTGRES_URL`` (default: the local server).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, insert, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from freshkeep.artifacts import ArtifactCache, artifact_objects_table, artifacts_table
from freshkeep.settings import Settings

POSTGRES_URL = os.environ.get(
    "FRESHKEEP_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)


async def _nothing(key: str) -> bytes:
    return b""


async def _seed(cache: ArtifactCache, engine: AsyncEngine, rows: int, objects: int) -> None:
    now = time.time()
    ids = [hashlib.sha256(f"object {j}".encode()).hexdigest() for j in range(objects)]
    async with engine.begin() as conn:
        await conn.execute(
            insert(artifact_objects_table),
            [
                {
                    "cache": cache.name,
                    "artifact_id": oid,
                    "size": 64,
                    "created_at": now - 7200,
                    "touched_at": now - 7200,
                }
                for oid in ids
            ],
        )
        await conn.execute(
            insert(artifacts_table),
            [
                {
                    "cache": cache.name,
                    "key": f"topic-{i}",
                    "artifact_id": ids[i % objects],
                    "size": 64,
                    "content_type": None,
                    "filename": None,
                    "created_at": now - 7200,
                    "expires_at": now - 3600 - i * 0.001,
                    "build_seconds": 0.01,
                    "attempts": 1,
                    "last_error": None,
                }
                for i in range(rows)
            ],
        )
    for oid in ids:
        path = Path(cache.storage.path(cache.name, oid))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(oid.encode())
        os.utime(path, (now - 7200, now - 7200))


async def measure(
    engine: AsyncEngine, root: Path, rows: int, objects: int, *, orphans: bool
) -> dict[str, Any]:
    """Seed, then time one GC; return its figures."""
    cache = ArtifactCache(
        "bench",
        _nothing,
        index=engine,
        storage=str(root / f"objects-{uuid.uuid4().hex[:6]}"),
        url_secret="bench",
        max_stale_on_error=0.0,
        orphan_grace=600.0,
        settings=Settings(),
    )
    await cache.create_tables()
    await _seed(cache, engine, rows, objects)
    statements = 0

    def count(*_: Any) -> None:
        nonlocal statements
        statements += 1

    event.listen(engine.sync_engine, "before_cursor_execute", count)
    started = time.perf_counter()
    result = await cache.gc(orphans=orphans)
    seconds = time.perf_counter() - started
    event.remove(engine.sync_engine, "before_cursor_execute", count)
    assert result["rows"] == rows and result["objects"] == objects, result
    return {
        "rows": rows,
        "objects": objects,
        "orphans": orphans,
        "seconds": round(seconds, 3),
        "statements": statements,
        "rows_per_s": round(rows / seconds),
    }


async def run_backend(backend: str, rows: int, objects: int) -> list[dict[str, Any]]:
    """Both variants on one backend."""
    out = []
    with tempfile.TemporaryDirectory(prefix="fk-bench-artifacts-") as tmp:
        root = Path(tmp)
        for orphans in (False, True):
            schema = f"fk_bench_{uuid.uuid4().hex[:10]}"
            admin = None
            if backend == "sqlite":
                engine = create_async_engine(f"sqlite+aiosqlite:///{root / f'{schema}.db'}")
            else:
                admin = create_engine(
                    POSTGRES_URL.replace("+asyncpg", "+psycopg2"), isolation_level="AUTOCOMMIT"
                )
                with admin.connect() as conn:
                    conn.execute(text(f'CREATE SCHEMA "{schema}"'))
                engine = create_async_engine(
                    POSTGRES_URL, connect_args={"server_settings": {"search_path": schema}}
                )
            try:
                figures = await measure(engine, root, rows, objects, orphans=orphans)
                out.append({"backend": backend, **figures})
            finally:
                await engine.dispose()
                if admin is not None:
                    with admin.connect() as conn:
                        conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
                    admin.dispose()
    return out


def table(results: list[dict[str, Any]]) -> str:
    """The figures as a Markdown table."""
    lines = [
        "| backend | rows | objects | orphan sweep | wall time | SQL statements | rows/s |",
        "|---|---:|---:|---|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['backend']} | {r['rows']:,} | {r['objects']:,} | "
            f"{'yes' if r['orphans'] else 'no'} | {r['seconds']:.2f} s | {r['statements']} | "
            f"{r['rows_per_s']:,} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--objects", type=int, default=10_000)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    args = parser.parse_args()
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    results: list[dict[str, Any]] = []
    for backend in backends:
        results += asyncio.run(run_backend(backend, args.rows, args.objects))
    print(table(results))


if __name__ == "__main__":
    main()
