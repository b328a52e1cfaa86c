"""Opt-in change capture: triggers that bump revisions on any write (PostgreSQL and SQLite).

freshkeep's write hooks see what the application writes through SQLAlchemy. Tables that other
programs also write (``psql``, the ``sqlite3`` shell, cron jobs, another service) can get a
trigger instead, so that any writer moves the revisions, in its own transaction.

**PostgreSQL.** :func:`install_triggers` adds to each table a **statement-level** ``AFTER
INSERT OR UPDATE OR DELETE OR TRUNCATE`` trigger that runs the PL/pgSQL function
``freshkeep_bump()``. The function upserts the table's counter in ``freshkeep_revisions``
(``source = 'table:' || TG_TABLE_NAME``, ``revision + 1``), in the writing transaction, and
sends ``pg_notify(channel, payload)`` with the new revision, in the bus's JSON format
(``{"o": "trigger", "r": {"table:<name>": <revision>}}``), which PostgreSQL delivers on commit;
a rollback bumps and sends nothing.

Costs and limits, documented in the operator guide:

- One bump per statement, even one that changes no row: over-invalidation, never under.
- A table written by the ORM with :func:`~freshkeep.integrations.sqlalchemy.track` installed
  **and** triggered is bumped twice per transaction; harmless (one extra rebuild at most).
- The counter row is locked from the statement until the commit (not just at commit, as the
  write hooks do): writers of one triggered table serialize on it, and transactions that write
  several triggered tables in different orders can deadlock (PostgreSQL aborts one).

The function is created in the schema of ``freshkeep_revisions`` and names that table with its
schema, so writers with another ``search_path`` bump the same counters. All operations are
idempotent (``CREATE OR REPLACE FUNCTION``, ``DROP TRIGGER IF EXISTS``).

**SQLite** has row-level triggers only: each table gets three ``AFTER INSERT / UPDATE / DELETE
… FOR EACH ROW`` triggers (``freshkeep_bump_<table>_insert`` …) that bump the table's counter in
``freshkeep_revisions`` inside the writing transaction. A statement that writes N rows bumps
the counter N times (counters only need to move; the cost is one indexed update per row, inside
SQLite). A ``DELETE`` without ``WHERE`` fires them too (SQLite skips its truncate optimisation
for a table with a delete trigger). SQLite has no NOTIFY: other processes read the counter at
their next resync, which ``PRAGMA data_version`` keeps cheap (see
:class:`freshkeep.sql.revisions.DataVersion`).
Installing is idempotent (``DROP TRIGGER IF EXISTS`` then ``CREATE TRIGGER``), in one
transaction.
"""

from __future__ import annotations

from collections.abc import Iterable

from freshkeep.exceptions import ConfigurationError
from freshkeep.sql.migrate import Target, run, run_async

try:
    from sqlalchemy import Connection, text
except ImportError as exc:  # pragma: no cover - exercised without the extra
    from freshkeep.exceptions import missing_extra

    raise missing_extra("postgres", exc.name or "sqlalchemy") from exc

FUNCTION = "freshkeep_bump"
"""The name of the trigger function, and of the trigger on each table."""

DEFAULT_CHANNEL = "freshkeep"
"""The NOTIFY channel; the default of :class:`~freshkeep.buses.postgres.PostgresBus`."""

_FUNCTION_SQL = """
CREATE OR REPLACE FUNCTION {schema}.{function}() RETURNS trigger
LANGUAGE plpgsql AS $freshkeep$
DECLARE
    src text := 'table:' || TG_TABLE_NAME;
    rev bigint;
BEGIN
    INSERT INTO {schema}.freshkeep_revisions AS r (source, revision) VALUES (src, 1)
    ON CONFLICT (source) DO UPDATE SET revision = r.revision + 1
    RETURNING r.revision INTO rev;
    PERFORM pg_notify(
        TG_ARGV[0],
        json_build_object('o', 'trigger', 'r', json_build_object(src, rev))::text
    );
    RETURN NULL;
END
$freshkeep$
"""


def _check_postgres(conn: Connection) -> None:
    if conn.dialect.name != "postgresql":
        raise ConfigurationError(
            f"change-capture triggers need PostgreSQL or SQLite, not {conn.dialect.name!r}"
        )


# -- SQLite ----------------------------------------------------------------------------------

_SQLITE_OPS = ("insert", "update", "delete")

