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
from sqlalchemy import text

from freshkeep import Keeper
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
    sqlite_engine,
    tracked,
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
    assert await db.counters() == {TASKS: 1, EVERY: 1}
    run(shell, "INSERT INTO tasks (id, title, updated_at) VALUES (2, 'b', '2024-01-01')")
    run(shell, "UPDATE tasks SET title = 'x'")  # two rows: two bumps
    assert await db.counters() == {TASKS: 4, EVERY: 4}
    run(shell, "DELETE FROM tasks")  # no WHERE: the delete trigger still fires per row
    assert await db.counters() == {TASKS: 6, EVERY: 6}
    run(shell, "INSERT INTO projects (id, name) VALUES (1, 'p')", commit=False)
    assert await db.counters() == {TASKS: 6, EVERY: 6}  # a rollback leaves no trace
    run(shell, "UPDATE notes SET body = 'n'")  # an untriggered table
    assert await db.counters() == {TASKS: 6, EVERY: 6}


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
    counters = await db.counters()
    assert counters == {TASKS: 3, EVERY: 2}
    assert db.keeper.tracker.snapshot[TASKS] == db.keeper.tracker.floor[TASKS] == 3
    assert db.published[-1] == {TASKS: 3}
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
