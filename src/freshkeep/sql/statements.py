"""Which tables a raw SQL statement writes: the attribution of ``text()`` and driver SQL.

The write hooks see ORM flushes and Core DML as statement objects that name their table. Raw
SQL (``session.execute(text("UPDATE …"))``, ``exec_driver_sql``) is a string:
:func:`written_tables` reads it with sqlglot (a maintained SQL parser, in the ``sqlalchemy``
extra) and answers with

- ``()`` for a statement that writes no table's rows (``SELECT``, ``BEGIN``, ``SET``, DDL
  that creates things, ``PRAGMA`` …);
- the names of the tables an ``INSERT``, ``UPDATE``, ``DELETE``, ``REPLACE``, ``MERGE``,
  upsert, ``TRUNCATE``, ``DROP TABLE`` or ``COPY … FROM`` writes, CTEs included
  (``WITH d AS (DELETE …) INSERT …`` writes both tables); a name is ``schema.table`` when the
  statement qualifies it;
- :data:`UNKNOWN` for a statement that may write but whose target cannot be determined
  (``CALL``, ``DO``, ``EXECUTE``, or a write statement the parser cannot read): the hooks then
  bump every tracked table (rule 8: never nothing).

A ``SELECT`` that calls a function which writes is not seen: declare what such a function
writes with ``freshkeep.integrations.sqlalchemy.bump``. Results are cached per statement text.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from typing import Final

from freshkeep.exceptions import missing_extra

try:
    import sqlglot
    from sqlglot import exp
    from sqlglot.errors import SqlglotError
except ImportError as exc:  # pragma: no cover - exercised by the no-extras import test
    raise missing_extra("sqlalchemy", exc.name or "sqlglot") from exc

UNKNOWN: Final = None
"""A statement that may write, to tables that cannot be determined."""


class _Quiet(logging.Filter):
    """Drops sqlglot's log records while this thread parses for :func:`written_tables`: a
    statement it cannot read fully (e.g. ``CREATE TRIGGER … BEGIN …; END``) is answered here,
    and its warning would print the statement on every start of an application."""

    def __init__(self) -> None:
        super().__init__()
        self.local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(self.local, "on", False)


_QUIET = _Quiet()
logging.getLogger("sqlglot").addFilter(_QUIET)

_COMMENTS = re.compile(r"\s*(--[^\n]*(\n|$)|/\*.*?\*/)\s*", re.S)
_WORD = re.compile(r"[A-Za-z]+")
_READS = frozenset(
    "SELECT VALUES TABLE SHOW EXPLAIN PRAGMA BEGIN START COMMIT END ROLLBACK SAVEPOINT "
    "RELEASE SET RESET LISTEN UNLISTEN NOTIFY DECLARE FETCH MOVE CLOSE DEALLOCATE PREPARE "
    "ANALYZE ANALYSE VACUUM CREATE ALTER COMMENT GRANT REVOKE LOCK DISCARD CHECKPOINT ATTACH "
    "DETACH REINDEX CLUSTER REFRESH SECURITY LOAD".split()
)
_PARSED = frozenset("INSERT UPDATE DELETE MERGE TRUNCATE WITH DROP UPSERT".split())
_OPAQUE = frozenset("CALL DO EXECUTE EXEC".split())
_NAME = r'("(?:[^"]|"")+"|`[^`]+`|\[[^\]]+\]|[\w$]+)'
_REPLACE = re.compile(r"^\s*REPLACE\b", re.I)
_COPY_FROM = re.compile(
    rf"^\s*COPY\s+({_NAME}(?:\s*\.\s*{_NAME})?)\s*(?:\([^)]*\))?\s+FROM\b", re.I | re.S
)
_DIALECTS = {"postgresql": "postgres", "sqlite": "sqlite", "mysql": "mysql", "mssql": "tsql"}


def first_keyword(sql: str) -> str:
    """The statement's first keyword, upper-case, after comments and parentheses."""
    rest = sql
    while True:
        m = _COMMENTS.match(rest)
        if m is None or m.end() == 0:
            break
        rest = rest[m.end() :]
    m = _WORD.match(rest.lstrip(" \t\r\n("))
    return m.group(0).upper() if m else ""