_SQLITE_TRIGGER = """
CREATE TRIGGER {name} AFTER {op} ON {table} FOR EACH ROW
BEGIN
    INSERT INTO freshkeep_revisions (source, revision) VALUES ({source}, 1)
    ON CONFLICT (source) DO UPDATE SET revision = revision + 1;
END
"""
# One upsert with its own ON CONFLICT clause: SQLite applies the conflict resolution of the
# outer statement (INSERT OR REPLACE, UPDATE OR ABORT ...) to the statements of a trigger that
# have none, so an INSERT OR IGNORE here would become a REPLACE (resetting the counter) or an
# ABORT (failing the application's write).


def _sqlite_name(table: str) -> str:
    name = table.removeprefix("table:")
    if not name or "." in name:
        raise ConfigurationError(f"not a SQLite table name: {table!r}")
    if name == "freshkeep_revisions":
        raise ConfigurationError("freshkeep_revisions itself cannot be triggered")
    return name


def _sqlite_tables(conn: Connection) -> set[str]:
    rows = conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'table'")
    return {str(r[0]) for r in rows}


def _sqlite_install(conn: Connection, tables: list[str]) -> list[str]:
    names = [_sqlite_name(t) for t in tables]
    present = _sqlite_tables(conn)
    if "freshkeep_revisions" not in present:
        raise ConfigurationError("no freshkeep_revisions table: run `freshkeep migrate` first")
    for name in names:
        if name not in present:
            raise ConfigurationError(f"no table {name!r} in the SQLite database")
    quote = conn.dialect.identifier_preparer.quote_identifier
    for name in names:
        source = "'" + f"table:{name}".replace("'", "''") + "'"
        for op in _SQLITE_OPS:
            trigger = quote(f"{FUNCTION}_{name}_{op}")
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {trigger}")
            conn.exec_driver_sql(
                _SQLITE_TRIGGER.format(
                    name=trigger, op=op.upper(), table=quote(name), source=source
                )
            )
    return names


def _sqlite_remove(conn: Connection, tables: list[str]) -> list[str]:
    names = [_sqlite_name(t) for t in tables]
    quote = conn.dialect.identifier_preparer.quote_identifier
    for name in names:
        for op in _SQLITE_OPS:
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {quote(f'{FUNCTION}_{name}_{op}')}")
    return names


def _sqlite_triggered(conn: Connection) -> list[str]:
    rows = conn.exec_driver_sql(
        "SELECT tbl_name, count(*) FROM sqlite_master WHERE type = 'trigger' "
        "AND name LIKE 'freshkeep_bump_%' GROUP BY tbl_name ORDER BY 1"
    )
    return [str(name) for name, n in rows if n == len(_SQLITE_OPS)]


# -- PostgreSQL ------------------------------------------------------------------------------


def _qualified(conn: Connection, table: str) -> tuple[str, str]:
    """The quoted name of ``table`` (``name`` or ``schema.name``) and its bare name."""
    name = table.removeprefix("table:")
    parts = name.split(".")
    if not 1 <= len(parts) <= 2 or not all(parts):
        raise ConfigurationError(f"not a table name: {table!r}")
    if parts[-1] == "freshkeep_revisions":
        raise ConfigurationError("freshkeep_revisions itself cannot be triggered")
    quote = conn.dialect.identifier_preparer.quote_identifier
    quoted = ".".join(quote(p) for p in parts)
    if conn.execute(text("SELECT to_regclass(:t)"), {"t": quoted}).scalar() is None:
        raise ConfigurationError(f"no table {name!r} (in the search_path {_search_path(conn)})")
    return quoted, parts[-1]


def _search_path(conn: Connection) -> str:
    return str(conn.execute(text("SHOW search_path")).scalar())


def _revisions_schema(conn: Connection) -> str:
    schema = conn.execute(
        text(
            "SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.oid = to_regclass('freshkeep_revisions')"
        )
    ).scalar()
    if schema is None:
        raise ConfigurationError(
            "no freshkeep_revisions table in the search_path "
            f"{_search_path(conn)}: run `freshkeep migrate` first"
        )
    return str(schema)


ALL_TABLES = "*"
"""Given as a table name: every table of the database (its default schema) but freshkeep's own
and Alembic's version table."""


def _every_table(conn: Connection) -> list[str]:
    if conn.dialect.name == "sqlite":
        rows = list(
            conn.exec_driver_sql("SELECT name, sql FROM sqlite_master WHERE type = 'table'")
        )
        virtual = [str(n) for n, sql in rows if str(sql or "").upper().startswith("CREATE VIRTUAL")]
        names = sorted(
            str(n)
            for n, _ in rows
            if not str(n).startswith("sqlite_")
            and str(n) not in virtual  # no trigger on a virtual table ...
            and not any(str(n).startswith(f"{v}_") for v in virtual)  # ... or its shadow tables
        )
    else:
        found = conn.execute(
            text(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' "
                "ORDER BY 1"
            )
        )
        names = [str(r[0]) for r in found]
    return [n for n in names if not n.startswith("freshkeep_") and n != "alembic_version"]


