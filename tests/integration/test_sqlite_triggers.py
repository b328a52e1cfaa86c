"""SQLite change capture: triggers bump the counters of any writer, in its transaction.

"Another program" is a plain ``sqlite3`` connection (or another OS process) on the same file:
it knows nothing of freshkeep, and its writes still move the revisions. The tables here are
triggered without partitions: every write also moves ``table:<t>/*``.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import closing
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from freshkeep import BuildContext, Keeper, LocalBus
from freshkeep.core.partitions import MAX_BUCKETS, Partitioned
from freshkeep.exceptions import ConfigurationError
from freshkeep.sql import migrate
from freshkeep.sql.revisions import SQLAlchemyRevisions
from freshkeep.sql.triggers import (
    install_triggers,
    install_triggers_async,
    remove_triggers,
    triggered_tables,
)
from tests.integration.sa_support import (
    PROJECTS,
    TASKS,
    Task,
    TitlesBuilder,
    TrackedDb,
    create_schema,
    raw_counters,
    sqlite_engine,
    tracked,
    whole,
)

EVERY = f"{TASKS}/*"


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "capture.db"


@pytest.fixture
async def db(path: Path) -> AsyncIterator[TrackedDb]:
    engine = sqlite_engine(path)
    try:
        await create_schema(engine)
        async with tracked(engine) as db:
            yield db
    finally:
        await engine.dispose()


@pytest.fixture
def shell(path: Path, db: TrackedDb) -> Iterator[sqlite3.Connection]:
    """Another program on the same file (the sqlite3 shell, a cron job)."""
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        yield conn


def run(conn: sqlite3.Connection, *statements: str, commit: bool = True) -> None:
    conn.execute("BEGIN")
    for sql in statements:
        conn.execute(sql)
    conn.execute("COMMIT" if commit else "ROLLBACK")


async def test_any_writer_moves_the_counter_in_its_own_transaction(
    db: TrackedDb, shell: sqlite3.Connection, path: Path
) -> None:
    assert await install_triggers_async(db.engine, ["tasks", "table:projects"]) == [
        "tasks",
        "projects",
    ]
    run(shell, "INSERT INTO tasks (id, title, updated_at) VALUES (1, 'a', '2024-01-01')")
    assert await raw_counters(db.engine) == {TASKS: 1, EVERY: 1}
    run(shell, "INSERT INTO tasks (id, title, updated_at) VALUES (2, 'b', '2024-01-01')")
    run(shell, "UPDATE tasks SET title = 'x'")  # two rows: two bumps
    assert await raw_counters(db.engine) == {TASKS: 4, EVERY: 4}
    run(shell, "DELETE FROM tasks")  # no WHERE: the delete trigger still fires per row
    assert await raw_counters(db.engine) == {TASKS: 6, EVERY: 6}
    run(shell, "INSERT INTO projects (id, name) VALUES (1, 'p')", commit=False)
    assert await raw_counters(db.engine) == {TASKS: 6, EVERY: 6}  # a rollback leaves no trace
    run(shell, "UPDATE notes SET body = 'n'")  # an untriggered table
    assert await raw_counters(db.engine) == {TASKS: 6, EVERY: 6}


async def test_install_is_idempotent_and_removable(
    db: TrackedDb, shell: sqlite3.Connection
) -> None:
    for _ in range(2):
        install_triggers(db.engine.url.render_as_string().replace("+aiosqlite", ""), ["tasks"])
    names = [r[0] for r in shell.execute("SELECT name FROM sqlite_master WHERE type='trigger'")]
    assert sorted(names) == [f"freshkeep_bump_tasks_{op}" for op in ("delete", "insert", "update")]
    url = str(db.engine.url).replace("+aiosqlite", "")
    assert triggered_tables(url) == ["tasks"]
    assert remove_triggers(url, ["tasks"]) == ["tasks"]
    assert remove_triggers(url, ["tasks"]) == ["tasks"]
    assert triggered_tables(url) == []
    run(shell, "INSERT INTO tasks (id, title, updated_at) VALUES (1, 'a', '2024-01-01')")
    assert await db.counters() == {}


def test_a_missing_table_or_revision_table_is_a_clear_error(tmp_path: Path) -> None:
    bare = tmp_path / "bare.db"
    with closing(sqlite3.connect(bare)) as conn:
        conn.execute("CREATE TABLE tasks (id INTEGER PRIMARY KEY)")
    with pytest.raises(ConfigurationError, match="freshkeep migrate"):
        install_triggers(str(bare), ["tasks"])
    migrate.upgrade(str(bare))
    with pytest.raises(ConfigurationError, match="no table 'nope'"):
        install_triggers(str(bare), ["tasks", "nope"])
    assert triggered_tables(str(bare)) == []  # nothing was installed
    with pytest.raises(ConfigurationError, match="cannot be triggered"):
        install_triggers(str(bare), ["freshkeep_revisions"])


def test_downgrade_drops_the_triggers_with_the_table(tmp_path: Path) -> None:
    path = tmp_path / "down.db"
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE tasks (id INTEGER PRIMARY KEY)")
    migrate.upgrade(str(path))
    install_triggers(str(path), ["tasks"])
    assert migrate.downgrade(str(path), "base").after is None
    assert triggered_tables(str(path)) == []
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        run(conn, "INSERT INTO tasks (id) VALUES (1)")  # writes keep working
    migrate.upgrade(str(path))
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT count(*) FROM freshkeep_revisions").fetchone() == (0,)


async def test_hooks_and_a_trigger_on_one_write_agree(db: TrackedDb) -> None:
    await install_triggers_async(db.engine, ["tasks"])
    async with db.session() as s:
        s.add_all([Task(id=1, title="a"), Task(id=2, title="b")])
        await s.commit()
    # Two rows through the trigger, one bump by the hooks at commit: the counter moved, and
    # the revision the hooks applied and published is the committed one.
    counters = await raw_counters(db.engine)
    assert counters == {TASKS: 3, EVERY: 3}  # the hooks know no partition of tasks
    assert db.keeper.tracker.snapshot[TASKS] == db.keeper.tracker.floor[TASKS] == 3
    assert whole(db.published[-1]) == {TASKS: 3}
    builder = TitlesBuilder(db.engine)
    view = db.keeper.view("titles", builder, sources=[TASKS])
    assert (await view.get()).status == "miss"
    assert (await view.get()).status == "hit" and builder.calls == 1


async def test_another_os_process_is_seen_within_the_resync_interval(path: Path) -> None:
    engine = sqlite_engine(path)
    try:
        await create_schema(engine)
        async with engine.begin() as conn:
            await conn.execute(
                text("INSERT INTO tasks (id, title, updated_at) VALUES (1, 'a', '2024-01-01')")
            )
        await install_triggers_async(engine, ["tasks", "projects"])
        revisions = SQLAlchemyRevisions(engine)
        keeper = Keeper(revisions, probe="interval", resync_interval=0.2)
        builder = TitlesBuilder(engine)
        view = keeper.view("titles", builder, sources=[TASKS, PROJECTS])
        assert (await view.get()).value == {"1": "a"}
        code = (
            "import sqlite3, sys\n"
            "c = sqlite3.connect(sys.argv[1])\n"
            'c.execute("INSERT INTO tasks (id, title, updated_at) '
            "VALUES (2, 'b', '2024-01-01')\")\n"
            "c.commit()\n"
        )
        subprocess.run([sys.executable, "-c", code, str(path)], check=True, timeout=60)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 2.0
        while (read := await view.get()).value != {"1": "a", "2": "b"}:
            assert read.status == "hit"  # the old value, until the interval ends
            assert loop.time() < deadline, "the other process's insert was not seen in 2 s"
            await asyncio.sleep(0.05)
        for _ in range(3):  # never the old value after that
            assert (await view.get()).value == {"1": "a", "2": "b"}
        queries = revisions.queries
        await asyncio.sleep(0.3)  # an interval passes without a commit
        assert (await view.get()).status == "hit"
        assert revisions.skipped >= 1 and revisions.queries == queries  # no query for it
        revisions.close()
        await keeper.aclose()
    finally:
        await engine.dispose()


async def test_the_applications_conflict_clauses_neither_reset_nor_fail_the_counter(
    db: TrackedDb, shell: sqlite3.Connection
) -> None:
    """SQLite applies an outer OR REPLACE / OR ABORT ... to a trigger's statements that have
    no conflict clause of their own: the trigger's upsert has one."""
    await install_triggers_async(db.engine, ["tasks"])
    statements = [
        "INSERT INTO tasks (id, title, updated_at) VALUES (1, 'a', '2024-01-01')",
        "INSERT OR REPLACE INTO tasks (id, title, updated_at) VALUES (1, 'b', '2024-01-01')",
        "REPLACE INTO tasks (id, title, updated_at) VALUES (1, 'c', '2024-01-01')",
        "INSERT OR ABORT INTO tasks (id, title, updated_at) VALUES (2, 'd', '2024-01-01')",
        "INSERT OR ROLLBACK INTO tasks (id, title, updated_at) VALUES (3, 'e', '2024-01-01')",
        "INSERT OR FAIL INTO tasks (id, title, updated_at) VALUES (4, 'f', '2024-01-01')",
        "INSERT OR IGNORE INTO tasks (id, title, updated_at) VALUES (5, 'g', '2024-01-01')",
        "UPDATE OR FAIL tasks SET title = 'h' WHERE id = 2",
        "UPDATE OR REPLACE tasks SET title = 'i' WHERE id = 3",
    ]
    last = 0
    for sql in statements:
        run(shell, sql)  # never fails because of the trigger
        now = (await db.counters())[TASKS]
        assert now > last, (sql, last, now)  # never reset, always moved
        last = now