def _unquote(name: str) -> str:
    name = name.strip()
    if len(name) > 1 and name[0] in '"`[' and name[-1] in '"`]':
        return name[1:-1].replace('""', '"')
    return name


def _table_name(table: exp.Table) -> str:
    """``schema.table`` or ``table``; an unquoted name is folded to lower case, as SQLite and
    PostgreSQL fold it (the hooks match names case-insensitively where the database does)."""
    parts = [p for p in (table.args.get("db"), table.args.get("this")) if p is not None]
    names = [
        p.name if isinstance(p, exp.Identifier) and p.quoted else p.name.lower() for p in parts
    ]
    return ".".join(n for n in names if n)


def _targets(tree: exp.Expression) -> tuple[str, ...] | None:
    found: list[str] = []
    writes = False
    for node in tree.walk():
        if isinstance(node, exp.Insert | exp.Update | exp.Delete | exp.Merge):
            if not isinstance(node, exp.Merge) and node.find_ancestor(exp.Merge) is not None:
                continue  # WHEN MATCHED THEN UPDATE …: the MERGE's own target is counted
            target = node.this
            writes = True
            table = target if isinstance(target, exp.Table) else None
            if table is None and target is not None:
                table = target.find(exp.Table)
            if table is None or not table.name:
                return UNKNOWN
            found.append(_table_name(table))
        elif isinstance(node, exp.TruncateTable):
            writes = True
            tables = [t for t in node.expressions if isinstance(t, exp.Table)]
            if not tables:
                return UNKNOWN
            found.extend(_table_name(t) for t in tables)
        elif isinstance(node, exp.Drop) and str(node.args.get("kind", "")).upper() == "TABLE":
            writes = True
            listed = [node.this, *node.expressions, *(node.args.get("tables") or [])]
            tables = [t for t in listed if isinstance(t, exp.Table)]
            if not tables:
                return UNKNOWN
            found.extend(_table_name(t) for t in tables)
        elif isinstance(node, exp.Command):
            return UNKNOWN if first_keyword(str(node.this)) not in _READS else ()
    if not writes:
        return ()
    return tuple(dict.fromkeys(found))


@functools.lru_cache(maxsize=512)
def written_tables(sql: str, dialect: str = "") -> tuple[str, ...] | None:
    """The tables ``sql`` writes (``()``: none), or :data:`UNKNOWN` (``None``).

    ``dialect`` is SQLAlchemy's dialect name (``postgresql``, ``sqlite`` …): it chooses the
    parser's grammar. Several statements separated by ``;`` are read together.
    """
    word = first_keyword(sql)
    several = ";" in sql.strip().rstrip(";")  # one read first must not hide a later write
    if word == "EXPLAIN" and re.search(r"\bANALY[SZ]E\b", sql[:200], re.I):
        return UNKNOWN  # EXPLAIN ANALYZE runs the statement it explains
    if (word in _READS or not word) and not several:
        return ()
    if word in _OPAQUE:
        return UNKNOWN
    if word == "COPY":
        m = _COPY_FROM.match(sql)
        if m is None:
            return ()  # COPY … TO reads
        return (".".join(_unquote(p) for p in re.split(r"\s*\.\s*", m.group(1))),)
    if word == "REPLACE":
        sql = _REPLACE.sub("INSERT OR REPLACE", sql, count=1)
    elif word not in _PARSED and not several:
        return ()
    _QUIET.local.on = True
    try:
        trees = sqlglot.parse(sql, read=_DIALECTS.get(dialect))
    except SqlglotError:
        return UNKNOWN
    finally:
        _QUIET.local.on = False
    out: list[str] = []
    for tree in trees:
        if not isinstance(tree, exp.Expression):
            continue
        targets = _targets(tree)
        if targets is UNKNOWN:
            return UNKNOWN
        out.extend(targets)
    return tuple(dict.fromkeys(out))


__all__ = ["UNKNOWN", "first_keyword", "written_tables"]
