"""PostgreSQL change capture: raw SQL from another program bumps the counters once per
statement, notifies on commit, and a rollback leaves no trace.

The tables here are triggered without partitions: every write also moves ``table:<t>/*``.
Partitioned triggers: ``test_partition_triggers.py``."""

from __future__ import annotations

import asyncio
import enum
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
import psycopg2
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, text

from freshkeep.core.partitions import MAX_BUCKETS, Partitioned
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


def counters_of(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT source, revision FROM freshkeep_revisions"))
        return {str(s): int(r) for s, r in rows}


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
        return counters_of(self.engine)

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


# -- partitioned tables ----------------------------------------------------------------------

ORDERS = "table:orders"
BY_CUSTOMER = Partitioned(ORDERS, "customer_id", 16)


@pytest.fixture
async def orders(db: Db) -> Db:
    """``orders`` triggered with a partition by ``customer_id`` in 16 buckets."""
    with db.engine.begin() as conn:
        conn.execute(text("CREATE TABLE orders (id int PRIMARY KEY, customer_id bigint)"))
    install_triggers(db.engine, ["orders"], channel=db.channel, partitions=[BY_CUSTOMER])
    return db


def buckets(*values: object) -> dict[str, int]:
    """The bucket sources of ``values``, each bumped once."""
    return dict.fromkeys(BY_CUSTOMER.bumps(values), 1)


async def test_a_partitioned_write_bumps_the_buckets_of_its_rows(orders: Db) -> None:
    db = orders
    db.sql("INSERT INTO orders VALUES (1, 3)")
    assert await db.note() == {"o": "trigger", "r": {ORDERS: 1, BY_CUSTOMER.source(3): 1}}
    db.sql("UPDATE orders SET customer_id = 5 WHERE id = 1")  # the old bucket and the new
    assert (await db.note())["r"] == {
        ORDERS: 2,
        BY_CUSTOMER.source(3): 2,
        BY_CUSTOMER.source(5): 1,
    }
    db.sql("DELETE FROM orders")
    assert (await db.note())["r"] == {ORDERS: 3, BY_CUSTOMER.source(5): 2}
    db.sql("UPDATE orders SET customer_id = 1")  # no row: the table only
    assert (await db.note())["r"] == {ORDERS: 4}
    # An upsert fires the INSERT and the UPDATE triggers, each with its rows.
    db.sql("INSERT INTO orders VALUES (2, 6), (3, 7)")
    assert (await db.note())["r"] == {ORDERS: 5, **buckets(6, 7)}
    db.sql(
        "INSERT INTO orders VALUES (3, 8), (4, 9) "
        "ON CONFLICT (id) DO UPDATE SET customer_id = excluded.customer_id"
    )
    notes = [(await db.note())["r"], (await db.note())["r"]]
    assert sorted(n.pop(ORDERS) for n in notes) == [6, 7]  # in either order
    assert {BY_CUSTOMER.source(9): 1} in notes  # the inserted row
    assert {BY_CUSTOMER.source(7): 2, BY_CUSTOMER.source(8): 1} in notes  # the updated one
    assert f"{ORDERS}/*" not in db.counters()


async def test_one_statement_bumps_each_distinct_bucket_once(orders: Db) -> None:
    db = orders
    # 1, 17 and -15 share bucket 1; NULL is bucket 0; -1 is bucket 15, as in Python.
    values = [1, 17, -15, 2, None, -1, 2**63 - 1, -(2**63)]
    rows = ", ".join(f"({i}, {'NULL' if v is None else v})" for i, v in enumerate(values))
    db.sql(f"INSERT INTO orders VALUES {rows}")
    expected = {ORDERS: 1, **buckets(*values)}
    assert BY_CUSTOMER.source(None) == BY_CUSTOMER.source(0) == f"{ORDERS}/customer_id#0"
    assert BY_CUSTOMER.source(-1) == f"{ORDERS}/customer_id#15"
    assert (await db.note())["r"] == expected
    counters = {s: r for s, r in db.counters().items() if s.startswith(ORDERS)}
    assert counters == expected
    db.sql("TRUNCATE orders")  # no transition table: every partition
    assert (await db.note())["r"] == {ORDERS: 2, f"{ORDERS}/*": 1}


async def test_too_many_buckets_for_one_notify_name_the_table_and_every_partition(
    db: Db,
) -> None:
    with db.engine.begin() as conn:
        conn.execute(text("CREATE TABLE orders (id int PRIMARY KEY, customer_id bigint)"))
    by = Partitioned(ORDERS, "customer_id")  # 1024 buckets
    install_triggers(db.engine, ["orders"], channel=db.channel, partitions=[by])
    db.sql("INSERT INTO orders SELECT g, g FROM generate_series(1, 30) AS g")  # fits
    assert (await db.note())["r"] == {ORDERS: 1, **dict.fromkeys(by.bumps(range(1, 31)), 1)}
    db.sql("INSERT INTO orders SELECT g, g FROM generate_series(31, 1030) AS g")  # does not
    assert (await db.note())["r"] == {ORDERS: 2, f"{ORDERS}/*": 1}
    counters = db.counters()  # every bucket moved all the same: a resync reads them
    assert all(counters[by.source(v)] >= 1 for v in range(31, 1031))
    assert counters[by.source(31)] == 1 and counters[by.source(1)] == 2  # 1025: bucket 1


async def test_reinstalling_switches_the_shape_and_remove_drops_both(orders: Db) -> None:
    db = orders

    def names() -> set[str]:
        with db.engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal "
                    "AND tgrelid = 'orders'::regclass"
                )
            )
            return {str(r[0]) for r in rows}

    shaped = {f"freshkeep_bump_{op}" for op in ("insert", "update", "delete", "truncate")}
    assert names() == shaped
    assert triggered_tables(db.engine) == ["items", "orders"]
    install_triggers(db.engine, ["orders"], channel=db.channel)  # no partition now
    assert names() == {"freshkeep_bump"}
    db.sql("INSERT INTO orders VALUES (1, 3)")
    assert (await db.note())["r"] == {ORDERS: 1, f"{ORDERS}/*": 1}
    install_triggers(db.engine, ["orders"], channel=db.channel, partitions=[BY_CUSTOMER])
    assert names() == shaped
    db.sql("UPDATE orders SET customer_id = 4")
    assert (await db.note())["r"] == {ORDERS: 2, **buckets(3, 4)}
    assert remove_triggers(db.engine, ["orders", "items"]) == ["orders", "items"]
    assert names() == set() and triggered_tables(db.engine) == []
    install_triggers(db.engine, ["orders"], channel=db.channel, partitions=[BY_CUSTOMER])
    assert migrate.downgrade(db.engine, "base").after is None  # drops both shapes
    assert names() == set()
    db.sql("INSERT INTO orders VALUES (2, 3)")  # writes keep working