async def test_a_reopened_data_version_connection_never_reuses_old_revisions(
    db: TrackedDb, shell: sqlite3.Connection
) -> None:
    await install_triggers_async(db.engine, ["tasks"])
    revisions = SQLAlchemyRevisions(db.engine)
    before = await revisions.read([TASKS])
    run(shell, "INSERT INTO tasks (id, title, updated_at) VALUES (1, 'a', '2024-01-01')")
    assert revisions._version is not None
    revisions._version.close()  # as after a failed look: a new connection counts anew
    after = await revisions.read([TASKS])
    assert after[TASKS] == before[TASKS] + 1 and revisions.skipped == 0
    revisions.close()


def test_every_table_leaves_out_virtual_tables_and_their_shadows(tmp_path: Path) -> None:
    path = tmp_path / "fts.db"
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        conn.execute("CREATE VIRTUAL TABLE notes_fts USING fts5(body)")
    migrate.upgrade(str(path))
    assert install_triggers(str(path), ["*"]) == ["notes"]
    assert triggered_tables(str(path)) == ["notes"]


# -- partitioned tables ----------------------------------------------------------------------

ORDERS = "table:orders"
BY_CUSTOMER = Partitioned(ORDERS, "customer_id", 16)
BY_PAID = Partitioned(ORDERS, "paid", 16)


