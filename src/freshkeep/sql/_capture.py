"""What the change-capture triggers of both databases share, and SQLite's triggers.

The public functions are in :mod:`freshkeep.sql.triggers`, which documents them.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass

from freshkeep.core.partitions import EVERY, Partitioned, bucket_of, every_partition
from freshkeep.exceptions import ConfigurationError

try:
    from sqlalchemy import Connection
except ImportError as exc:  # pragma: no cover - exercised without the extra
    from freshkeep.exceptions import missing_extra

    raise missing_extra("sqlalchemy", exc.name or "sqlalchemy") from exc

DEFAULT_CHANNEL = "freshkeep"
"""The NOTIFY channel; the default of :class:`~freshkeep.buses.postgres.PostgresBus`."""

FUNCTION = "freshkeep_bump"
"""The name of the trigger function, and the prefix of every trigger of freshkeep."""

INTEGER = "i"
"""The kind of a partition column whose values are integers: bucket ``v mod buckets``."""
BOOLEAN = "b"
"""A boolean column: the bucket of Python's ``True`` / ``False``."""
TEXT = "t"
"""Any other column: the MD5 of the value's text form (PostgreSQL only)."""


@dataclass(frozen=True, slots=True)
class Split:
    """A partition column of a triggered table, as the triggers compute its buckets."""

    column: str
    buckets: int
    kind: str

    @property
    def argument(self) -> str:
        """The PostgreSQL trigger argument: ``column:buckets:kind``."""
        return f"{self.column}:{self.buckets}:{self.kind}"


def parse_arguments(arguments: Iterable[str]) -> list[Split] | None:
    """The splits that trigger arguments name (``column:buckets:kind`` each; ``*`` alone:
    none), or ``None`` if one is not such an argument."""
    given = list(arguments)
    if given == [EVERY]:
        return []
    splits = []
    for argument in given:
        parts = argument.rsplit(":", 2)
        if len(parts) != 3 or not parts[1].isdigit() or parts[2] not in (INTEGER, BOOLEAN, TEXT):
            return None
        column, buckets, kind = parts
        splits.append(Split(column, int(buckets), kind))
    return splits


def sql_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def match_partitions(
    partitions: Iterable[object], tables: list[str]
) -> dict[str, list[Partitioned]]:
    """The partitions of each of ``tables`` (bare names), by table, sorted by column.

    A partition names its table by its bare name (``table:tasks``): the triggers bump
    ``table:<bare name>/...``, so a partition of ``table:app.tasks`` would never see them.
    """
    found: dict[str, dict[str, Partitioned]] = {}
    for p in partitions:
        if not isinstance(p, Partitioned):
            raise ConfigurationError(f"not a Partitioned source: {p!r}")
        name = p.table.removeprefix("table:")
        bare = name.rsplit(".", 1)[-1]
        if bare != name:
            raise ConfigurationError(
                f"the triggers bump the source of the bare table name: partition "
                f"table:{bare}, not {p.table} ({p})"
            )
        if name not in tables:
            among = ", ".join(tables) or "none"
            raise ConfigurationError(
                f"partition {p}: table {name!r} is not among the tables to trigger ({among})"
            )
        columns = found.setdefault(name, {})
        other = columns.setdefault(p.column, p)
        if other.buckets != p.buckets:
            raise ConfigurationError(
                f"partition {p} given twice, with {other.buckets} and {p.buckets} buckets"
            )
    return {t: [c[k] for k in sorted(c)] for t, c in found.items()}


def missing_column(table: str, column: str, present: Iterable[str]) -> ConfigurationError:
    return ConfigurationError(
        f"no column {column!r} in table {table!r} to partition by "
        f"(its columns: {', '.join(sorted(present))})"
    )


