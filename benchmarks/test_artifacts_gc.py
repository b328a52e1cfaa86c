"""Artifact GC under pytest-benchmark: one ``gc()`` on 10,000 expired rows sharing 1,000
objects (wall time, SQL statements and rows/s in ``extra_info``).

The 100,000-row figures of ``docs/artifacts.md`` come from ``python -m benchmarks.artifacts_gc``.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any
from urllib.parse import urlsplit

import pytest

from benchmarks.artifacts_gc import POSTGRES_URL, run_backend


def _postgres_reachable() -> bool:
    parts = urlsplit(POSTGRES_URL)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5432), 1):
            return True
    except OSError:
        return False


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_gc_of_expired_rows(benchmark: Any, backend: str) -> None:
    if backend == "postgres" and not _postgres_reachable():
        pytest.skip(f"PostgreSQL is not reachable at {POSTGRES_URL}")
    results: list[dict[str, Any]] = []

    def run() -> None:
        results.extend(asyncio.run(run_backend(backend, 10_000, 1_000)))

    benchmark.pedantic(run, rounds=1, iterations=1)
    for r in results:
        key = "with_orphan_sweep" if r["orphans"] else "without_orphan_sweep"
        benchmark.extra_info[key] = {
            "seconds": r["seconds"],
            "statements": r["statements"],
            "rows_per_s": r["rows_per_s"],
        }
        assert r["statements"] < 100
