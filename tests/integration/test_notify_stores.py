"""Every notifier state store keeps the same contract; a restart on it does not re-send.

Stores: memory, SQLAlchemy on SQLite (async and sync engines), SQLAlchemy on PostgreSQL (asyncpg
and psycopg2), and Redis. The server-backed ones skip when the server is absent (fail in CI).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, inspect
from sqlalchemy.ext.asyncio import create_async_engine

from freshkeep import ChangeNotifier, MemoryStateStore, Notice, StateStore, StoreError
from freshkeep.integrations.sqlalchemy import SQLAlchemyRevisions, metadata
from freshkeep.notify.sql import NOTIFY_STATE_TABLE, SQLAlchemyStateStore
from freshkeep.testing.conformance import StateStoreSuite
from tests.conftest import REDIS_URL, PgSchema

StoreFactory = Callable[[], Awaitable[StateStore]]
"""Opens a new store on the same data: a "restarted process"."""


@pytest.fixture
async def opened() -> AsyncIterator[list[Any]]:
    """Engines and clients the stores of a test opened; closed after it."""
    items: list[Any] = []
    yield items
    for item in items:
        if hasattr(item, "aclose"):
            await item.aclose()
        elif (result := item.dispose()) is not None:
            await result


@pytest.fixture(
    params=[
        "memory",
        "sqlite-async",
        "sqlite-sync",
        pytest.param("postgres-async", marks=pytest.mark.postgres),
        pytest.param("postgres-sync", marks=pytest.mark.postgres),
        pytest.param("redis", marks=pytest.mark.redis),
    ]
)
def open_store(request: pytest.FixtureRequest, tmp_path: Path, opened: list[Any]) -> StoreFactory:
    kind: str = request.param
    memory = MemoryStateStore()
    if kind.startswith("postgres"):
        pg: PgSchema = request.getfixturevalue("pg_schema")
    if kind == "redis":
        prefix: str = request.getfixturevalue("redis_client").freshkeep_prefix

    async def factory() -> StateStore:
        if kind == "memory":
            return memory
        if kind == "redis":
            import redis.asyncio as aioredis

            from freshkeep.notify.redis import RedisStateStore

            client = aioredis.Redis.from_url(REDIS_URL)
            opened.append(client)
            return RedisStateStore(client, prefix=prefix)
        if kind == "sqlite-async":
            engine: Any = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'n.db'}")
        elif kind == "sqlite-sync":
            engine = create_engine(f"sqlite:///{tmp_path / 'n.db'}")
        elif kind == "postgres-async":
            engine = pg.async_engine()
        else:
            engine = pg.sync_engine()
        opened.append(engine)
        store = SQLAlchemyStateStore(engine)
        await store.create_table()
        return store

    return factory


class TestStateStores(StateStoreSuite):
    """Every notifier state store: memory, SQL (SQLite, PostgreSQL; async and sync engines)
    and Redis."""

    @pytest.fixture
    async def state_store(self, open_store: StoreFactory) -> AsyncIterator[StateStore]:
        yield await open_store()


async def test_a_restart_does_not_resend(open_store: StoreFactory) -> None:
    sent: list[Notice] = []
    before = ChangeNotifier("tasks", sent.append, store=await open_store())
    for i in range(20):
        await before.observe(f"task-{i}", {"status": "unblocked", "n": i})
    assert len(sent) == 20
    after = ChangeNotifier("tasks", sent.append, store=await open_store())  # a new process
    for i in range(20):
        assert await after.observe(f"task-{i}", {"n": i, "status": "unblocked"}) == "deduped"
    assert await after.observe("task-3", {"status": "done", "n": 3}) == "sent"
    assert len(sent) == 21 and sent[-1].previous == {"status": "unblocked", "n": 3}
    again = ChangeNotifier("tasks", sent.append, store=await open_store())
    assert await again.preload() == 20
    assert await again.observe("task-3", {"status": "done", "n": 3}) == "deduped"


def test_the_table_belongs_to_freshkeeps_metadata(tmp_path: Path) -> None:
    assert NOTIFY_STATE_TABLE in metadata.tables
    engine = create_engine(f"sqlite:///{tmp_path / 'r.db'}")
    try:
        import asyncio

        asyncio.run(SQLAlchemyRevisions(engine).create_table())
        assert NOTIFY_STATE_TABLE in inspect(engine).get_table_names()
    finally:
        engine.dispose()


async def test_sql_errors_are_store_errors(tmp_path: Path) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}")
    try:
        store = SQLAlchemyStateStore(engine)  # no create_table(): the table is missing
        with pytest.raises(StoreError) as info:
            await store.get("n", "s")
        assert info.value.__cause__ is not None
        out: list[Notice] = []
        notifier = ChangeNotifier("n", out.append, store=store)
        assert await notifier.observe("s", 1) == "error" and out == []
    finally:
        await engine.dispose()


@pytest.mark.redis
async def test_redis_errors_are_store_errors() -> None:
    import redis.asyncio as aioredis

    from freshkeep.notify.redis import RedisStateStore

    client = aioredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    try:
        with pytest.raises(StoreError):
            await RedisStateStore(client).get("n", "s")
    finally:
        await client.aclose()