@dataclass(frozen=True, slots=True)
class InstalledTriggers:
    """The change-capture triggers of one table, as they are installed."""

    table: str
    """The bare table name: the triggers bump ``table:<name>``."""
    partitions: tuple[Partitioned, ...] | None
    """The partitions whose buckets the triggers compute, by column; none (``()``) when every
    write bumps ``table:<name>/*`` instead (right for any partition of the table); ``None``
    when the triggers do not say (SQLite triggers installed by an earlier freshkeep)."""
    channel: str | None = None
    """The ``NOTIFY`` channel (PostgreSQL; ``None`` on SQLite)."""


def installed(table: str, splits: list[Split] | None, channel: str | None) -> InstalledTriggers:
    try:
        parts = (
            None
            if splits is None
            else tuple(Partitioned(f"table:{table}", s.column, s.buckets) for s in splits)
        )
    except ConfigurationError:  # not a column name a partition can have: not freshkeep's
        parts = None
    return InstalledTriggers(table, parts, channel)


def partition_problem(
    found: InstalledTriggers, wanted: Iterable[Partitioned], where: str
) -> str | None:
    """Why the triggers ``found`` leave partitions of ``wanted`` (of the same table) stale, and
    the command that installs them again with every partition; ``None`` when they do not."""
    have = {p.column: p for p in found.partitions or ()}
    needed = {p.column: p for p in wanted}
    if not needed or found.partitions == ():  # every write moves every partition
        return None
    wrong = [p for c, p in sorted(needed.items()) if have.get(c) != p]
    if found.partitions is not None and not wrong:
        return None
    table = found.table
    if found.partitions is None:
        why = "do not name the partitions they compute (installed by an earlier freshkeep)"
    else:
        computed = ", ".join(f"{p.column} ({p.buckets} buckets)" for _, p in sorted(have.items()))
        lacking = ", ".join(
            f"{p.column} in {have[p.column].buckets} buckets, not {p.buckets}"
            if p.column in have
            else f"not {p.column}"
            for p in wrong
        )
        why = f"compute the partitions of {computed}, {lacking}"
    every = {**have, **needed}
    command = f"freshkeep migrate --db '{where}' --triggers {shlex.quote(table)}" + "".join(
        f" --partition {shlex.quote(f'{table}.{c}:{every[c].buckets}')}" for c in sorted(every)
    )
    if found.channel is not None and found.channel != DEFAULT_CHANNEL:
        command += f" --channel {shlex.quote(found.channel)}"
    columns = ", ".join(sorted(needed))
    return (
        f"the change-capture triggers of table {table!r} {why}: another program's writes to it "
        f"would never reach the views partitioned by {columns}. Install them with every "
        f"partition: run `{command}`"
    )


# -- SQLite ----------------------------------------------------------------------------------

SQLITE_OPS = {"insert": ("NEW",), "update": ("OLD", "NEW"), "delete": ("OLD",)}
"""Each trigger's operation, and the rows it sees."""

SQLITE_REPLACED = {"replace": "INSERT", "rekey": "UPDATE"}
"""The ``BEFORE`` triggers of a partitioned table, and their operation: they bump the buckets
of the rows the write would replace. A ``REPLACE`` (``INSERT OR REPLACE``, ``UPDATE OR
REPLACE``, a constraint's ``ON CONFLICT REPLACE``) deletes the rows that conflict with the new
one without firing their ``DELETE`` trigger (unless ``PRAGMA recursive_triggers`` is on, which
the writer decides)."""

SQLITE_TRIGGERS = (*SQLITE_OPS, *SQLITE_REPLACED)
"""The suffixes of the names of every trigger of freshkeep on a SQLite table."""

MARK = "-- freshkeep partitions: "
"""Starts the line of a SQLite trigger's body that names the partitions its table was installed
with (``column:buckets:kind`` ..., or ``*``: none, every write bumps ``table:<name>/*``), so
that a keeper can check them at start."""