async def test_partition_errors_install_nothing(db: Db) -> None:
    with db.engine.begin() as conn:
        conn.execute(
            text("CREATE TABLE orders (id int PRIMARY KEY, customer_id bigint, total float8)")
        )
    remove_triggers(db.engine, ["items"])
    cases = [
        (["orders"], Partitioned(ORDERS, "nope"), "no column 'nope' in table 'orders'"),
        (["orders"], Partitioned(ORDERS, "total"), "'total' of table 'orders' is a float8"),
        (["items"], BY_CUSTOMER, "table 'orders' is not among the tables to trigger"),
        (["orders"], Partitioned("table:public.orders", "id"), "partition table:orders"),
    ]
    for tables, part, message in cases:
        with pytest.raises(ConfigurationError, match=message):
            install_triggers(db.engine, tables, channel=db.channel, partitions=[part])
    twice = [BY_CUSTOMER, Partitioned(ORDERS, "customer_id", 8)]
    with pytest.raises(ConfigurationError, match="with 16 and 8 buckets"):
        install_triggers(db.engine, ["orders"], partitions=twice)
    assert triggered_tables(db.engine) == []
    schema = db.schema.name  # a schema-qualified table matches a partition by its bare name
    assert install_triggers(db.engine, [f"{schema}.orders"], partitions=[BY_CUSTOMER]) == ["orders"]


