"""The change side of the write hooks (:class:`ChangeHooks`, a base of
:class:`~freshkeep.integrations.sqlalchemy.Tracking`): the rows a transaction wrote, with their
before and after images, for the tables a delta section reads.

Only an ORM unit-of-work flush shows whole rows: each object it inserted, updated or deleted
becomes a :class:`~freshkeep.core.changes.Change` when its row's images can be read. Anything
else a transaction does to a followed table makes that
table's changes in the commit *unknown*: a bulk or Core DML statement, raw SQL, ``bump()``, a
statement of the flush that no flushed object stands for (an association table written
through a relationship), a row whose images cannot be read back (no primary key, not one
table, gone), or a flush inside a savepoint (which a rollback of the savepoint would undo).

The images are read from the database (:mod:`._sqlalchemy_images`), never taken from the ORM's
state: the before images of the rows a flush updates or deletes at its first statement on their
table (PostgreSQL: ``FOR UPDATE``, so they stay as read until the commit; SQLite: once the
transaction holds the write lock), the after images of the rows it inserts or updates after it.
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
    from sqlalchemy.exc import SQLAlchemyError
    from sqlalchemy.orm import Mapper, Session
    from sqlalchemy.orm.state import InstanceState
except ImportError as exc:  # pragma: no cover - exercised by the no-extras import test
    raise missing_extra("sqlalchemy", "sqlalchemy") from exc

from freshkeep.integrations._sqlalchemy_images import Image, Key, read_images
from freshkeep.integrations._sqlalchemy_partitions import _IN_FLUSH

if TYPE_CHECKING:
    from freshkeep.keeper import Keeper

_CHANGES = "freshkeep.changes"
_UNKNOWN = "freshkeep.unknown-changes"
_NEW = "freshkeep.new-states"
_FLUSH_TABLES = "freshkeep.flush-tables"
_SINCE = "freshkeep.changes-since"
_OLD_KEYS = "freshkeep.old-keys"
_BEFORE = "freshkeep.before-images"


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
        """A flush starts: remember which objects it inserts, and the identities of the rows of
        followed tables it may update or delete (their before images are read at its first
        statement on their table)."""
        log = self.keeper.changes
        if not log.followed:
            return
        info = session.info
        info[_NEW] = {id(s) for s in (_state(o) for o in session.new)}
        if session.in_nested_transaction():
            return
        olds: dict[str, tuple[Mapper[Any], dict[int, Key]]] = {}
        for obj in (*session.dirty, *session.deleted):
            state = _state(obj)
            tables = state.mapper.tables
            if state.key is None or len(tables) != 1:
                continue
            src = self.source_of(tables[0])
            if src is not None and log.wants(src):
                olds.setdefault(src, (state.mapper, {}))[1][id(state)] = state.key[1]
        info[_OLD_KEYS] = olds

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
        if session.info.get(_IN_FLUSH):
            written = bare_tables(sources)
            session.info.setdefault(_FLUSH_TABLES, set()).update(written)
            self._read_before(session, conn, written)
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
        olds: dict[str, tuple[Mapper[Any], dict[int, Key]]] = info.pop(_OLD_KEYS, {})
        befores: dict[str, dict[Key, Image] | None] = info.pop(_BEFORE, {})
        seen: set[str] = set()
        rows: dict[str, list[tuple[InstanceState[Any], Op]]] = {}
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
            if src in written:  # no statement on its table: the flush wrote none of its rows
                op: Op = "delete" if isdelete else "insert" if id(state) in new else "update"
                rows.setdefault(src, []).append((state, op))
        for src, written_rows in rows.items():
            if src in unknown:
                continue
            found = self._images(session, src, written_rows, olds.get(src), befores.get(src))
            if found is None:
                unknown.add(src)
            else:
                changes.extend(found)
        unknown |= {s for s in written - seen if log.wants(s)}

    def _read_before(self, session: Session, conn: Connection, written: set[str]) -> None:
        """The before images of the rows of ``written`` the flush may update or delete, read
        before its first statement on their table writes them (``None``: not known)."""
        olds: dict[str, tuple[Mapper[Any], dict[int, Key]]] = session.info.get(_OLD_KEYS, {})
        before = cast(dict[str, dict[Key, Image] | None], session.info.setdefault(_BEFORE, {}))
        sqlite = conn.dialect.name == "sqlite"
        for src in written:
            if src not in olds or src in before:
                continue
            if sqlite and src not in session.info.get(_SINCE, {}):
                before[src] = None  # the write lock is not known to be held: no exact read
                continue
            mapper, keys = olds[src]
            try:
                before[src] = read_images(conn, mapper, keys.values(), lock=not sqlite)
            except SQLAlchemyError:
                before[src] = None

    def _read_since(self, session: Session, conn: Connection, sources: Collection[str]) -> None:
        """SQLite: the revisions of the followed ``sources`` before this transaction first
        writes them. Triggers bump them again at each row the transaction writes; SQLite has
        one writer at a time, so once this transaction has written, every revision up to its
        commit's is its own. The first write is a bump of their counters (so it takes the
        write lock the way the statement would have: waiting for it, not failing on a read
        snapshot another commit outdated), and the revision before that bump is kept."""
        since = cast(dict[str, Revision], session.info.setdefault(_SINCE, {}))
        new = self._first_writes(since, sources)
        if not new or not self._revisions_ready(conn):
            return
        for s, rev in bump_counters(conn, new).items():
            since[s] = rev - 1 if isinstance(rev, int) else rev

    def _first_writes(self, since: Mapping[str, object], sources: Collection[str]) -> list[str]:
        """The followed tables of ``sources`` the transaction writes for the first time (not in
        ``since``), sorted."""
        log = self.keeper.changes
        return sorted(s for s in bare_tables(sources) if log.wants(s) and s not in since)

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
        new = self._first_writes(since, sources)
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

    @staticmethod
    def _images(
        session: Session,
        src: str,
        written: list[tuple[InstanceState[Any], Op]],
        olds: tuple[Mapper[Any], dict[int, Key]] | None,
        befores: dict[Key, Image] | None,
    ) -> list[Change] | None:
        """The changes of the rows of ``src`` a flush wrote, their after images read back now;
        ``None`` when one of them cannot be known."""
        mapper = written[0][0].mapper
        new_keys: dict[int, Key] = {}
        for state, op in written:
            if op != "delete":
                obj = state.obj()
                if obj is None:
                    return None
                key = tuple(mapper.primary_key_from_instance(obj))
                if any(k is None for k in key):
                    return None
                new_keys[id(state)] = key
        afters: dict[Key, Image] = {}
        if new_keys:
            try:
                conn = session.connection(bind_arguments={"mapper": mapper})
                read = read_images(conn, mapper, new_keys.values(), lock=False)
            except SQLAlchemyError:
                return None
            if read is None:
                return None
            afters = read
        out: list[Change] = []
        for state, op in written:
            before: Image | None = None
            if op != "insert":
                old_key = olds[1].get(id(state)) if olds is not None else None
                if old_key is None or befores is None:
                    return None
                before = befores.get(old_key)
            after = afters.get(new_keys[id(state)]) if op != "delete" else None
            change = _change(src, op, before, after)
            if change is None:
                return None  # a row gone, or not read
            if op != "update" or change.before != change.after:
                out.append(change)
        return out

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
        for name in (_CHANGES, _UNKNOWN, _NEW, _FLUSH_TABLES, _SINCE, _OLD_KEYS, _BEFORE):
            session.info.pop(name, None)


def _state(obj: Any) -> InstanceState[Any]:
    from sqlalchemy import inspect

    return cast(InstanceState[Any], inspect(obj))


def _change(
    source: str, op: Op, before: dict[str, Any] | None, after: dict[str, Any] | None
) -> Change | None:
    """The change of a row with these images, or ``None`` when one it needs is unknown."""
    if (op != "insert" and before is None) or (op != "delete" and after is None):
        return None
    return Change(source, op, before if op != "insert" else None, after if op != "delete" else None)
