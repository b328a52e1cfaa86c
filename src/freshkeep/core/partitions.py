"""Partitioned sources: one revision per partition of a table, so a write invalidates only the
keys it touches.

A :class:`Partitioned` source is a table split by one column (``table:orders`` by
``customer_id``). A write bumps the partitions of the rows it touched; a keyed view depends
on the partition of its key only. Three kinds of source name take part:

``table:<t>``
    the whole table: every write to it moves this counter (views of the whole table read it,
    as they always did);
``table:<t>/*``
    every partition at once: moved by a write whose partitions cannot be known (raw SQL, a
    bulk statement without an equality or ``IN`` on the column, a trigger that was not told
    the column, a writer that knows no partition of the table). Every partition's sources
    include it;
``table:<t>/<column>#<bucket>``
    one bucket of the column's values.

**Buckets keep storage bounded.** A value maps to one of ``buckets`` counters (1024 by
default): an integer ``v`` to ``v mod buckets`` (so consecutive ids below ``buckets`` never
share a counter), any other value to the first 32 bits of the MD5 of its text form (an enum
member's: its name), mod ``buckets``; ``None`` to bucket 0. Values that share a bucket share
invalidations: a write for one of them rebuilds the others' entries too (never the reverse:
nothing is missed). With ``K`` keys spread evenly, a write invalidates about
``1 + (K - 1) / buckets`` entries instead of ``K``. The same mapping is computed by the
database triggers (PostgreSQL and SQLite), so every writer bumps the same counters.
"""

from __future__ import annotations

import enum
import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from freshkeep.exceptions import ConfigurationError

DEFAULT_BUCKETS = 1024
"""The number of counters per partitioned column, unless told otherwise."""

MAX_BUCKETS = 1 << 20
"""More buckets than this would make every resync read that many counters."""

EVERY = "*"
"""The suffix of the source that moves every partition of a table: ``table:<t>/*``."""

_COLUMN = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")


def bucket_of(value: object, buckets: int) -> int:
    """The bucket of ``value`` among ``buckets``: the same in Python, PostgreSQL and SQLite.

    An :class:`enum.Enum` member stands for its ``name`` (what SQLAlchemy's ``Enum`` type
    stores, and the text a trigger reads; an ``IntEnum`` too: pass ``.value`` for a member
    stored as its value). Then an ``int`` (not a ``bool``) maps to ``value mod buckets``;
    ``None`` to 0; anything else to the first 32 bits of the MD5 of ``str(value)`` (its text
    form: strings and UUIDs read the same in the database), mod ``buckets``.
    """
    if isinstance(value, enum.Enum):
        value = value.name
    if value is None:
        return 0
    if isinstance(value, int) and not isinstance(value, bool):
        return value % buckets
    if isinstance(value, bytes):
        raise ConfigurationError("a partition column cannot hold bytes")
    digest = hashlib.md5(str(value).encode(), usedforsecurity=False).hexdigest()
    return int(digest[:8], 16) % buckets


def every_partition(table_source: str) -> str:
    """The source that moves every partition of ``table_source`` (``table:<t>/*``)."""
    return f"{table_source}/{EVERY}"


def with_every(
    sources: Iterable[str], every_of: Callable[[str], Iterable[str]] | None = None
) -> set[str]:
    """``sources`` and, for each whole table among them (``table:<t>``), the sources that move
    every partition of it: a write whose partitions are not known moves them all.
    ``every_of(table)`` gives those sources (default: its own ``table:<t>/*``); a keeper adds
    those of the partitions it knows the table by (:meth:`Keeper.every_of
    <freshkeep.Keeper.every_of>`)."""
    out = set(sources)
    for s in list(out):
        if s.startswith("table:") and split_source(s)[1] is None:
            out.update(every_of(s) if every_of is not None else (every_partition(s),))
    return out


def split_source(source: str) -> tuple[str, str | None]:
    """``(table source, partition part)`` of a source name: ``("table:t", "col#3")`` for
    ``table:t/col#3``, ``("table:t", "*")`` for ``table:t/*``, ``(source, None)`` otherwise."""
    if not source.startswith("table:"):
        return source, None
    base, sep, part = source.rpartition("/")
    if not sep or not base or base == "table:":
        return source, None
    if part == EVERY:
        return base, part
    column, hash_, bucket = part.partition("#")
    if hash_ and _COLUMN.match(column) and bucket.isdigit():
        return base, part
    return source, None


@dataclass(frozen=True, slots=True)
class Partitioned:
    """A table's source split by ``column`` into ``buckets`` counters.

    Made by :func:`freshkeep.sql.table_source` (``table_source(Order, by="customer_id")``) or
    directly (``Partitioned("table:orders", "customer_id")``). Put it among a section's
    sources to make the section depend on the partition of the view's key; call :meth:`of`
    for the sources of given values (in a ``sources=`` callable, or
    :meth:`BuildContext.depend <freshkeep.views.BuildContext.depend>`).
    """

    table: str
    """The table's source, ``table:<name>``."""
    column: str
    buckets: int = DEFAULT_BUCKETS

    def __post_init__(self) -> None:
        if not isinstance(self.table, str) or not self.table.startswith("table:"):
            raise ConfigurationError(f"a partitioned source is a table:<name>, not {self.table!r}")
        if "/" in self.table or self.table == "table:":
            raise ConfigurationError(f"not a table source: {self.table!r}")
        if not isinstance(self.column, str) or not _COLUMN.match(self.column):
            raise ConfigurationError(f"not a column name: {self.column!r}")
        if (
            not isinstance(self.buckets, int)
            or isinstance(self.buckets, bool)
            or not 1 <= self.buckets <= MAX_BUCKETS
        ):
            raise ConfigurationError(
                f"buckets must be an int from 1 to {MAX_BUCKETS}, not {self.buckets!r}"
            )

    @property
    def every(self) -> str:
        """The source that moves every partition: ``table:<t>/*``."""
        return every_partition(self.table)

    def bucket(self, value: object) -> int:
        """The bucket of ``value`` (see :func:`bucket_of`)."""
        return bucket_of(value, self.buckets)

    def source(self, value: object) -> str:
        """The source of the partition of ``value``: ``table:<t>/<column>#<bucket>``."""
        return f"{self.table}/{self.column}#{bucket_of(value, self.buckets)}"

    def of(self, *values: object) -> tuple[str, ...]:
        """The sources a value depends on for the partitions of ``values``: theirs and
        :attr:`every`, sorted."""
        return tuple(sorted({self.every, *(self.source(v) for v in values)}))

    def bumps(self, values: Iterable[object]) -> set[str]:
        """What a write of rows with these column ``values`` bumps (with the table's own
        source, which the write hooks add): the partitions of the values."""
        return {self.source(v) for v in values}

    def __str__(self) -> str:
        return f"{self.table}/{self.column}"


__all__ = [
    "DEFAULT_BUCKETS",
    "EVERY",
    "MAX_BUCKETS",
    "Partitioned",
    "bucket_of",
    "every_partition",
    "split_source",
    "with_every",
]