def _expand(conn: Connection, tables: list[str]) -> list[str]:
    if ALL_TABLES not in tables:
        return tables
    rest = [t for t in tables if t != ALL_TABLES]
    return list(dict.fromkeys([*_every_table(conn), *rest]))


def _install(conn: Connection, tables: list[str], channel: str) -> list[str]:
    tables = _expand(conn, tables)
    if not tables:
        return []  # "*" on a database with no table of the application yet
    if conn.dialect.name == "sqlite":
        return _sqlite_install(conn, tables)
    _check_postgres(conn)
    if not channel or len(channel.encode()) > 63:
        raise ConfigurationError(f"a NOTIFY channel has 1 to 63 bytes, not {channel!r}")
    quote = conn.dialect.identifier_preparer.quote_identifier
    schema = quote(_revisions_schema(conn))
    targets = [_qualified(conn, t) for t in tables]
    conn.exec_driver_sql(_FUNCTION_SQL.format(schema=schema, function=FUNCTION))
    literal = "'" + channel.replace("'", "''") + "'"
    for quoted, _ in targets:
        conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {FUNCTION} ON {quoted}")
        conn.exec_driver_sql(
            f"CREATE TRIGGER {FUNCTION} AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE "
            f"ON {quoted} FOR EACH STATEMENT EXECUTE FUNCTION {schema}.{FUNCTION}({literal})"
        )
    return [bare for _, bare in targets]


def _remove(conn: Connection, tables: list[str]) -> list[str]:
    tables = _expand(conn, tables)
    if conn.dialect.name == "sqlite":
        return _sqlite_remove(conn, tables)
    _check_postgres(conn)
    targets = [_qualified(conn, t) for t in tables]
    for quoted, _ in targets:
        conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {FUNCTION} ON {quoted}")
    return [bare for _, bare in targets]


def _triggered(conn: Connection) -> list[str]:
    if conn.dialect.name == "sqlite":
        return _sqlite_triggered(conn)
    _check_postgres(conn)
    rows = conn.execute(
        text(
            "SELECT DISTINCT c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
            "WHERE t.tgname = :name AND NOT t.tgisinternal "
            "AND pg_catalog.pg_table_is_visible(c.oid) ORDER BY 1"
        ),
        {"name": FUNCTION},
    )
    return [str(r[0]) for r in rows]


def install_triggers(
    target: Target, tables: Iterable[str], *, channel: str = DEFAULT_CHANNEL
) -> list[str]:
    """Install (or replace) the change-capture trigger on each of ``tables``.

    ``tables`` are names (``tasks``, ``table:tasks`` or, on PostgreSQL, ``schema.tasks``), or
    :data:`ALL_TABLES` (``"*"``) for every table of the database but freshkeep's own; the
    ``freshkeep_revisions`` table must exist (``freshkeep migrate``). On PostgreSQL,
    notifications go to ``channel`` (SQLite has none). Returns the bare table names, whose
    sources are ``table:<name>``. Raises :class:`~freshkeep.exceptions.ConfigurationError` for
    a missing table or a database that is neither PostgreSQL nor SQLite (nothing is installed
    then).
    """
    names = list(tables)
    return run(target, lambda conn: _install(conn, names, channel))


def remove_triggers(target: Target, tables: Iterable[str]) -> list[str]:
    """Drop the change-capture trigger of each of ``tables`` (idempotent)."""
    names = list(tables)
    return run(target, lambda conn: _remove(conn, names))


def triggered_tables(target: Target) -> list[str]:
    """The tables in the ``search_path`` that have the change-capture trigger."""
    return run(target, _triggered)


async def install_triggers_async(
    target: Target, tables: Iterable[str], *, channel: str = DEFAULT_CHANNEL
) -> list[str]:
    """:func:`install_triggers` from async code."""
    names = list(tables)
    return await run_async(target, lambda conn: _install(conn, names, channel))


async def remove_triggers_async(target: Target, tables: Iterable[str]) -> list[str]:
    """:func:`remove_triggers` from async code."""
    names = list(tables)
    return await run_async(target, lambda conn: _remove(conn, names))


async def triggered_tables_async(target: Target) -> list[str]:
    """:func:`triggered_tables` from async code."""
    return await run_async(target, _triggered)
