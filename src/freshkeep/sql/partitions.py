"""Which partitions a write touched: from a DML statement and its parameters, or from the ORM
objects a flush wrote.

The write hooks (:mod:`freshkeep.integrations.sqlalchemy`) bump the partitions found here;
when they cannot be found, the table's ``/*`` source, which moves every partition:

- an ``INSERT`` touches the partitions of its rows' values (a column left to a server default
  cannot be known);
- an ``UPDATE`` or ``DELETE`` touches the partitions its ``WHERE`` names with an equality or
  an ``IN`` on the partition column (a term of an ``AND``), and an ``UPDATE`` that sets the
  column to a value touches that value's partition too; any other ``WHERE`` cannot be known;
- an ``INSERT`` with an upsert clause, a ``REPLACE`` prefix or a ``SELECT`` cannot be known
  (rows that existed change too);
- a flushed ORM object touches the partitions of its old and new values; an updated object
  whose old value was never loaded, or whose column has an ``onupdate``, cannot be known.

Values are normalised by the column's type first (:func:`normalize`), so a writer and a reader
bucket them alike.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from freshkeep.core.partitions import Partitioned
from freshkeep.exceptions import missing_extra

try:
    from sqlalchemy import Column, Table
    from sqlalchemy.orm import InstanceState
    from sqlalchemy.orm.base import NEVER_SET, NO_VALUE
    from sqlalchemy.sql import operators
    from sqlalchemy.sql.elements import (
        BinaryExpression,
        BindParameter,
        BooleanClauseList,
    )
except ImportError as exc:  # pragma: no cover - exercised by the no-extras import test
    raise missing_extra("sqlalchemy", exc.name or "sqlalchemy") from exc

UNKNOWN = None
"""What a function here returns when the partitions cannot be known."""

Params = Sequence[Mapping[str, Any]]


def normalize(value: Any, col: Column[Any]) -> Any:
    """``value`` as the database keeps it in ``col``, so that a writer and a reader bucket it
    alike: an enum member by its name (SQLAlchemy's ``Enum`` stores names), an integer column's
    ``"7"`` as ``7``, a boolean column's ``1`` as ``True``."""
    if isinstance(value, enum.Enum):
        return value.name
    try:
        python_type = col.type.python_type
    except NotImplementedError:
        return value
    if python_type is int and isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return value
    if python_type is bool and isinstance(value, int) and value in (0, 1):
        return bool(value)
    return value


def column_of(table: Table, name: str) -> Column[Any] | None:
    """The column of ``table`` named ``name`` (its name in the database, or its key)."""
    for col in table.c:
        if col.name == name:
            return col
    found = table.c.get(name)
    return found if isinstance(found, Column) else None


def _is_column(expr: Any, col: Column[Any]) -> bool:
    """Whether ``expr`` is ``col`` (or an annotated / ORM form of it)."""
    if expr is col:
        return True
    table = getattr(expr, "table", None)
    return bool(
        isinstance(table, Table) and table is col.table and getattr(expr, "name", None) == col.name
    )


def _bind_values(
    bind: BindParameter[Any], names: Mapping[Any, str], params: Params
) -> list[Any] | None:
    """The values ``bind`` took over ``params`` (a list per row for an expanding ``IN``)."""
    name = names.get(bind)
    out: list[Any] = []
    for row in params or [{}]:
        if name is not None and name in row:
            value = row[name]
        elif name is not None and bind.expanding:
            prefix = re.compile(rf"^{re.escape(name)}_\d+$")
            value = [v for k, v in row.items() if prefix.match(k)]
            if not value and bind.value is not None:
                value = bind.value
        elif bind.callable is None and bind.value is not None:
            value = bind.value
        else:
            return UNKNOWN
        if bind.expanding:
            if not isinstance(value, list | tuple | set | frozenset):
                return UNKNOWN
            out.extend(value)
        else:
            out.append(value)
    return out


def _terms(where: Any) -> list[Any]:
    """The terms of ``where`` joined by ``AND`` (the whole clause if it is not an ``AND``)."""
    if isinstance(where, BooleanClauseList) and where.operator is operators.and_:
        return [t for c in where.clauses for t in _terms(c)]
    return [where]


def _where_values(
    where: Any, col: Column[Any], names: Mapping[Any, str], params: Params
) -> list[Any] | None:
    """The values of ``col`` the rows ``where`` selects may have, if an equality or an ``IN``
    on it bounds them."""
    if where is None:
        return UNKNOWN
    for term in _terms(where):
        if not isinstance(term, BinaryExpression):
            continue
        op = term.operator
        if op not in (operators.eq, operators.in_op):
            continue
        left, right = term.left, term.right
        if _is_column(right, col) and isinstance(left, BindParameter):
            left, right = right, left
        if not _is_column(left, col) or not isinstance(right, BindParameter):
            continue
        found = _bind_values(right, names, params)
        if found is not None:
            return found
    return UNKNOWN


def _set_values(
    stmt: Any, col: Column[Any], names: Mapping[Any, str], params: Params
) -> list[Any] | None:
    """The values an ``UPDATE`` sets ``col`` to (``[]`` when it does not set it)."""
    values = getattr(stmt, "_values", None) or {}
    ordered = getattr(stmt, "_ordered_values", None) or ()
    items = [*values.items(), *ordered]
    for key, value in items:
        name = key if isinstance(key, str) else getattr(key, "key", None)
        if name not in (col.key, col.name) and not _is_column(key, col):
            continue
        if isinstance(value, BindParameter):
            return _bind_values(value, names, params)
        return UNKNOWN  # an expression (col + 1, a subquery): cannot be known
    if getattr(stmt, "_multi_values", None):
        return UNKNOWN
    # update(t).where(...) executed with {"customer_id": 3}: the SET comes from the parameters.
    found = [row[k] for row in params for k in (col.key, col.name) if k in row]
    return found


def _insert_values(col: Column[Any], params: Params) -> list[Any] | None:
    key = re.compile(rf"^(?:{re.escape(col.key)}|{re.escape(col.name)})(?:_m\d+)?$")
    out: list[Any] = []
    for row in params:
        found = [v for k, v in row.items() if key.match(k)]
        if not found:
            return UNKNOWN  # left to a server default (or an autoincrement)
        out.extend(found)
    return out if params else UNKNOWN


def _replaces(stmt: Any) -> bool:
    """Whether an INSERT has a REPLACE / IGNORE-like prefix (``INSERT OR REPLACE``)."""
    for prefix, _dialect in getattr(stmt, "_prefixes", ()) or ():
        if "REPLACE" in str(prefix).upper():
            return True
    return False


def statement_values(
    stmt: Any, table: Table, column: str, names: Mapping[Any, str], params: Params
) -> list[Any] | None:
    """The values of ``column`` in the rows ``stmt`` (a compiled Core or ORM DML statement on
    ``table``) wrote, as the database keeps them (:func:`normalize`), or :data:`UNKNOWN`.
    ``names`` maps the statement's bind parameters to their names in ``params``
    (``compiled.bind_names``); ``params`` are its parameters per row
    (``context.compiled_parameters``)."""
    col = column_of(table, column)
    if col is None:
        return UNKNOWN
    found = _statement_values(stmt, col, names, params)
    return None if found is None else [normalize(v, col) for v in found]


def _statement_values(
    stmt: Any, col: Column[Any], names: Mapping[Any, str], params: Params
) -> list[Any] | None:
    if getattr(stmt, "is_insert", False):
        if getattr(stmt, "_post_values_clause", None) is not None or _replaces(stmt):
            return UNKNOWN  # an upsert or a REPLACE also rewrites rows that existed
        if getattr(stmt, "select", None) is not None:
            return UNKNOWN  # INSERT ... SELECT: the rows come from a query
        return _insert_values(col, params)
    where = getattr(stmt, "whereclause", None)
    old = _where_values(where, col, names, params)
    if old is None:
        return UNKNOWN
    if getattr(stmt, "is_update", False):
        new = _set_values(stmt, col, names, params)
        if new is None:
            return UNKNOWN
        return [*old, *new]
    return old if getattr(stmt, "is_delete", False) else UNKNOWN


def statement_sources(
    stmt: Any, table: Table, specs: Iterable[Partitioned], names: Mapping[Any, str], params: Params
) -> set[str] | None:
    """The partition sources ``stmt`` touched for each of ``specs``, or :data:`UNKNOWN` when
    one of them cannot be known."""
    out: set[str] = set()
    for spec in specs:
        values = statement_values(stmt, table, spec.column, names, params)
        if values is None:
            return UNKNOWN
        out.update(spec.bumps(values))
    return out


def state_values(
    state: InstanceState[Any], table: Table, column: str, *, updated: bool
) -> list[Any] | None:
    """The values of ``column`` an ORM object had and has (old and new of an update), or
    :data:`UNKNOWN` when one of them cannot be known: an updated object whose old value was
    never loaded (expired, deferred, ``load_only``), or a column an ``onupdate`` may change
    behind the object. ``updated``: the flush updated it (neither inserted nor deleted)."""
    col = column_of(table, column)
    if col is None:
        return UNKNOWN
    try:
        prop = state.mapper.get_property_by_column(col)
    except Exception:
        return UNKNOWN
    key = prop.key
    if updated and (col.onupdate is not None or col.server_onupdate is not None):
        return UNKNOWN
    if updated and state.committed_state.get(key, None) in (NO_VALUE, NEVER_SET):
        return UNKNOWN  # set without its old value ever loaded: the old partition is unknown
    hist = state.attrs[key].history
    values = [*hist.added, *hist.unchanged, *hist.deleted]
    if key in state.dict:
        values.append(state.dict[key])
    if key in state.committed_state:
        values.append(state.committed_state[key])
    values = [normalize(v, col) for v in values if v is not NO_VALUE and v is not NEVER_SET]
    return values or UNKNOWN


def primary_key_values(
    stmt: Any, table: Table, names: Mapping[Any, str], params: Params
) -> set[tuple[Any, ...]] | None:
    """The primary keys an UPDATE or DELETE names in its ``WHERE`` (as a flush does:
    ``WHERE id = ?``), or :data:`UNKNOWN`."""
    cols = list(table.primary_key.columns)
    if not cols:
        return UNKNOWN
    where = getattr(stmt, "whereclause", None)
    per_col = []
    for col in cols:
        found = _where_values(where, col, names, params)
        if found is None or len(found) != max(len(params), 1):
            return UNKNOWN  # one value per row (executemany), in the order of the rows
        per_col.append(found)
    return {tuple(vals) for vals in zip(*per_col, strict=True)}


__all__ = [
    "UNKNOWN",
    "column_of",
    "normalize",
    "primary_key_values",
    "state_values",
    "statement_sources",
    "statement_values",
]
