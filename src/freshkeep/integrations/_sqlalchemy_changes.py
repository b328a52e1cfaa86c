"""The change side of the write hooks (:class:`ChangeHooks`, a base of
:class:`~freshkeep.integrations.sqlalchemy.Tracking`): the rows a transaction wrote, with their
before and after images, for the tables a delta section reads.

Only an ORM unit-of-work flush shows whole rows: each object it inserted, updated or deleted
becomes a :class:`~freshkeep.core.changes.Change` when every mapped column's old and new
values are known (loaded). Anything else a transaction does to a followed table makes that
table's changes in the commit *unknown*: a bulk or Core DML statement, raw SQL, ``bump()``, a
statement of the flush that no flushed object stands for (an association table written
through a relationship), an object whose images are incomplete (an unloaded column, a server
default), or a flush inside a savepoint (which a rollback of the savepoint would undo).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from freshkeep.core.change_wire import CommitChanges
from freshkeep.core.changes import Change, ChangeLog, Op
from freshkeep.core.partitions import split_source
from freshkeep.core.revision import Revision
from freshkeep.exceptions import missing_extra
from freshkeep.sql.revisions import bump_counters
from freshkeep.sql.schema import revisions_table

try:
    from sqlalchemy import Connection, select, text
    from sqlalchemy.orm import Session
    from sqlalchemy.orm.state import InstanceState
except ImportError as exc:  # pragma: no cover - exercised by the no-extras import test
    raise missing_extra("sqlalchemy", "sqlalchemy") from exc

if TYPE_CHECKING:
    from freshkeep.keeper import Keeper

_CHANGES = "freshkeep.changes"
_UNKNOWN = "freshkeep.unknown-changes"
_NEW = "freshkeep.new-states"
_FLUSH_TABLES = "freshkeep.flush-tables"
_SINCE = "freshkeep.changes-since"

_MISSING: Any = object()


def bare_tables(sources: Iterable[str]) -> set[str]:
    """The table sources of ``sources`` (a partition's table)."""
    return {f"table:{split_source(s)[0].removeprefix('table:')}" for s in sources}


def note_unknown(session: Session, keeper: Keeper, sources: Collection[str]) -> None:
    """The changes of ``sources`` in ``session``'s transaction are not all known."""
    followed = keeper.changes.followed
    if not followed or not sources:
        return
    found = {s for s in bare_tables(sources) if s in followed}
    if found:
        cast(set[str], session.info.setdefault(_UNKNOWN, set())).update(found)


def commit_changes(
    log: ChangeLog,
    revisions: Mapping[str, Revision],
    changes: Sequence[Change],
    unknown: Collection[str],
    since: Mapping[str, Revision],
) -> CommitChanges | None:
    """What a commit's message tells the other processes of its changed rows: the followed
    sources it moved whose changes are all known, those changes and the revisions its
    triggers bumped (``None``: none known)."""
    known = frozenset(s for s in revisions if log.wants(s) and s not in unknown)
    if not known:
        return None
    own = {s: r for s, r in since.items() if s in known and isinstance(r, int)}
    return CommitChanges(known, tuple(c for c in changes if c.table in known), own)


class ChangeHooks:
    """What the write hooks know of changed rows (see the module docstring)."""

    keeper: Keeper

    def source_of(self, table: Any) -> str | None:  # pragma: no cover - Tracking's
        raise NotImplementedError

    def changes_begin_flush(self, session: Session) -> None:
        """A flush starts: remember which objects it inserts."""
        if self.keeper.changes.followed:
            session.info[_NEW] = {id(s) for s in (_state(o) for o in session.new)}

    def changes_statement(
        self, session: Session, conn: Connection, sources: Collection[str]
    ) -> None:
        """A DML statement on ``sources``: a flush's is accounted for by its objects (checked
        at :meth:`changes_end_flush`); any other's changes are unknown."""
        log = self.keeper.changes
        if not log.followed:
            return
        if conn.dialect.name == "sqlite":
            self._read_since(session, conn, sources)
        if session.info.get("freshkeep.in-flush"):
            session.info.setdefault(_FLUSH_TABLES, set()).update(bare_tables(sources))
        else:
            note_unknown(session, self.keeper, sources)

    def changes_end_flush(self, session: Session, flush_context: Any) -> None:
        """The images of the objects the flush wrote, for the followed tables."""
        info = session.info
        new: set[int] = info.pop(_NEW, set())
        written: set[str] = info.pop(_FLUSH_TABLES, set())
        log = self.keeper.changes
        if not log.followed:
            return
        nested = session.in_nested_transaction()
        changes = cast(list[Change], info.setdefault(_CHANGES, []))
        unknown = cast(set[str], info.setdefault(_UNKNOWN, set()))
        seen: set[str] = set()
        for state, (isdelete, listonly) in getattr(flush_context, "states", {}).items():
            if listonly:
                continue
            tables = state.mapper.tables
            sources = {s for s in (self.source_of(t) for t in tables) if s is not None}
            seen |= sources
            followed = {s for s in sources if log.wants(s)}
            if not followed:
                continue
            if nested or len(tables) != 1:
                unknown |= followed
                continue
            (src,) = followed
            op: Op = "delete" if isdelete else "insert" if id(state) in new else "update"
            change = _change(src, op, state)
            if change is None:
                unknown.add(src)
            elif op != "update" or change.before != change.after:
                changes.append(change)
        unknown |= {s for s in written - seen if log.wants(s)}

    def _read_since(self, session: Session, conn: Connection, sources: Collection[str]) -> None:
        """SQLite: the revisions of the followed ``sources`` before this transaction first
        writes them. Triggers bump them again at each row the transaction writes; SQLite has
        one writer at a time, so once this transaction has written, every revision up to its
        commit's is its own. The first write is a bump of their counters (so it takes the
        write lock the way the statement would have: waiting for it, not failing on a read
        snapshot another commit outdated), and the revision before that bump is kept."""
        since = cast(dict[str, Revision], session.info.setdefault(_SINCE, {}))
        log = self.keeper.changes
        new = sorted(s for s in bare_tables(sources) if log.wants(s) and s not in since)
        if not new or not self._revisions_ready(conn):
            return
        for s, rev in bump_counters(conn, new).items():
            since[s] = rev - 1 if isinstance(rev, int) else rev

    def changes_written(self, session: Session, conn: Connection, sources: Collection[str]) -> None:
        """PostgreSQL, after a statement of the transaction wrote ``sources``: the revisions
        its change-capture triggers bumped in it. A trigger bumps (and locks until the commit)
        the counter row of its table at each statement: from the first such bump on, every
        revision of the table up to the commit's is this transaction's. The first statement
        that writes a followed table reads the counter, and keeps it only when this
        transaction wrote the row (no trigger: the commit's bump is its one revision). The
        bumps of a statement the driver ran several times are not all claimed, only the last:
        the others are a gap (a rebuild), never a claim on another transaction's revision."""
        log = self.keeper.changes
        if not log.followed or conn.dialect.name != "postgresql":
            return
        since = cast(dict[str, Revision | None], session.info.setdefault(_SINCE, {}))
        new = sorted(s for s in bare_tables(sources) if log.wants(s) and s not in since)
        if not new or session.in_nested_transaction() or not self._revisions_ready(conn):
            return
        for s in new:
            since[s] = None  # looked at once per transaction
        t = revisions_table
        rows = conn.execute(
            select(t.c.source, t.c.revision).where(
                t.c.source.in_(new), text("xmin::text = (txid_current() % 4294967296)::text")
            )
        )
        for source, rev in rows:
            since[source] = rev - 1 if isinstance(rev, int) else None

    def _revisions_ready(self, conn: Connection) -> bool:  # pragma: no cover - Tracking's
        raise NotImplementedError

    def changes_of(self, session: Session) -> tuple[list[Change], set[str], dict[str, Revision]]:
        """The known changes, the unknown sources of ``session``'s transaction, and the
        revisions its followed sources had before it wrote them (when known; taken)."""
        info = session.info
        since = {s: r for s, r in info.pop(_SINCE, {}).items() if r is not None}
        return info.pop(_CHANGES, []), info.pop(_UNKNOWN, set()), since

    @staticmethod
    def forget_changes(session: Session) -> None:
        for name in (_CHANGES, _UNKNOWN, _NEW, _FLUSH_TABLES, _SINCE):
            session.info.pop(name, None)


def _state(obj: Any) -> InstanceState[Any]:
    from sqlalchemy import inspect

    return cast(InstanceState[Any], inspect(obj))


def _null_when_unset(column: Any) -> bool:
    """Whether a column an INSERT did not set is ``NULL`` (no default of the database's)."""
    return (
        getattr(column, "server_default", None) is None
        and not getattr(column, "primary_key", True)
        and getattr(column, "computed", None) is None
        and getattr(column, "identity", None) is None
        and getattr(column, "nullable", False)
    )


def _change(source: str, op: Op, state: InstanceState[Any]) -> Change | None:
    """The change ``state`` stands for, or ``None`` when an image is incomplete."""
    before: dict[str, Any] | None = None if op == "insert" else {}
    after: dict[str, Any] | None = None if op == "delete" else {}
    attrs = state.attrs
    for prop in state.mapper.column_attrs:
        column = prop.columns[0]
        name = getattr(column, "name", prop.key)
        history = attrs[prop.key].history
        if op == "insert":
            value = state.dict.get(prop.key, _MISSING)
            if value is _MISSING:
                if not _null_when_unset(column):
                    return None
                value = None  # the INSERT left it to the column's default: NULL
            assert after is not None
            after[name] = value
            continue
        if history.deleted:
            old = history.deleted[0]
        elif history.unchanged:
            old = history.unchanged[0]
        else:
            return None  # not loaded, or set without its old value
        assert before is not None
        before[name] = old
        if after is not None:
            after[name] = history.added[0] if history.added else old
    return Change(source, op, before, after)