@pytest.fixture
def orders(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    """A database whose ``orders`` are partitioned by ``customer_id`` and ``paid``."""
    path = tmp_path / "orders.db"
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute(
            "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER, paid BOOLEAN)"
        )
        migrate.upgrade(str(path))
        install_triggers(str(path), ["orders"], partitions=[BY_CUSTOMER, BY_PAID])
        yield conn


def counters(conn: sqlite3.Connection) -> dict[str, int]:
    return dict(conn.execute("SELECT source, revision FROM freshkeep_revisions").fetchall())


def moves(conn: sqlite3.Connection, *statements: str) -> dict[str, int]:
    """By how much each counter moved with ``statements``, in one transaction."""
    before = counters(conn)
    run(conn, *statements)
    return {s: r - before.get(s, 0) for s, r in counters(conn).items() if r != before.get(s)}


def moves_with(conn: sqlite3.Connection, sql: str, params: dict[str, object]) -> dict[str, int]:
    """:func:`moves` of one statement with parameters."""
    before = counters(conn)
    conn.execute(sql, params)  # autocommit: one statement, one transaction
    return {s: r - before.get(s, 0) for s, r in counters(conn).items() if r != before.get(s)}


def test_a_partitioned_write_bumps_the_buckets_of_its_rows(
    orders: sqlite3.Connection,
) -> None:
    conn, src = orders, BY_CUSTOMER.source
    paid, unpaid = BY_PAID.source(True), BY_PAID.source(False)
    assert moves(conn, "INSERT INTO orders VALUES (1, 3, 1)") == {ORDERS: 1, src(3): 1, paid: 1}
    # An UPDATE: the buckets of the old and the new values, each once.
    assert moves(conn, "UPDATE orders SET customer_id = -5, paid = 0") == {
        ORDERS: 1,
        src(3): 1,
        src(-5): 1,
        paid: 1,
        unpaid: 1,
    }
    assert moves(conn, "UPDATE orders SET customer_id = 11") == {ORDERS: 1, src(-5): 1, unpaid: 1}
    assert src(-5) == src(11) == f"{ORDERS}/customer_id#11"  # one bucket: bumped once
    assert moves(conn, "DELETE FROM orders") == {ORDERS: 1, src(11): 1, unpaid: 1}
    assert moves(conn, "INSERT INTO orders VALUES (2, NULL, NULL), (3, 17, 1)") == {
        ORDERS: 2,  # row-level: once per row
        src(None): 1,
        BY_PAID.source(None): 1,
        src(17): 1,
        paid: 1,
    }
    assert f"{ORDERS}/*" not in counters(conn)


def test_a_value_sqlite_cannot_bucket_moves_every_partition(orders: sqlite3.Connection) -> None:
    """No MD5 in SQLite: text or a real in the column bumps table:<t>/* instead."""
    every = f"{ORDERS}/*"
    conn, paid = orders, BY_PAID.source(True)
    assert moves(conn, "INSERT INTO orders VALUES (1, 'c-1', 1)") == {
        ORDERS: 1,
        every: 1,
        paid: 1,
    }
    # The old paid (1) has a bucket; the new one ('yes') does not.
    assert moves(conn, "UPDATE orders SET customer_id = 2.5, paid = 'yes'") == {
        ORDERS: 1,
        every: 1,
        paid: 1,
    }
    assert moves(conn, "UPDATE orders SET customer_id = 4, paid = 1") == {
        ORDERS: 1,
        every: 1,  # the old value was a real
        BY_CUSTOMER.source(4): 1,
        BY_PAID.source(True): 1,
    }
    # The application's conflict clauses apply to none of the trigger's statements.
    statements = [
        "INSERT OR REPLACE INTO orders VALUES (4, 4, 0)",
        "REPLACE INTO orders VALUES (4, 'x', 0)",
        "INSERT OR IGNORE INTO orders VALUES (4, 5, 0)",
        "UPDATE OR FAIL orders SET customer_id = 6",
    ]
    for sql in statements:
        before = counters(conn)
        run(conn, sql)
        assert all(r >= before.get(s, 0) for s, r in counters(conn).items())


def test_reinstalling_switches_the_shape_and_remove_drops_it(
    orders: sqlite3.Connection, tmp_path: Path
) -> None:
    path, conn = str(tmp_path / "orders.db"), orders

    def names() -> list[str]:
        found = conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        return sorted(str(r[0]).removeprefix("freshkeep_bump_orders_") for r in found)

    assert names() == ["delete", "insert", "rekey", "replace", "update"]
    install_triggers(path, ["orders"])  # no partition now
    assert names() == ["delete", "insert", "update"]  # every write moves every partition
    assert triggered_tables(path) == ["orders"]
    assert moves(conn, "INSERT INTO orders VALUES (1, 3, 1)") == {ORDERS: 1, f"{ORDERS}/*": 1}
    install_triggers(path, ["orders"], partitions=[BY_CUSTOMER])
    assert moves(conn, "DELETE FROM orders") == {ORDERS: 1, BY_CUSTOMER.source(3): 1}
    assert remove_triggers(path, ["orders"]) == ["orders"] and triggered_tables(path) == []
    assert names() == []
    assert moves(conn, "INSERT INTO orders VALUES (1, 3, 1)") == {}


def test_partition_errors_install_nothing(tmp_path: Path) -> None:
    path = tmp_path / "bad.db"
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER)")
        conn.execute("CREATE TABLE other (id INTEGER PRIMARY KEY)")
    migrate.upgrade(str(path))
    cases = [
        (["orders"], Partitioned(ORDERS, "nope"), "no column 'nope' in table 'orders'"),
        (["other"], BY_CUSTOMER, "table 'orders' is not among the tables to trigger"),
        (["orders"], "table:orders/customer_id", "not a Partitioned source"),
    ]
    for tables, part, message in cases:
        with pytest.raises(ConfigurationError, match=message):
            install_triggers(str(path), [*tables, "other"], partitions=[part])  # type: ignore[list-item]
    assert triggered_tables(str(path)) == []
    # A column's name is matched as SQLite matches it, without case.
    assert install_triggers(str(path), ["*"], partitions=[Partitioned(ORDERS, "Customer_Id")])


