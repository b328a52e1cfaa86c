"""Helpers of the artifact tests: a clock to move, a counting builder, engines on SQLite and
PostgreSQL (the ``artifact_engine`` fixture is parametrized over both)."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from freshkeep.artifacts import ArtifactCache, Built
from freshkeep.settings import Settings


class MovableClock:
    """Wall time that starts at the real time and moves only when told."""

    def __init__(self) -> None:
        self.offset = 0.0
        self.frozen = time.time()

    def monotonic(self) -> float:
        return time.monotonic() + self.offset

    def time(self) -> float:
        return self.frozen + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


class Builder:
    """An async builder: ``content[key]`` (default ``b"artifact:<key>"``), counting calls;
    keys in ``failing`` raise; ``delay`` seconds of work widen race windows."""

    def __init__(self, *, delay: float = 0.0) -> None:
        self.calls: list[str] = []
        self.content: dict[str, bytes] = {}
        self.failing: set[str] = set()
        self.fail_times: dict[str, int] = {}
        self.delay = delay

    def data(self, key: str) -> bytes:
        return self.content.get(key, f"artifact:{key}".encode())

    async def __call__(self, key: str) -> bytes | Built:
        self.calls.append(key)
        if self.delay:
            await asyncio.sleep(self.delay)
        if key in self.failing:
            raise RuntimeError(f"cannot build {key}")
        if self.fail_times.get(key, 0) > 0:
            self.fail_times[key] -= 1
            raise RuntimeError(f"cannot build {key} yet")
        return self.data(key)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class StatementCounter:
    """Counts the SQL statements an engine runs (``before_cursor_execute``)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.count = 0
        self.statements: list[str] = []
        event.listen(engine.sync_engine, "before_cursor_execute", self._on)

    def _on(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self.count += 1
        self.statements.append(statement)


@pytest.fixture(params=["sqlite", "postgres"])
async def artifact_engine(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[AsyncEngine]:
    """An async engine on a fresh SQLite file, then on a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        engine = create_async_engine(
            f"sqlite+aiosqlite:///{tmp_path / 'artifacts.db'}", connect_args={"timeout": 30}
        )
    else:
        schema = request.getfixturevalue("pg_schema")
        engine = schema.async_engine(pool_size=10, max_overflow=20)
    try:
        yield engine
    finally:
        await engine.dispose()


def make_cache(
    engine: AsyncEngine,
    root: Path,
    build: Any,
    *,
    name: str = "exports",
    clock: Any = None,
    **kw: Any,
) -> ArtifactCache:
    """A cache on local storage under ``root``, with a fixed URL secret."""
    kw.setdefault("ttl", 60.0)
    kw.setdefault("max_stale_on_error", 0.0)
    kw.setdefault("orphan_grace", 30.0)
    return ArtifactCache(
        name,
        build,
        index=engine,
        storage=str(root / "objects"),
        url_secret="test-secret",
        settings=Settings(),
        clock=clock,
        **kw,
    )


def stored_ids(cache: ArtifactCache) -> set[str]:
    """Ids of the objects on the cache's local storage."""
    base = Path(cache.storage.root) / cache.name
    return {p.name for p in base.rglob("*") if p.is_file() and ".tmp-" not in p.name}
