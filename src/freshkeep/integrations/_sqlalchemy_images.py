"""Row images read from the database for the change side of the write hooks.

A delta must equal a rebuild, and a rebuild reads the rows as the database stores them. So the
images of a :class:`~freshkeep.core.changes.Change` are read back from the database, not taken
from the ORM's state: the before image of a row a flush updates or deletes is selected (``FOR
UPDATE`` where the dialect has it) at the flush's first statement on its table, and the after
image of a row it inserts or updates is selected after the flush. The ORM's state may predate
another transaction's commit, miss a value the flush generated (``onupdate``,
``version_id_col``, a server default) or hold a value as given rather than as stored (a
``Numeric`` scale, a ``TypeDecorator``, a time zone).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, select, tuple_
from sqlalchemy.orm import Mapper

Key = tuple[Any, ...]
Image = dict[str, Any]

_CHUNK = 500  # keys per SELECT (under SQLite's bound-parameter limit)


def image_columns(mapper: Mapper[Any]) -> list[tuple[str, Any]] | None:
    """The ``(name, column)`` pairs of a change's image for ``mapper``'s rows, or ``None`` when
    its rows have no identity these images can be read by (not one table, no primary key, a
    primary key column that is not mapped)."""
    if len(mapper.tables) != 1 or not mapper.primary_key:
        return None
    cols = [(getattr(p.columns[0], "name", p.key), p.columns[0]) for p in mapper.column_attrs]
    mapped = {id(c) for _, c in cols}
    if any(id(c) not in mapped for c in mapper.primary_key):
        return None
    return cols


def read_images(
    conn: Connection, mapper: Mapper[Any], keys: Iterable[Key], *, lock: bool
) -> dict[Key, Image] | None:
    """The rows of ``mapper``'s table with primary keys ``keys``, by key, as the database
    stores them; ``lock``: select them ``FOR UPDATE``. ``None`` when they cannot be read
    (see :func:`image_columns`)."""
    cols = image_columns(mapper)
    if cols is None:
        return None
    unique: list[Any] = []
    index: dict[int, int] = {}
    for _, c in cols:
        if id(c) not in index:
            index[id(c)] = len(unique)
            unique.append(c)
    pk = list(mapper.primary_key)
    at = [index[id(c)] for c in pk]
    wanted = list(dict.fromkeys(keys))
    found: dict[Key, Image] = {}
    for i in range(0, len(wanted), _CHUNK):
        chunk = wanted[i : i + _CHUNK]
        where = pk[0].in_([k[0] for k in chunk]) if len(pk) == 1 else tuple_(*pk).in_(chunk)
        stmt = select(*unique).where(where)
        if lock:  # in primary key order, as the flush writes them: no lock-order deadlock
            stmt = stmt.order_by(*pk).with_for_update()
        for row in conn.execute(stmt):
            found[tuple(row[j] for j in at)] = {n: row[index[id(c)]] for n, c in cols}
    return found
