"""PostgreSQL change capture: raw SQL from another program bumps the counters once per
statement, notifies on commit, and a rollback leaves no trace.

The tables here are triggered without partitions: every write also moves ``table:<t>/*``.
Partitioned triggers: ``test_partition_triggers.py``."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
import psycopg2
import pytest
from sqlalchemy import Engine, text

from freshkeep.exceptions import ConfigurationError
from freshkeep.sql import migrate
from freshkeep.sql.triggers import (
    install_triggers,
    install_triggers_async,
    remove_triggers,
    triggered_tables,
)
from tests.conftest import PgSchema

pytestmark = pytest.mark.postgres
TIMEOUT = 10.0
ITEMS = "table:items"
EVERY = "table:items/*"


def libpq_url(url: str) -> str:
    """A SQLAlchemy URL as libpq / asyncpg take it."""
    return "postgresql://" + url.split("://", 1)[1]


@dataclass
class Db:
    schema: PgSchema
    engine: Engine
    channel: str
    notes: asyncio.Queue[dict[str, Any]]

    def raw(self) -> Any:
        """A psycopg2 connection with the default search_path: another program (psql)."""
        return psycopg2.connect(libpq_url(self.schema.sync_url))

    def sql(self, statement: str) -> None:
        """Run ``statement`` as another program would, in a transaction of its own."""
        conn = self.raw()
        try:
            with conn, conn.cursor() as cur:
                cur.execute(f'SET search_path = "{self.schema.name}"')
                cur.execute(statement)
        finally:
            conn.close()

    def counters(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(text("SELECT source, revision FROM freshkeep_revisions"))
            return {str(s): int(r) for s, r in rows}

    async def note(self) -> dict[str, Any]:
        return await asyncio.wait_for(self.notes.get(), TIMEOUT)


@pytest.fixture
def engine(pg_schema: PgSchema) -> Iterator[Engine]:
    engine = pg_schema.sync_engine()
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE items (id int PRIMARY KEY, v text)"))
            conn.execute(text("CREATE TABLE other (id int)"))
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
async def db(pg_schema: PgSchema, engine: Engine) -> AsyncIterator[Db]:
    migrate.upgrade(engine)
    channel = f"fk_{uuid.uuid4().hex[:16]}"
    install_triggers(engine, ["items"], channel=channel)
    notes: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    listener = await asyncpg.connect(libpq_url(pg_schema.async_url))
    try:
        await listener.add_listener(channel, lambda *a: notes.put_nowait(orjson.loads(a[3])))
        yield Db(pg_schema, engine, channel, notes)
    finally:
        await listener.close()


async def test_raw_sql_from_another_program_bumps_and_notifies(db: Db) -> None:
    db.sql("INSERT INTO items VALUES (1, 'a')")
    assert await db.note() == {"o": "trigger", "r": {ITEMS: 1, EVERY: 1}}
    conn = db.raw()  # default search_path: the table is named with its schema
    try:
        with conn, conn.cursor() as cur:
            cur.execute(f"UPDATE \"{db.schema.name}\".items SET v = 'b' WHERE id = 1")
    finally:
        conn.close()
    assert await db.note() == {"o": "trigger", "r": {ITEMS: 2, EVERY: 2}}
    db.sql("DELETE FROM items")
    assert await db.note() == {"o": "trigger", "r": {ITEMS: 3, EVERY: 3}}
    assert db.counters() == {ITEMS: 3, EVERY: 3}


async def test_one_statement_of_100_rows_bumps_once(db: Db) -> None:
    db.sql("INSERT INTO items SELECT g, 'x' FROM generate_series(1, 100) AS g")
    assert (await db.note())["r"] == {ITEMS: 1, EVERY: 1}
    db.sql("TRUNCATE items")
    assert (await db.note())["r"] == {ITEMS: 2, EVERY: 2}
    assert db.counters() == {ITEMS: 2, EVERY: 2}


async def test_rollback_bumps_and_notifies_nothing(db: Db) -> None:
    conn = db.raw()
    try:
        with conn.cursor() as cur:
            cur.execute(f'SET search_path = "{db.schema.name}"')
            cur.execute("INSERT INTO items VALUES (1, 'a')")
        conn.rollback()
    finally:
        conn.close()
    assert db.counters() == {}
    db.sql("INSERT INTO items VALUES (2, 'b')")
    # The next notification is the committed write's: the rolled-back one was never sent.
    assert (await db.note())["r"] == {ITEMS: 1, EVERY: 1}
    assert db.notes.empty()


async def test_install_is_idempotent_and_remove_stops_the_bumps(db: Db) -> None:
    install_triggers(db.engine, ["table:items", "other"], channel=db.channel)
    assert triggered_tables(db.engine) == ["items", "other"]
    db.sql("INSERT INTO items VALUES (1, 'a')")  # one trigger on items, not two
    assert (await db.note())["r"] == {ITEMS: 1, EVERY: 1}
    assert remove_triggers(db.engine, ["items"]) == ["items"]
    assert remove_triggers(db.engine, ["items"]) == ["items"]
    assert triggered_tables(db.engine) == ["other"]
    db.sql("INSERT INTO items VALUES (2, 'b')")
    db.sql("INSERT INTO other VALUES (1)")
    assert (await db.note())["r"] == {"table:other": 1, "table:other/*": 1}
    assert db.counters() == {ITEMS: 1, EVERY: 1, "table:other": 1, "table:other/*": 1}


async def test_async_install_and_errors(pg_schema: PgSchema, engine: Engine) -> None:
    with pytest.raises(ConfigurationError, match="freshkeep migrate"):
        install_triggers(engine, ["items"])
    async_engine = pg_schema.async_engine()
    try:
        await migrate.upgrade_async(async_engine)
        assert await install_triggers_async(async_engine, ["items"]) == ["items"]
        with pytest.raises(ConfigurationError, match="no table 'missing'"):
            await install_triggers_async(async_engine, ["items", "missing"])
        with pytest.raises(ConfigurationError, match="cannot be triggered"):
            await install_triggers_async(async_engine, ["freshkeep_revisions"])
        async with async_engine.begin() as conn:
            await conn.execute(text("INSERT INTO items VALUES (1, 'a')"))
            await conn.execute(text("UPDATE items SET v = 'b'"))
        async with async_engine.connect() as conn:
            rev = await conn.scalar(
                text("SELECT revision FROM freshkeep_revisions WHERE source = :s"), {"s": ITEMS}
            )
        assert rev == 2
    finally:
        await async_engine.dispose()


async def test_downgrade_drops_the_triggers_with_the_table(db: Db) -> None:
    assert migrate.downgrade(db.engine, "base").after is None
    assert triggered_tables(db.engine) == []
    db.sql("INSERT INTO items VALUES (1, 'a')")  # writes keep working
    migrate.upgrade(db.engine)
    assert db.counters() == {}
