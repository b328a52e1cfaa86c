"""Opt-in change capture: triggers that bump revisions on any write (PostgreSQL and SQLite).

freshkeep's write hooks see what the application writes through SQLAlchemy. Tables that other
programs also write (``psql``, the ``sqlite3`` shell, cron jobs, another service) can get
triggers instead, so that any writer moves the revisions, in its own transaction.

**What a write bumps.** Every write to a triggered table bumps ``table:<name>``. A table
installed without partitions also bumps ``table:<name>/*`` (every partition: a writer nobody
told the columns moves them all). A table installed with ``partitions=``
(:class:`~freshkeep.core.partitions.Partitioned` sources of the table) bumps, for each
partition column, the buckets of the rows the write touched instead: the new rows' values
for an ``INSERT``, the old and new values for an ``UPDATE``, the old values for a
``DELETE`` (``table:<name>/<column>#<bucket>``, the bucket computed as
:func:`~freshkeep.core.partitions.bucket_of` does: ``v mod buckets`` for an integer, 0 for
``NULL``, the MD5 of the text form otherwise).

**Checked at start.** Triggers bump the partitions of the columns they were told, and no
other: a table triggered with ``partitions=[by status]`` never moves ``/<owner>#...`` nor
``/*``, so a view partitioned by ``owner`` would never see another program's writes.
:func:`installed_triggers` reads which partitions the installed triggers compute (PostgreSQL:
their arguments; SQLite: a comment line of their body), and :func:`check_partitions` raises
:class:`~freshkeep.exceptions.ConfigurationError` when a table's triggers compute partitions but
not each of the given ones of that table with the same buckets, naming the ``freshkeep
migrate --triggers <t> --partition <t>.<column>:<buckets> ...`` command that installs them
with every partition. :meth:`Keeper.start <freshkeep.Keeper.start>` runs it with the keeper's
partitions (:meth:`SQLAlchemyRevisions.check
<freshkeep.sql.revisions.SQLAlchemyRevisions.check>`). A table triggered without partitions
moves ``/*`` on every write: right for any partition, it passes.

**PostgreSQL.** :func:`install_triggers` adds to an unpartitioned table a **statement-level**
``AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE`` trigger, ``freshkeep_bump``; to a
partitioned table four statement-level triggers, ``freshkeep_bump_insert``, ``_update`` and
``_delete`` (each with the transition tables of its rows: PostgreSQL allows them on
single-event triggers only) and ``freshkeep_bump_truncate``. All run the PL/pgSQL function
``freshkeep_bump(channel, 'column:buckets:kind', ...)``, which upserts every source of the
statement in ``freshkeep_revisions`` in one statement, in a stable order (two writers
cannot deadlock on them), in the writing transaction, and sends one
``pg_notify(channel, payload)`` with the new revisions, in the bus's JSON format
(``{"o": "trigger", "r": {"table:<name>": <revision>, ...}}``), which PostgreSQL delivers on
commit; a rollback bumps and sends nothing. The distinct buckets of a statement are bumped
once each. ``TRUNCATE`` bumps ``table:<name>`` and ``/*``. A partition column is an integer
(``smallint``, ``integer``, ``bigint``), ``boolean``, ``text``, ``varchar``, ``uuid`` or
enum column: their text forms read the same in Python (an enum's is its label, and
:func:`~freshkeep.core.partitions.bucket_of` takes a Python enum member by its name, the label
SQLAlchemy's ``Enum`` type stores), other types are refused.
A ``NOTIFY`` payload holds less than 8000 bytes: when a statement touched too many buckets to
name them all, it also bumps ``/*`` and the payload names only ``table:<name>`` and ``/*``
(readers rebuild now; the buckets' revisions are read at the next resync).

Costs and limits, documented in the operator guide:

- One bump per statement, even one that changes no row: over-invalidation, never under.
- A table written by the ORM with :func:`~freshkeep.integrations.sqlalchemy.track` installed
  **and** triggered is bumped twice per transaction; harmless (one extra rebuild at most).
- The counter rows are locked from the statement until the commit (not just at commit, as the
  write hooks do): writers of one triggered table serialize on it, and transactions that write
  several triggered tables in different orders can deadlock (PostgreSQL aborts one).
- Renaming, dropping or retyping a partition column fails the table's writes until the
  triggers are installed again.

The function is created in the schema of ``freshkeep_revisions`` and names that table with its
schema, so writers with another ``search_path`` bump the same counters. All operations are
idempotent (``CREATE OR REPLACE FUNCTION``, ``DROP TRIGGER IF EXISTS``); installing a table
again replaces its triggers of either shape.

**SQLite** has row-level triggers only: each table gets three ``AFTER INSERT / UPDATE / DELETE
… FOR EACH ROW`` triggers (``freshkeep_bump_<table>_insert`` …) that bump the table's sources
in ``freshkeep_revisions`` inside the writing transaction. A statement that writes N rows bumps
them N times (counters only need to move; the cost is a few indexed updates per row, inside
SQLite). SQLite has no MD5: a partition value that is neither an integer nor ``NULL`` bumps
``table:<name>/*`` instead of its bucket (over-invalidation, never under); a ``BOOLEAN``
column's 0 and 1 take the buckets of ``False`` and ``True``. A ``DELETE`` without ``WHERE``
fires them too (SQLite skips its truncate optimisation for a table with a delete trigger); an
upsert (``INSERT ... ON CONFLICT DO UPDATE``) fires the ``UPDATE`` trigger. A ``REPLACE``
(``INSERT OR REPLACE``, ``UPDATE OR REPLACE``) deletes the rows that conflict with the new one
without firing their ``DELETE`` trigger: a partitioned table also gets a ``BEFORE INSERT`` and
a ``BEFORE UPDATE`` trigger (``freshkeep_bump_<table>_replace`` and ``_rekey``, the latter
only when a unique column changes) that bump the buckets of the rows sharing a unique key (the
primary key, a ``UNIQUE`` constraint or index, the rowid) with the new one: one indexed lookup
per unique key and written row; the keys are read at install time. A unique index on an
expression makes them bump ``/*`` instead (which rows conflict with it cannot be told).
SQLite has no NOTIFY: other processes read the counters at their next resync, which ``PRAGMA
data_version`` keeps cheap (see :class:`freshkeep.sql.revisions.DataVersion`). Installing is
idempotent (``DROP TRIGGER IF EXISTS`` then ``CREATE TRIGGER``), in one transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from freshkeep.core.partitions import Partitioned
from freshkeep.exceptions import ConfigurationError
from freshkeep.sql._capture import (
    BOOLEAN,
    DEFAULT_CHANNEL,
    FUNCTION,
    INTEGER,
    TEXT,
    InstalledTriggers,
    Split,
    installed,
    match_partitions,
    missing_column,
    parse_arguments,
    partition_problem,
    sql_literal,
    sqlite_install,
    sqlite_installed,
    sqlite_remove,
    sqlite_triggered,
)
from freshkeep.sql.engine import display_url
from freshkeep.sql.migrate import Target, run, run_async

try:
    from sqlalchemy import Connection, text
except ImportError as exc:  # pragma: no cover - exercised without the extra
    from freshkeep.exceptions import missing_extra

    raise missing_extra("postgres", exc.name or "sqlalchemy") from exc

__all__ = [
    "ALL_TABLES",
    "DEFAULT_CHANNEL",
    "FUNCTION",
    "NOTIFY_ROOM",
    "InstalledTriggers",
    "check_partitions",
    "check_partitions_async",
    "install_triggers",
    "install_triggers_async",
    "installed_triggers",
    "installed_triggers_async",
    "remove_triggers",
    "remove_triggers_async",
    "triggered_tables",
    "triggered_tables_async",
]

NOTIFY_ROOM = 7900
"""The bytes of revisions a trigger's ``NOTIFY`` names at most (PostgreSQL refuses a payload of
8000 bytes); past that it names ``table:<name>`` and ``table:<name>/*`` only."""

_FUNCTION_SQL = """
CREATE OR REPLACE FUNCTION {schema}.{function}() RETURNS trigger
LANGUAGE plpgsql AS $freshkeep$
DECLARE
    base text := 'table:' || TG_TABLE_NAME;
    all_parts text := base || '/*';
    sources text[] := ARRAY[base];
    rels text[];
    spec text[];
    col text;
    expr text;
    sql_text text;
    parts text[];
    too_big boolean := false;
    revs json;
BEGIN
    IF TG_NARGS < 2 OR TG_OP = 'TRUNCATE' THEN
        sources := sources || all_parts;  -- no partition known: every partition moves
    ELSE
        -- TG_ARGV[1...] are 'column:buckets:kind'; the transition tables hold the rows
        rels := CASE TG_OP
            WHEN 'INSERT' THEN ARRAY['freshkeep_new']
            WHEN 'DELETE' THEN ARRAY['freshkeep_old']
            ELSE ARRAY['freshkeep_old', 'freshkeep_new'] END;
        FOR i IN 1 .. TG_NARGS - 1 LOOP
            spec := string_to_array(TG_ARGV[i], ':');
            col := quote_ident(spec[1]);
            -- No percent sign in this function: drivers read it as a parameter's.
            expr := CASE spec[3]
                WHEN '{integer}' THEN
                    'mod(mod(' || col || ', ' || spec[2] || ') + ' || spec[2] || ', '
                    || spec[2] || ')'
                WHEN '{boolean}' THEN
                    'mod((''x'' || substr(md5(CASE ' || col || ' WHEN true THEN ''True'' '
                    || 'WHEN false THEN ''False'' END), 1, 8))::bit(32)::bigint, '
                    || spec[2] || ')'
                ELSE
                    'mod((''x'' || substr(md5(' || col || '::text), 1, 8))::bit(32)::bigint, '
                    || spec[2] || ')'
            END;
            FOR j IN 1 .. array_length(rels, 1) LOOP
                sql_text := concat_ws(' UNION ', sql_text,
                    'SELECT ' || quote_literal(base || '/' || spec[1] || '#')
                    || ' || coalesce(' || expr || ', 0) FROM ' || rels[j]);
            END LOOP;
        END LOOP;
        EXECUTE 'SELECT array_agg(DISTINCT s) FROM (' || sql_text || ') AS b(s)' INTO parts;
        sources := sources || coalesce(parts, ARRAY[]::text[]);
        -- Too many buckets for one NOTIFY: every partition moves too, and only it and the
        -- table are named (the buckets' revisions are read at the next resync).
        too_big := (SELECT sum(octet_length(to_json(s)::text) + 24) FROM unnest(sources) s)
            > {room};
        IF too_big THEN
            sources := sources || all_parts;
        END IF;
    END IF;
    WITH bumped AS (
        INSERT INTO {schema}.freshkeep_revisions AS r (source, revision)
        SELECT s, 1 FROM unnest(sources) AS s ORDER BY s COLLATE "C"
        ON CONFLICT (source) DO UPDATE SET revision = r.revision + 1
        RETURNING r.source, r.revision
    )
    SELECT json_object_agg(b.source, b.revision)
        FILTER (WHERE NOT too_big OR b.source IN (base, all_parts))
    INTO revs FROM bumped AS b;
    PERFORM pg_notify(TG_ARGV[0], json_build_object('o', 'trigger', 'r', revs)::text);
    RETURN NULL;
END
$freshkeep$
"""

_PARTITIONED = {
    "insert": "AFTER INSERT ON {table} REFERENCING NEW TABLE AS freshkeep_new",
    "update": "AFTER UPDATE ON {table} "
    "REFERENCING OLD TABLE AS freshkeep_old NEW TABLE AS freshkeep_new",
    "delete": "AFTER DELETE ON {table} REFERENCING OLD TABLE AS freshkeep_old",
    "truncate": "AFTER TRUNCATE ON {table}",
}
"""The triggers of a partitioned table: transition tables need one event per trigger."""

_PG_TRIGGERS = (FUNCTION, *(f"{FUNCTION}_{op}" for op in _PARTITIONED))
"""The names of the triggers of both shapes."""

_PG_KINDS = {
    "int2": INTEGER,
    "int4": INTEGER,
    "int8": INTEGER,
    "bool": BOOLEAN,
    "text": TEXT,
    "varchar": TEXT,
    "uuid": TEXT,
}
"""The column types whose values the trigger buckets as Python does (enums are text too)."""


def _check_postgres(conn: Connection) -> None:
    if conn.dialect.name != "postgresql":
        raise ConfigurationError(
            f"change-capture triggers need PostgreSQL or SQLite, not {conn.dialect.name!r}"
        )


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


def _pg_splits(conn: Connection, quoted: str, bare: str, parts: list[Partitioned]) -> list[Split]:
    """The partition columns of a PostgreSQL table, with how the trigger buckets each."""
    rows = conn.execute(
        text(
            "SELECT a.attname, coalesce(b.typname, t.typname), coalesce(b.typtype, t.typtype) "
            "FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
            "LEFT JOIN pg_type b ON t.typtype = 'd' AND b.oid = t.typbasetype "
            "WHERE a.attrelid = to_regclass(:t) AND a.attnum > 0 AND NOT a.attisdropped"
        ),
        {"t": quoted},
    ).all()
    types = {str(name): (str(typ), str(kind)) for name, typ, kind in rows}
    splits = []
    for p in parts:
        if p.column not in types:
            raise missing_column(bare, p.column, types)
        typ, typtype = types[p.column]
        kind = TEXT if typtype == "e" else _PG_KINDS.get(typ)
        if kind is None:
            raise ConfigurationError(
                f"column {p.column!r} of table {bare!r} is a {typ}: a partition column is an "
                "integer, boolean, text, varchar, uuid or enum column (the triggers bucket "
                "their values as Python does)"
            )
        splits.append(Split(p.column, p.buckets, kind))
    return splits


def _pg_create(conn: Connection, quoted: str, function: str, args: list[str]) -> None:
    """Replace the triggers of a table by those of its shape."""
    for name in _PG_TRIGGERS:
        conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name} ON {quoted}")
    channel = args[0]
    if len(args) == 1:  # no partition: one trigger for every event
        conn.exec_driver_sql(
            f"CREATE TRIGGER {FUNCTION} AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE "
            f"ON {quoted} FOR EACH STATEMENT EXECUTE FUNCTION {function}({channel})"
        )
        return
    for op, event in _PARTITIONED.items():
        given = channel if op == "truncate" else ", ".join(args)
        conn.exec_driver_sql(
            f"CREATE TRIGGER {FUNCTION}_{op} {event.format(table=quoted)} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {function}({given})"
        )


def _install(
    conn: Connection, tables: list[str], channel: str, partitions: Sequence[object]
) -> list[str]:
    tables = _expand(conn, tables)
    if not tables:
        match_partitions(partitions, [])  # a partition of no triggered table is an error
        return []  # "*" on a database with no table of the application yet
    if conn.dialect.name == "sqlite":
        return sqlite_install(conn, tables, partitions)
    _check_postgres(conn)
    if not channel or len(channel.encode()) > 63:
        raise ConfigurationError(f"a NOTIFY channel has 1 to 63 bytes, not {channel!r}")
    quote = conn.dialect.identifier_preparer.quote_identifier
    schema = quote(_revisions_schema(conn))
    targets = [_qualified(conn, t) for t in tables]
    by_table = match_partitions(partitions, [bare for _, bare in targets])
    splits = [_pg_splits(conn, q, bare, by_table.get(bare, [])) for q, bare in targets]
    conn.exec_driver_sql(
        _FUNCTION_SQL.format(
            schema=schema, function=FUNCTION, integer=INTEGER, boolean=BOOLEAN, room=NOTIFY_ROOM
        )
    )
    for (quoted, _), table_splits in zip(targets, splits, strict=True):
        args = [sql_literal(a) for a in [channel, *(s.argument for s in table_splits)]]
        _pg_create(conn, quoted, f"{schema}.{FUNCTION}", args)
    return [bare for _, bare in targets]


def _remove(conn: Connection, tables: list[str]) -> list[str]:
    tables = _expand(conn, tables)
    if conn.dialect.name == "sqlite":
        return sqlite_remove(conn, tables)
    _check_postgres(conn)
    targets = [_qualified(conn, t) for t in tables]
    for quoted, _ in targets:
        for name in _PG_TRIGGERS:
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name} ON {quoted}")
    return [bare for _, bare in targets]


def _triggered(conn: Connection) -> list[str]:
    if conn.dialect.name == "sqlite":
        return sqlite_triggered(conn)
    _check_postgres(conn)
    rows = conn.execute(
        text(
            "SELECT DISTINCT c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
            "WHERE t.tgname = ANY(:names) AND NOT t.tgisinternal "
            "AND pg_catalog.pg_table_is_visible(c.oid) ORDER BY 1"
        ),
        {"names": list(_PG_TRIGGERS)},
    )
    return [str(r[0]) for r in rows]


def _installed(conn: Connection) -> dict[str, InstalledTriggers]:
    if conn.dialect.name == "sqlite":
        return {t: installed(t, s, None) for t, s in sqlite_installed(conn).items()}
    _check_postgres(conn)
    rows = conn.execute(
        text(
            "SELECT c.relname, t.tgname, t.tgargs FROM pg_trigger t "
            "JOIN pg_class c ON c.oid = t.tgrelid WHERE t.tgname = ANY(:names) "
            "AND NOT t.tgisinternal AND pg_catalog.pg_table_is_visible(c.oid)"
        ),
        {"names": list(_PG_TRIGGERS)},
    )
    args: dict[str, dict[str, list[str]]] = {}
    for table, name, raw in rows:  # each argument ends with a NUL byte
        given = bytes(raw).decode("utf-8", "replace").split("\0")[:-1]
        args.setdefault(str(table), {})[str(name)] = given
    found = {}
    for table, by_name in sorted(args.items()):
        # The partitioned shape names its columns on every trigger but _truncate's.
        given = by_name.get(f"{FUNCTION}_insert") or by_name.get(FUNCTION) or []
        splits = parse_arguments(given[1:]) if given else None
        found[table] = installed(table, splits, given[0] if given else None)
    return found


def _check_partitions(conn: Connection, partitions: list[Partitioned]) -> None:
    wanted: dict[str, list[Partitioned]] = {}
    for p in partitions:
        wanted.setdefault(p.table.removeprefix("table:"), []).append(p)
    found = _installed(conn) if wanted else {}
    where = display_url(conn.engine.url)
    problems = [
        problem
        for table, parts in sorted(wanted.items())
        if table in found and (problem := partition_problem(found[table], parts, where))
    ]
    if problems:
        raise ConfigurationError("; ".join(problems))


def install_triggers(
    target: Target,
    tables: Iterable[str],
    *,
    channel: str = DEFAULT_CHANNEL,
    partitions: Iterable[Partitioned] = (),
) -> list[str]:
    """Install (or replace) the change-capture triggers on each of ``tables``.

    ``tables`` are names (``tasks``, ``table:tasks`` or, on PostgreSQL, ``schema.tasks``), or
    :data:`ALL_TABLES` (``"*"``) for every table of the database but freshkeep's own; the
    ``freshkeep_revisions`` table must exist (``freshkeep migrate``). On PostgreSQL,
    notifications go to ``channel`` (SQLite has none). ``partitions`` are
    :class:`~freshkeep.core.partitions.Partitioned` sources of some of these tables
    (``Partitioned("table:tasks", "project_id")``, by the bare table name): a write to such a
    table bumps the buckets of the rows it touched instead of ``table:<name>/*``. Returns the
    bare table names, whose sources are ``table:<name>``. Raises
    :class:`~freshkeep.exceptions.ConfigurationError` for a missing table or column, a
    partition of a table not in ``tables``, a column type the triggers cannot bucket
    (PostgreSQL), or a database that is neither PostgreSQL nor SQLite (nothing is installed
    then).
    """
    names, parts = list(tables), list(partitions)
    return run(target, lambda conn: _install(conn, names, channel, parts))


def remove_triggers(target: Target, tables: Iterable[str]) -> list[str]:
    """Drop the change-capture triggers of each of ``tables``, of either shape (idempotent)."""
    names = list(tables)
    return run(target, lambda conn: _remove(conn, names))


def triggered_tables(target: Target) -> list[str]:
    """The tables in the ``search_path`` that have change-capture triggers."""
    return run(target, _triggered)


async def install_triggers_async(
    target: Target,
    tables: Iterable[str],
    *,
    channel: str = DEFAULT_CHANNEL,
    partitions: Iterable[Partitioned] = (),
) -> list[str]:
    """:func:`install_triggers` from async code."""
    names, parts = list(tables), list(partitions)
    return await run_async(target, lambda conn: _install(conn, names, channel, parts))


async def remove_triggers_async(target: Target, tables: Iterable[str]) -> list[str]:
    """:func:`remove_triggers` from async code."""
    names = list(tables)
    return await run_async(target, lambda conn: _remove(conn, names))


async def triggered_tables_async(target: Target) -> list[str]:
    """:func:`triggered_tables` from async code."""
    return await run_async(target, _triggered)


def installed_triggers(target: Target) -> dict[str, InstalledTriggers]:
    """The change-capture triggers of each triggered table in the ``search_path`` (by bare
    name): which partitions they compute (PostgreSQL: from the trigger arguments; SQLite: from
    the line of the triggers' body that names them), and their channel (PostgreSQL)."""
    return run(target, _installed)


async def installed_triggers_async(target: Target) -> dict[str, InstalledTriggers]:
    """:func:`installed_triggers` from async code."""
    return await run_async(target, _installed)


def check_partitions(target: Target, partitions: Iterable[Partitioned]) -> None:
    """Raise :class:`~freshkeep.exceptions.ConfigurationError` when a triggered table has
    triggers that compute partitions, but not each of ``partitions`` of that table with the
    same number of buckets: another program's writes would then never move those partitions.
    The message names the table, the column and the ``freshkeep migrate`` command that
    installs the triggers with every partition. A table without triggers, or whose triggers
    were installed without partitions (every write bumps ``table:<name>/*``), passes.
    :meth:`SQLAlchemyRevisions.check <freshkeep.sql.revisions.SQLAlchemyRevisions.check>`
    runs it at :meth:`Keeper.start <freshkeep.Keeper.start>` with the keeper's partitions."""
    parts = list(partitions)
    run(target, lambda conn: _check_partitions(conn, parts))


async def check_partitions_async(target: Target, partitions: Iterable[Partitioned]) -> None:
    """:func:`check_partitions` from async code."""
    parts = list(partitions)
    await run_async(target, lambda conn: _check_partitions(conn, parts))