_UPSERT = "ON CONFLICT (source) DO UPDATE SET revision = revision + 1;"
# Every statement has its own ON CONFLICT clause: SQLite applies the conflict resolution of
# the outer statement (INSERT OR REPLACE, UPDATE OR ABORT ...) to the statements of a trigger
# that have none, so an INSERT OR IGNORE here would become a REPLACE (resetting the counter)
# or an ABORT (failing the application's write).

_SQLITE_TRIGGER = """
CREATE TRIGGER {name} {when} {op} ON {table} FOR EACH ROW{condition}
BEGIN
{body}
END
"""


def sqlite_name(table: str) -> str:
    name = table.removeprefix("table:")
    if not name or "." in name:
        raise ConfigurationError(f"not a SQLite table name: {table!r}")
    if name == "freshkeep_revisions":
        raise ConfigurationError("freshkeep_revisions itself cannot be triggered")
    return name


def _sqlite_tables(conn: Connection) -> set[str]:
    rows = conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'table'")
    return {str(r[0]) for r in rows}


def _sqlite_splits(conn: Connection, name: str, partitions: list[Partitioned]) -> list[Split]:
    quote = conn.dialect.identifier_preparer.quote_identifier
    rows = conn.exec_driver_sql(f"PRAGMA table_info({quote(name)})").fetchall()
    declared = {str(r[1]).lower(): str(r[2] or "").upper() for r in rows}
    splits = []
    for p in partitions:
        kind = declared.get(p.column.lower())  # SQLite's names ignore case
        if kind is None:
            raise missing_column(name, p.column, (str(r[1]) for r in rows))
        splits.append(Split(p.column, p.buckets, BOOLEAN if "BOOL" in kind else INTEGER))
    return splits


def _sqlite_known(split: Split, value: str) -> str:
    """Whether the trigger can compute the bucket of ``value`` (else it bumps ``/*``)."""
    if split.kind == BOOLEAN:  # stored as 0 / 1; Python reads them as False / True
        return f"({value} IS NULL OR (typeof({value}) = 'integer' AND {value} IN (0, 1)))"
    return f"typeof({value}) IN ('integer', 'null')"


def _sqlite_bucket(split: Split, value: str) -> str:
    b = split.buckets
    if split.kind == BOOLEAN:
        yes, no = bucket_of(True, b), bucket_of(False, b)
        return f"CASE WHEN {value} IS NULL THEN 0 WHEN {value} = 1 THEN {yes} ELSE {no} END"
    return f"CASE WHEN {value} IS NULL THEN 0 ELSE (({value} % {b}) + {b}) % {b} END"


def sqlite_body(conn: Connection, source: str, rows: tuple[str, ...], splits: list[Split]) -> str:
    """The statements of one row-level trigger that sees ``rows`` (``NEW``, ``OLD``)."""
    quote = conn.dialect.identifier_preparer.quote_identifier
    every = sql_literal(every_partition(source))
    insert = "INSERT INTO freshkeep_revisions (source, revision)"
    mark = f"    {MARK}{' '.join(s.argument for s in splits) or EVERY}\n"
    if not splits:  # nobody told the columns: every partition moves
        return f"{mark}    {insert} VALUES ({sql_literal(source)}, 1), ({every}, 1)\n    {_UPSERT}"
    out = [f"{mark}    {insert} VALUES ({sql_literal(source)}, 1)\n    {_UPSERT}"]
    known = []
    for split in splits:
        column = quote(split.column)
        values = " UNION ".join(
            f"SELECT {row}.{column}" + (" AS v" if i == 0 else "") for i, row in enumerate(rows)
        )
        prefix = sql_literal(f"{source}/{split.column}#")
        out.append(
            f"    {insert}\n"
            f"    SELECT DISTINCT {prefix} || ({_sqlite_bucket(split, 'v')}), 1\n"
            f"    FROM ({values}) WHERE {_sqlite_known(split, 'v')}\n"
            f"    {_UPSERT}"
        )
        known += [_sqlite_known(split, f"{row}.{column}") for row in rows]
    # SQLite has no MD5: a value that is not an integer moves every partition.
    out.append(
        f"    {insert}\n    SELECT {every}, 1 WHERE NOT ({' AND '.join(known)})\n    {_UPSERT}"
    )
    return "\n".join(out)