def customers(moved: dict[str, int]) -> dict[str, int]:
    """The ``customer_id`` buckets among ``moved``."""
    return {s: n for s, n in moved.items() if s.startswith(f"{ORDERS}/customer_id#")}


def test_a_replace_bumps_the_buckets_of_the_rows_it_deletes(orders: sqlite3.Connection) -> None:
    """A REPLACE deletes the rows that conflict with the new one without firing their DELETE
    trigger (SQLite fires it only under ``PRAGMA recursive_triggers``, the writer's choice):
    a BEFORE trigger bumps their buckets."""
    conn, src = orders, BY_CUSTOMER.source
    run(conn, "INSERT INTO orders VALUES (1, 3, 1), (2, 4, 1)")
    cases = [
        ("INSERT OR REPLACE INTO orders VALUES (1, 5, 0)", {src(3): 1, src(5): 1}),
        ("REPLACE INTO orders VALUES (1, 6, 0)", {src(5): 1, src(6): 1}),
        # an UPDATE that takes row 1's key deletes row 1 (customer 6)
        ("UPDATE OR REPLACE orders SET id = 1 WHERE id = 2", {src(6): 1, src(4): 1}),
        # an upsert fires the UPDATE trigger (old and new buckets) after the BEFORE INSERT one
        (
            "INSERT INTO orders VALUES (1, 8, 1) "
            "ON CONFLICT (id) DO UPDATE SET customer_id = excluded.customer_id",
            {src(4): 2, src(8): 1},
        ),
        ("INSERT INTO orders (customer_id, paid) VALUES (7, 0)", {src(7): 1}),  # no conflict
        ("UPDATE orders SET paid = 0 WHERE id = 1", {src(8): 1}),  # no key changed
    ]
    for sql, expected in cases:
        moved = moves(conn, sql)
        assert customers(moved) == expected, sql
        assert moved[ORDERS] == 1 and f"{ORDERS}/*" not in moved, sql
    assert conn.execute("SELECT id, customer_id FROM orders").fetchall() == [(1, 8), (2, 7)]


