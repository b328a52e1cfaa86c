"""The partition side of the write hooks (:class:`PartitionHooks`, a base of
:class:`~freshkeep.integrations.sqlalchemy.Tracking`): which partitions a statement or a flush
touched, and when to move every partition of a table instead."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import TYPE_CHECKING, Any

from freshkeep.core.partitions import with_every
from freshkeep.exceptions import missing_extra

try:
    from sqlalchemy import Table, inspect
    from sqlalchemy.orm import Session
    from sqlalchemy.sql.expression import FromClause
    from sqlalchemy.sql.util import find_tables
except ImportError as exc:  # pragma: no cover - exercised by the no-extras import test
    raise missing_extra("sqlalchemy", "sqlalchemy") from exc

from freshkeep.sql.partitions import primary_key_values, state_values, statement_sources

if TYPE_CHECKING:
    from freshkeep.keeper import Keeper

_FLUSH_UNKNOWN = "freshkeep.flush-unknown"
_IN_FLUSH = "freshkeep.in-flush"
_INSERTED = "freshkeep.inserted"
_BUMPED = "freshkeep.bumped"


class PartitionHooks:
    """What the write hooks know of partitions (see the module docstring)."""

    keeper: Keeper

    def source_of(self, table: Any) -> str | None:  # pragma: no cover - Tracking's
        raise NotImplementedError

    def sources_of(self, target: Any) -> set[str]:  # pragma: no cover - Tracking's
        raise NotImplementedError

    def mark(self, session: Session, sources: Collection[str]) -> None:  # pragma: no cover
        """Add ``sources`` to what ``session``'s transaction changed (Tracking's)."""
        raise NotImplementedError

    def partitions_of(self, clause: Any, context: Any, flushing: Session | None = None) -> set[str]:
        """The partition sources a compiled DML statement touched: the buckets of its rows
        for the partitions the keeper knows, else the ``/*`` source of each table it wrote.
        During a flush (``flushing``), what a statement does not show (``WHERE id = ?``) is
        left to :meth:`_after_flush`, which reads the flushed objects."""
        target = getattr(clause, "table", None)
        if isinstance(target, Table):
            tables = [target]
        elif isinstance(target, FromClause):
            tables = [t for t in find_tables(target, include_aliases=True) if isinstance(t, Table)]
        else:
            return set()
        out: set[str] = set()
        for table in tables:
            src = self.source_of(table)
            if src is None:
                continue
            specs = self.keeper.partitions_of(src)
            found = None
            names = context.compiled.bind_names
            params = context.compiled_parameters or []
            if specs and target is table:
                found = statement_sources(clause, table, specs, names, params)
            if found is not None:
                out |= found
                continue
            deferred: tuple[str, Any] | None = None
            if flushing is not None and specs:
                if clause.is_insert:
                    # A flush's INSERT of rows whose partition the database chose (an
                    # autoincrement id): the flushed objects know it after the insert.
                    deferred = (src, max(len(params), 1))
                else:
                    pks = primary_key_values(clause, table, names, params)
                    # A flush's UPDATE/DELETE by primary key: the flushed object with that
                    # key knows its partitions (_after_flush).
                    deferred = None if pks is None else (src, pks)
            if deferred is not None and flushing is not None:
                flushing.info.setdefault(_FLUSH_UNKNOWN, []).append(deferred)
            else:
                out |= self.every_of(src)
        return out

    def every_of(self, src: str) -> set[str]:
        """The sources that move every partition of the table source ``src``
        (:meth:`Keeper.every_of <freshkeep.Keeper.every_of>`)."""
        return self.keeper.every_of(src)

    def with_every(self, sources: Iterable[str]) -> set[str]:
        """``sources`` and every partition of each whole table among them
        (:func:`freshkeep.core.partitions.with_every`, with the keeper's partitions)."""
        return with_every(sources, self.keeper.every_of)

    def sources_of_ctes(self, compiled: Any) -> set[str]:
        """The tables the data-modifying CTEs of a statement write (PostgreSQL's ``WITH u AS
        (UPDATE ... RETURNING ...) SELECT ...``), with every partition of each."""
        found: set[str] = set()
        for cte in compiled.ctes:
            element = getattr(cte, "element", None)
            if getattr(element, "is_dml", False):
                found |= self.sources_of(getattr(element, "table", None))
        return self.with_every(found)

    def _before_flush(self, session: Session, flush_context: Any, instances: Any) -> None:
        """A unit-of-work flush starts (not a bulk operation: those fire no flush event)."""
        info = session.info
        info[_IN_FLUSH] = True
        if self.keeper.partitions:
            info[_INSERTED] = {id(inspect(o)) for o in session.new}

    def _after_flush(self, session: Session, flush_context: Any) -> None:
        """The partitions of the objects a flush wrote (their old and new values): the
        statements of a flush update and delete by primary key, which names no partition.
        Statements seen after this (an ``after_flush`` listener's) are analysed alone."""
        info = session.info
        info.pop(_IN_FLUSH, None)
        inserted: set[int] = info.pop(_INSERTED, set())
        deferred: list[tuple[str, Any]] = info.pop(_FLUSH_UNKNOWN, [])
        keeper = self.keeper
        if not deferred and not keeper.partitions:
            return
        found: set[str] = set()
        flushed: dict[str, set[tuple[Any, ...]]] = {}
        inserts: dict[str, int] = {}
        for state, (isdelete, listonly) in getattr(flush_context, "states", {}).items():
            if listonly:
                continue
            updated = not isdelete and id(state) not in inserted
            for table in state.mapper.tables:
                src = self.source_of(table)
                specs = keeper.partitions_of(src) if src is not None else ()
                if not specs:
                    continue
                assert src is not None
                if state.key is not None:
                    flushed.setdefault(src, set()).add(tuple(state.key[1]))
                if id(state) in inserted:
                    inserts[src] = inserts.get(src, 0) + 1
                for spec in specs:
                    values = state_values(state, table, spec.column, updated=updated)
                    found |= self.every_of(src) if values is None else spec.bumps(values)
        rows: dict[str, int] = {}
        for src, what in deferred:  # a row no flushed object stands for: every partition
            if isinstance(what, int):  # inserted rows: no more than the objects inserted
                rows[src] = rows.get(src, 0) + what
                if rows[src] > inserts.get(src, 0):
                    found |= self.every_of(src)
            elif not what <= flushed.get(src, set()):
                found |= self.every_of(src)
        self.mark(session, found)