_ROWID = ("rowid", "_rowid_", "oid")
"""SQLite's names of a row's rowid; a column of the same name hides one."""


def _unique_keys(conn: Connection, name: str) -> list[list[tuple[str, str]]] | None:
    """The sets of columns (quoted, with their collations) on which a new row of ``name`` can
    conflict with a row already there: each unique index (the primary key's, ``UNIQUE``
    constraints') and the rowid. ``None`` when a unique index holds an expression: the
    triggers cannot tell which rows conflict with it."""
    quote = conn.dialect.identifier_preparer.quote_identifier
    columns = {str(r[1]).lower() for r in conn.exec_driver_sql(f"PRAGMA table_info({quote(name)})")}
    keys: list[list[tuple[str, str]]] = []
    rowid = True  # a WITHOUT ROWID table's primary key index holds no rowid
    for index in conn.exec_driver_sql(f"PRAGMA index_list({quote(name)})").fetchall():
        info = conn.exec_driver_sql(f"PRAGMA index_xinfo({quote(str(index[1]))})").fetchall()
        if str(index[3]) == "pk" and all(int(r[1]) != -1 for r in info):
            rowid = False
        if not int(index[2]):
            continue
        key = []
        for _, cid, column, _, collation, is_key in info:
            if not is_key:
                continue
            if int(cid) < 0:  # -2: an expression (-1, the rowid, is never a key column)
                return None
            key.append((quote(str(column)), str(collation or "BINARY")))
        keys.append(key)
    alias = next((a for a in _ROWID if a not in columns), None)
    if rowid and alias is not None:  # an INTEGER PRIMARY KEY is the rowid: it has no index
        keys.append([(alias, "BINARY")])
    return keys


def sqlite_replaced_body(
    conn: Connection, table: str, keys: list[list[tuple[str, str]]] | None, splits: list[Split]
) -> str:
    """The statements of a ``BEFORE`` trigger that bump the buckets of the rows of ``table``
    that conflict with ``NEW`` on a unique key (those a ``REPLACE`` deletes)."""
    quote = conn.dialect.identifier_preparer.quote_identifier
    source = f"table:{table}"
    every = sql_literal(every_partition(source))
    insert = "INSERT INTO freshkeep_revisions (source, revision)"
    if keys is None:  # conflicts on an expression cannot be found: every partition moves
        return f"    {insert} VALUES ({every}, 1)\n    {_UPSERT}"

    def equal(column: str, collation: str) -> str:
        collate = "" if collation.upper() == "BINARY" else f" COLLATE {quote(collation)}"
        return f"{column} = NEW.{column}{collate}"  # NULL never conflicts: = is never true

    conflict = " OR ".join(" AND ".join(equal(c, coll) for c, coll in key) for key in keys)
    rows = f"FROM {quote(table)} WHERE ({conflict})"
    out = []
    for split in splits:
        prefix = sql_literal(f"{source}/{split.column}#")
        values = f"SELECT {quote(split.column)} AS v {rows}"
        out.append(
            f"    {insert}\n"
            f"    SELECT DISTINCT {prefix} || ({_sqlite_bucket(split, 'v')}), 1\n"
            f"    FROM ({values}) WHERE {_sqlite_known(split, 'v')}\n"
            f"    {_UPSERT}"
        )
    known = " AND ".join(_sqlite_known(split, quote(split.column)) for split in splits)
    out.append(
        f"    {insert}\n    SELECT {every}, 1 WHERE EXISTS (SELECT 1 {rows} AND NOT ({known}))\n"
        f"    {_UPSERT}"
    )
    return "\n".join(out)