def test_a_replace_finds_its_rows_by_every_unique_key(tmp_path: Path) -> None:
    path = tmp_path / "keys.db"
    by = {t: Partitioned(f"table:{t}", "owner", 64) for t in ("items", "pairs", "exprs")}
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute(
            "CREATE TABLE items (id INTEGER PRIMARY KEY, code TEXT COLLATE NOCASE UNIQUE, "
            "slot INTEGER, owner INTEGER, UNIQUE (slot, owner))"
        )
        conn.execute(
            "CREATE TABLE pairs (a TEXT, b INTEGER, owner INTEGER, PRIMARY KEY (a, b)) "
            "WITHOUT ROWID"
        )
        conn.execute("CREATE TABLE exprs (id INTEGER PRIMARY KEY, email TEXT, owner INTEGER)")
        conn.execute("CREATE UNIQUE INDEX exprs_email ON exprs (lower(email))")
        migrate.upgrade(str(path))
        install_triggers(str(path), list(by), partitions=by.values())

        def owners(sql: str) -> dict[str, int]:
            moved = moves(conn, sql)
            table = sql.split(" INTO ")[1].split()[0]
            assert moved.pop(f"table:{table}") == 1
            return moved

        run(conn, "INSERT INTO items VALUES (1, 'a', NULL, 10), (2, NULL, NULL, 20)")
        src = by["items"].source
        cases = [
            # the UNIQUE column, compared with its collation
            ("INSERT OR REPLACE INTO items (code, slot, owner) VALUES ('A', 9, 11)", [10, 11]),
            # NULLs never conflict: row 2 stays, and so does its bucket
            ("INSERT OR REPLACE INTO items (code, owner) VALUES (NULL, 21)", [21]),
            # a UNIQUE constraint of two columns
            ("INSERT OR REPLACE INTO items (slot, owner) VALUES (9, 11)", [11, 11]),
            # the rowid (the INTEGER PRIMARY KEY)
            ("INSERT OR REPLACE INTO items (id, owner) VALUES (2, 22)", [20, 22]),
        ]
        for sql, values in cases:
            expected: dict[str, int] = {}
            for v in values:
                expected[src(v)] = expected.get(src(v), 0) + 1
            assert owners(sql) == expected, sql
        assert conn.execute("SELECT id, owner FROM items ORDER BY owner").fetchall() == [
            (5, 11),
            (4, 21),
            (2, 22),
        ]
        run(conn, "INSERT INTO pairs VALUES ('x', 1, 40), ('x', 2, 41)")
        pair = by["pairs"].source  # a WITHOUT ROWID table: its primary key
        assert owners("REPLACE INTO pairs VALUES ('x', 1, 42)") == {pair(40): 1, pair(42): 1}
        # Conflicts on an expression cannot be found: every insert moves every partition.
        assert "table:exprs/*" in owners("INSERT INTO exprs VALUES (1, 'A@x', 50)")
        assert "table:exprs/*" in owners("INSERT OR REPLACE INTO exprs VALUES (2, 'a@X', 51)")