async def test_enum_and_domain_columns_bucket_as_python(db: Db) -> None:
    with db.engine.begin() as conn:
        conn.execute(text("CREATE TYPE mood AS ENUM ('sad', 'happy')"))
        conn.execute(text("CREATE DOMAIN account AS bigint"))
        conn.execute(text('CREATE TABLE "Moods" ("Mood" mood, acct account)'))
    parts = [Partitioned("table:Moods", "Mood", 64), Partitioned("table:Moods", "acct", 64)]
    install_triggers(db.engine, ["Moods"], channel=db.channel, partitions=parts)
    db.sql("""INSERT INTO "Moods" VALUES ('happy', -70)""")
    assert (await db.note())["r"] == {
        "table:Moods": 1,
        parts[0].source("happy"): 1,
        parts[1].source(-70): 1,
    }


class Status(enum.Enum):
    OPEN = "open"
    DONE = "done"


async def test_an_enum_member_keys_the_partition_its_name_is_stored_in(db: Db) -> None:
    """SQLAlchemy's ``Enum(Status)`` stores ``'OPEN'``: the key ``Status.OPEN`` reads the
    bucket the trigger bumps for another program's write of that text."""
    tickets = sa.Table(
        "tickets",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("status", sa.Enum(Status)),
    )
    with db.engine.begin() as conn:
        tickets.create(conn)
    by = Partitioned("table:tickets", "status")
    install_triggers(db.engine, ["tickets"], channel=db.channel, partitions=[by])
    db.sql("INSERT INTO tickets VALUES (1, 'OPEN')")
    assert (await db.note())["r"] == {"table:tickets": 1, by.source(Status.OPEN): 1}
    with db.engine.begin() as conn:  # what SQLAlchemy writes for the member
        conn.execute(tickets.insert().values(id=2, status=Status.OPEN))
        assert conn.scalar(text("SELECT status::text FROM tickets WHERE id = 2")) == "OPEN"
    assert (await db.note())["r"] == {"table:tickets": 2, by.source(Status.OPEN): 2}


VALUES = sa.Table(
    "vals",
    sa.MetaData(),
    sa.Column("n", sa.BigInteger),
    sa.Column("n7", sa.BigInteger),
    sa.Column("nmax", sa.BigInteger),
    sa.Column("small", sa.SmallInteger),
    sa.Column("s", sa.Text),
    sa.Column("u", sa.Uuid),
    sa.Column("b", sa.Boolean),
)
VAL_PARTS = [
    Partitioned("table:vals", "n", 1024),
    Partitioned("table:vals", "n7", 7),
    Partitioned("table:vals", "nmax", MAX_BUCKETS),
    Partitioned("table:vals", "small", 1000),
    Partitioned("table:vals", "s", 1024),
    Partitioned("table:vals", "u", 1000),
    Partitioned("table:vals", "b", 1024),
]
BIGINTS = st.none() | st.integers(-(2**63), 2**63 - 1) | st.integers(-3000, 3000)
TEXTS = st.none() | st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\0"))
ROWS = st.lists(
    st.tuples(
        BIGINTS,
        st.none() | st.integers(-(2**15), 2**15 - 1),
        TEXTS,
        st.none() | st.uuids(),
        st.none() | st.booleans(),
    ),
    min_size=1,
    max_size=20,  # 7 columns of 20 distinct buckets still fit in one NOTIFY
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(rows=ROWS)
def test_the_triggers_buckets_are_pythons(engine: Engine, rows: list[tuple[Any, ...]]) -> None:
    """Whatever the values, the buckets a statement bumps are those bucket_of computes."""
    with engine.connect() as conn:
        ready = sa.inspect(conn).has_table("vals")
    if not ready:  # once for every example: their counters only add up
        with engine.begin() as conn:
            VALUES.create(conn)
        migrate.upgrade(engine)
        install_triggers(engine, ["vals"], partitions=VAL_PARTS)
    before = counters_of(engine)
    records = [
        {"n": n, "n7": n, "nmax": n, "small": small, "s": s, "u": u, "b": b}
        for n, small, s, u, b in rows
    ]
    with engine.begin() as conn:
        conn.execute(sa.insert(VALUES).values(records))
    after = counters_of(engine)
    moved = {s for s, r in after.items() if r != before.get(s)}
    expected = {"table:vals"} | {
        p.source(record[p.column]) for p in VAL_PARTS for record in records
    }
    assert moved == expected
    assert all(after[s] == before.get(s, 0) + 1 for s in moved)  # one bump per statement