def _changed(keys: list[list[tuple[str, str]]] | None) -> str:
    """The ``WHEN`` of the ``BEFORE UPDATE`` trigger: an update that keeps every unique column
    conflicts with no other row."""
    if keys is None:
        return ""
    columns = dict.fromkeys(c for key in keys for c, _ in key)
    return "\nWHEN " + " OR ".join(f"NEW.{c} IS NOT OLD.{c}" for c in columns)


def sqlite_install(conn: Connection, tables: list[str], partitions: Iterable[object]) -> list[str]:
    names = [sqlite_name(t) for t in tables]
    present = _sqlite_tables(conn)
    if "freshkeep_revisions" not in present:
        raise ConfigurationError("no freshkeep_revisions table: run `freshkeep migrate` first")
    for name in names:
        if name not in present:
            raise ConfigurationError(f"no table {name!r} in the SQLite database")
    by_table = match_partitions(partitions, names)
    splits = {name: _sqlite_splits(conn, name, by_table.get(name, [])) for name in names}
    quote = conn.dialect.identifier_preparer.quote_identifier
    for name in sqlite_remove(conn, names):
        table = quote(name)
        for op, rows in SQLITE_OPS.items():
            conn.exec_driver_sql(
                _SQLITE_TRIGGER.format(
                    name=quote(f"{FUNCTION}_{name}_{op}"),
                    when="AFTER",
                    op=op.upper(),
                    table=table,
                    condition="",
                    body=sqlite_body(conn, f"table:{name}", rows, splits[name]),
                )
            )
        if not splits[name]:  # every write bumps every partition: nothing to find
            continue
        keys = _unique_keys(conn, name)
        body = sqlite_replaced_body(conn, name, keys, splits[name])
        for suffix, op in SQLITE_REPLACED.items():
            conn.exec_driver_sql(
                _SQLITE_TRIGGER.format(
                    name=quote(f"{FUNCTION}_{name}_{suffix}"),
                    when="BEFORE",
                    op=op,
                    table=table,
                    condition=_changed(keys) if op == "UPDATE" else "",
                    body=body,
                )
            )
    return names


def sqlite_remove(conn: Connection, tables: list[str]) -> list[str]:
    names = [sqlite_name(t) for t in tables]
    quote = conn.dialect.identifier_preparer.quote_identifier
    for name in names:
        for suffix in SQLITE_TRIGGERS:
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {quote(f'{FUNCTION}_{name}_{suffix}')}")
    return names


def _sqlite_trigger_sql(conn: Connection) -> dict[str, dict[str, str]]:
    """The SQL of freshkeep's triggers, by table and by name."""
    rows = conn.exec_driver_sql(
        "SELECT tbl_name, name, sql FROM sqlite_master WHERE type = 'trigger' "
        "AND name LIKE 'freshkeep_bump_%'"
    )
    found: dict[str, dict[str, str]] = {}
    for table, name, sql in rows:
        found.setdefault(str(table), {})[str(name)] = str(sql or "")
    return found


def sqlite_triggered(conn: Connection) -> list[str]:
    return sorted(
        table
        for table, names in _sqlite_trigger_sql(conn).items()
        if all(f"{FUNCTION}_{table}_{op}" in names for op in SQLITE_OPS)
    )


def sqlite_installed(conn: Connection) -> dict[str, list[Split] | None]:
    """The partition columns that the triggers of each triggered table compute (none: every
    write bumps ``table:<name>/*``), or ``None`` for triggers that do not name them (installed
    by an earlier freshkeep)."""
    found: dict[str, list[Split] | None] = {}
    for table, names in _sqlite_trigger_sql(conn).items():
        if not all(f"{FUNCTION}_{table}_{op}" in names for op in SQLITE_OPS):
            continue
        mark = re.search(
            rf"^\s*{re.escape(MARK)}(.*?)\s*$", names[f"{FUNCTION}_{table}_insert"], re.M
        )
        found[table] = None if mark is None else parse_arguments(mark.group(1).split())
    return found