async def test_a_keyed_view_of_a_replaced_row_is_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "shop.db"
    with closing(sqlite3.connect(path, isolation_level=None)) as shell:
        shell.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER)")
        migrate.upgrade(str(path))
        install_triggers(str(path), ["orders"], partitions=[BY_CUSTOMER])
        engine = sqlite_engine(path)
        keeper = Keeper(SQLAlchemyRevisions(engine), bus=LocalBus(), resync_interval=600)

        async def ids(ctx: BuildContext) -> list[int]:
            async with engine.connect() as c:
                rows = await c.execute(
                    text("SELECT id FROM orders WHERE customer_id = :k"), {"k": ctx.key}
                )
                return [int(r[0]) for r in rows]

        view = keeper.view("orders", ids, sources=[BY_CUSTOMER])
        await keeper.start()
        try:
            shell.execute("INSERT INTO orders VALUES (11, 1)")
            await keeper.resync()
            assert [(await view.get(k)).value for k in (1, 3)] == [[11], []]
            shell.execute("INSERT OR REPLACE INTO orders VALUES (11, 3)")
            await keeper.resync()
            assert [(await view.get(k)).value for k in (1, 3)] == [[], [11]]
        finally:
            await keeper.aclose()
            await engine.dispose()


INTS = st.none() | st.integers(-(2**63), 2**63 - 1) | st.integers(-3000, 3000)
INT_PARTS = [
    Partitioned("table:vals", "n", 1024),
    Partitioned("table:vals", "n7", 7),
    Partitioned("table:vals", "nmax", MAX_BUCKETS),
    Partitioned("table:vals", "b", 64),
]


@pytest.fixture(scope="module")
def vals(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sqlite3.Connection]:
    """A table partitioned by integer and boolean columns, for every example."""
    path = tmp_path_factory.mktemp("vals") / "vals.db"
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("CREATE TABLE vals (n INTEGER, n7 INTEGER, nmax INTEGER, b BOOLEAN)")
        migrate.upgrade(str(path))
        install_triggers(str(path), ["vals"], partitions=INT_PARTS)
        yield conn


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(st.tuples(INTS, st.none() | st.booleans()), min_size=1, max_size=30))
def test_the_triggers_buckets_are_pythons(
    vals: sqlite3.Connection, rows: list[tuple[int | None, bool | None]]
) -> None:
    """Whatever the integers, the buckets the triggers bump are those bucket_of computes."""
    records = [{"n": n, "n7": n, "nmax": n, "b": b} for n, b in rows]
    params = {f"{k}{i}": v for i, r in enumerate(records) for k, v in r.items()}
    values = ", ".join(f"(:n{i}, :n7{i}, :nmax{i}, :b{i})" for i in range(len(records)))
    moved = moves_with(vals, f"INSERT INTO vals VALUES {values}", params)
    expected = {p.source(r[p.column]) for p in INT_PARTS for r in records}
    assert set(moved) == {"table:vals"} | expected
    assert moved["table:vals"] == len(rows)  # row-level: once per row
