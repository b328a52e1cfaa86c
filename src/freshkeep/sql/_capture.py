"""What the change-capture triggers of both databases share, and SQLite's triggers.

The public functions are in :mod:`freshkeep.sql.triggers`, which documents them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from freshkeep.core.partitions import Partitioned, bucket_of, every_partition
from freshkeep.exceptions import ConfigurationError

try:
    from sqlalchemy import Connection
except ImportError as exc:  # pragma: no cover - exercised without the extra
    from freshkeep.exceptions import missing_extra

    raise missing_extra("sqlalchemy", exc.name or "sqlalchemy") from exc

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


# -- SQLite ----------------------------------------------------------------------------------

SQLITE_OPS = {"insert": ("NEW",), "update": ("OLD", "NEW"), "delete": ("OLD",)}
"""Each trigger's operation, and the rows it sees."""

_UPSERT = "ON CONFLICT (source) DO UPDATE SET revision = revision + 1;"
# Every statement has its own ON CONFLICT clause: SQLite applies the conflict resolution of
# the outer statement (INSERT OR REPLACE, UPDATE OR ABORT ...) to the statements of a trigger
# that have none, so an INSERT OR IGNORE here would become a REPLACE (resetting the counter)
# or an ABORT (failing the application's write).

_SQLITE_TRIGGER = """
CREATE TRIGGER {name} AFTER {op} ON {table} FOR EACH ROW
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
    if not splits:  # nobody told the columns: every partition moves
        return f"    {insert} VALUES ({sql_literal(source)}, 1), ({every}, 1)\n    {_UPSERT}"
    out = [f"    {insert} VALUES ({sql_literal(source)}, 1)\n    {_UPSERT}"]
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
    for name in names:
        for op, rows in SQLITE_OPS.items():
            trigger = quote(f"{FUNCTION}_{name}_{op}")
            body = sqlite_body(conn, f"table:{name}", rows, splits[name])
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {trigger}")
            conn.exec_driver_sql(
                _SQLITE_TRIGGER.format(name=trigger, op=op.upper(), table=quote(name), body=body)
            )
    return names


def sqlite_remove(conn: Connection, tables: list[str]) -> list[str]:
    names = [sqlite_name(t) for t in tables]
    quote = conn.dialect.identifier_preparer.quote_identifier
    for name in names:
        for op in SQLITE_OPS:
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {quote(f'{FUNCTION}_{name}_{op}')}")
    return names


def sqlite_triggered(conn: Connection) -> list[str]:
    rows = conn.exec_driver_sql(
        "SELECT tbl_name, count(*) FROM sqlite_master WHERE type = 'trigger' "
        "AND name LIKE 'freshkeep_bump_%' GROUP BY tbl_name ORDER BY 1"
    )
    return [str(name) for name, n in rows if n == len(SQLITE_OPS)]
