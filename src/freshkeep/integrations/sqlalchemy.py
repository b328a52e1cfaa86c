"""SQLAlchemy 2 write hooks: revision counters bumped in the writing transaction.

:func:`track` installs the write hooks on a session factory (sync or async): every table an
INSERT, UPDATE or DELETE statement on the session's connection wrote (a flush, an ORM bulk or
legacy bulk operation, a Core DML statement, also through ``session.connection()``) is bumped
**at** ``before_commit``, **in** the writing transaction; the new revisions are applied to the
keeper **after** commit (read-your-writes) and published to its bus through
:meth:`Keeper.publish <freshkeep.Keeper.publish>`; a rollback changes and publishes nothing.
Raw SQL (``text()``, ``exec_driver_sql``) is attributed to the tables it writes
(:func:`freshkeep.sql.statements.written_tables`); :func:`bump` marks what nothing can
attribute (a ``SELECT`` of a function that writes, a cascade into another table).

The SQL substrate the hooks write to (the revision table, :class:`SQLAlchemyRevisions`,
engines) is :mod:`freshkeep.sql`; its names used with the hooks are re-exported here.

Source names: ``table:<table name>`` (see :func:`table_source`).
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

from freshkeep.core.change_wire import CommitChanges
from freshkeep.core.partitions import split_source, with_every
from freshkeep.core.revision import Revision
from freshkeep.exceptions import ConfigurationError, missing_extra

try:
    from sqlalchemy import Connection, Engine, Table, inspect
    from sqlalchemy import event as sa_event
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
    from sqlalchemy.orm import Session, SessionTransaction, sessionmaker
    from sqlalchemy.sql.elements import TextClause
    from sqlalchemy.sql.expression import FromClause
    from sqlalchemy.sql.util import find_tables
    from sqlalchemy.util.concurrency import await_only, in_greenlet
except ImportError as exc:  # pragma: no cover - exercised by the no-extras import test
    raise missing_extra("sqlalchemy", "sqlalchemy") from exc

from freshkeep.integrations._sqlalchemy_changes import ChangeHooks, commit_changes, note_unknown
from freshkeep.integrations._sqlalchemy_partitions import (
    _BUMPED,
    _FLUSH_UNKNOWN,
    _IN_FLUSH,
    _INSERTED,
    PartitionHooks,
)
from freshkeep.keeper import Keeper
from freshkeep.sql.engine import SQLITE_BEGIN, sqlite_transactions, writer_engine
from freshkeep.sql.revisions import SQLAlchemyRevisions, Watermark, bump_counters, table_source
from freshkeep.sql.schema import REVISION_TABLE, metadata, revisions_table
from freshkeep.sql.statements import UNKNOWN, written_tables

log = logging.getLogger("freshkeep.sqlalchemy")


# -- write hooks ---------------------------------------------------------------------------

_PENDING = "freshkeep.pending"
_REVS = "freshkeep.revisions"
_COMMITTING = "freshkeep.committing"
_CONNS = "freshkeep.connections"
_COMMITTED = "freshkeep.committed"


def _bump_now(session: Session) -> None:
    """Bump the pending sources of ``session`` in its transaction; keep their revisions for
    :meth:`Tracking._after_commit`."""
    pending = Tracking.pending(session)
    if not pending:
        return
    sources = sorted(pending)
    pending.clear()  # a failure aborts the transaction: nothing is left to bump
    try:
        revs = bump_counters(session.connection(), sources)
    except Exception as exc:
        exc.add_note(
            f"freshkeep could not bump revisions of {sources}: does the "
            f"{REVISION_TABLE!r} table exist? (SQLAlchemyRevisions.create_table() creates it)"
        )
        raise
    session.info.setdefault(_REVS, {}).update(revs)


def _mark(session: Session, sources: Collection[str]) -> None:
    """Add ``sources`` to what ``session``'s transaction changed.

    Normally they are bumped at ``before_commit``. A change made after that (by a
    ``before_commit`` listener that runs after freshkeep's, or by a flush the commit itself
    runs) is bumped at once: the transaction is committing, and a change left pending then
    would be forgotten with it.
    """
    if not sources:
        return
    Tracking.pending(session).update(sources)
    if session.info.get(_COMMITTING):
        _bump_now(session)


@dataclass(eq=False)
class Tracking(PartitionHooks, ChangeHooks):
    """The hooks :func:`track` installed; :meth:`remove` uninstalls them.

    Writes are seen as statements: when a tracked session begins a transaction on a
    connection, statements executed on that connection until the transaction ends are
    watched (one listener per engine). A DML statement marks its table; an ORM UPDATE that
    changes nothing emits no statement and marks nothing.

    Raw SQL (``text()``, ``exec_driver_sql``) is attributed to the tables it writes
    (:func:`freshkeep.sql.statements.written_tables`); a statement that may write tables that
    cannot be determined (``CALL``, ``DO``, a write the parser cannot read) marks every tracked
    table, is counted in ``unattributed`` and logged once.

    Statements on a connection no tracked session owns (``engine.begin()``, Core DML, raw
    SQL) on an engine the hooks know (the session factory's bind, an engine a tracked session
    used, or an engine given to :func:`track`) bump their tables **in their own transaction,
    right after the statement**, as a trigger would; those revisions are not published: this
    process and the others see them at the next resync (``resync_interval``).

    ``publish_errors`` counts commits whose revisions could not be published to the bus (the
    commit stands, the keeper of this process has them; other processes learn them at their
    next resync).
    """

    keeper: Keeper
    target: Any
    tables: frozenset[str] | None
    publish_errors: int = 0
    unattributed: int = 0
    """Statements that may write but whose tables could not be determined (every tracked
    table was bumped for each)."""
    bump_errors: int = 0
    """Autocommitted writes outside sessions whose bump failed (logged; the write stands)."""
    _listeners: list[tuple[str, Any]] = field(default_factory=list)
    _engines: list[Engine] = field(default_factory=list)
    _writers: weakref.WeakKeyDictionary[Connection, weakref.ref[Session]] = field(
        default_factory=weakref.WeakKeyDictionary
    )
    _logged: set[str] = field(default_factory=set)
    _ready: dict[int, tuple[bool, float]] = field(default_factory=dict)

    def source_of(self, table: Any) -> str | None:
        """The source of ``table`` if it is tracked."""
        if not isinstance(table, Table):
            return None
        return self.source_of_name(table.fullname)

    def source_of_name(self, name: str) -> str | None:
        """The source of the table named ``name`` (``table`` or ``schema.table``) if it is
        tracked. freshkeep's own tables (``freshkeep_*``) never are."""
        bare = name.rsplit(".", 1)[-1]
        if bare.lower().startswith("freshkeep_"):
            return None
        if self.tables is None:
            exact = f"table:{name}"
            if exact in self.keeper.tracker.sources or exact in self.keeper.source_catalog:
                return exact  # the usual case, without building the set of every source
            known = {s.removeprefix("table:") for s in self.every_source()}
            for candidate in (name, bare):
                found = _match(candidate, known)
                if found is not None:
                    return f"table:{found}"
            return f"table:{name if '.' not in name else bare}"
        for candidate in (name, bare):  # main.tasks, public.tasks: as the ORM names it
            found = _match(candidate, self.tables)
            if found is not None:
                return f"table:{found}"
        return None

    def every_source(self) -> set[str]:
        """Every tracked table's source: the tracked tables, or, when every table is tracked,
        every ``table:`` source the keeper's views read and every table of the database the
        keeper listed at start (so that a process with no view still moves the others')."""
        if self.tables is not None:
            return {f"table:{t}" for t in self.tables}
        listed = self.keeper.source_catalog
        return {
            s
            for s in (*self.keeper.tracker.sources, *listed)
            if s.startswith("table:") and split_source(s)[1] is None
        }

    def sources_of_sql(self, sql: str, dialect: str) -> set[str]:
        """The tracked sources the raw statement ``sql`` writes (every one when unknown)."""
        tables = written_tables(sql, dialect)
        if tables is UNKNOWN:
            self.unattributed += 1
            self.keeper.stats.unattributed_writes += 1
            if len(self._logged) < 100 and sql not in self._logged:
                self._logged.add(sql)
                log.warning(
                    "freshkeep cannot tell which tables this statement writes; every tracked "
                    "table is bumped (declare them with freshkeep.integrations.sqlalchemy.bump"
                    "): %.200s",
                    sql,
                )
            return self.with_every(self.every_source())
        found = (self.source_of_name(t) for t in tables)
        return self.with_every(src for src in found if src is not None)

    def sources_of(self, target: Any) -> set[str]:
        """The tracked sources a DML statement's target writes (a table, or an alias or a
        join of tables)."""
        if isinstance(target, Table):
            src = self.source_of(target)
            return set() if src is None else {src}
        if not isinstance(target, FromClause):
            return set()
        found = (self.source_of(t) for t in find_tables(target, include_aliases=True))
        return {src for src in found if src is not None}

    def mark(self, session: Session, sources: Collection[str]) -> None:
        """Add ``sources`` to what ``session``'s transaction changed."""
        _mark(session, sources)

    @staticmethod
    def pending(session: Session) -> set[str]:
        """The sources this session changed in its current transaction, not bumped yet."""
        return cast(set[str], session.info.setdefault(_PENDING, set()))

    # event handlers ------------------------------------------------------------------------

    def watch_engine(self, engine: Engine | AsyncEngine) -> None:
        """Watch the statements of every connection of ``engine`` (idempotent)."""
        sync = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
        if any(e is sync for e in self._engines):
            return
        sa_event.listen(sync, "before_execute", self._before_execute)
        sa_event.listen(sync, "after_cursor_execute", self._after_cursor_execute)
        self._engines.append(sync)

    def _after_begin(
        self, session: Session, transaction: SessionTransaction, connection: Connection
    ) -> None:
        self.watch_engine(connection.engine)
        self._writers[connection] = weakref.ref(session)
        _SESSION_OWNED.add(connection)
        session.info.setdefault(_CONNS, []).append(connection)

    def _before_execute(
        self,
        conn: Connection,
        clause: Any,
        multiparams: Any,
        params: Any,
        execution_options: Any,
    ) -> None:
        """A statement of a tracked session: mark what it writes, bumped at commit."""
        ref = self._writers.get(conn)
        if ref is None:
            return
        session = ref()
        if getattr(clause, "is_dml", False):
            sources = self.sources_of(getattr(clause, "table", None))
            if session is not None:
                self.changes_statement(session, conn, sources)
        elif isinstance(clause, TextClause):
            sources = self.sources_of_sql(clause.text, conn.dialect.name)
            if session is not None:
                note_unknown(session, self.keeper, sources)
        else:
            return
        if session is not None:
            _mark(session, sources)

    def _after_cursor_execute(
        self,
        conn: Connection,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: Any,
        executemany: bool,
    ) -> None:
        """Driver SQL of a tracked session (``exec_driver_sql``: no ``before_execute``), and
        every write on a connection no tracked session owns."""
        compiled = getattr(context, "compiled", None)
        ref = self._writers.get(conn)
        if ref is not None:
            session = ref()
            if session is None:
                return
            if compiled is None:
                sources = self.sources_of_sql(statement, conn.dialect.name)
                note_unknown(session, self.keeper, sources)
                _mark(session, sources)
                return
            clause = compiled.statement
            if getattr(clause, "is_dml", False):  # its table was marked by _before_execute
                flushing = session if session.info.get(_IN_FLUSH) else None
                _mark(session, self.partitions_of(clause, context, flushing))
                self.changes_written(session, conn, self.sources_of(getattr(clause, "table", None)))
            elif compiled.ctes:
                sources = self.sources_of_ctes(compiled)
                note_unknown(session, self.keeper, sources)
                _mark(session, sources)
            return
        if conn in _SESSION_OWNED:
            return  # another tracking's session: its hooks bump at its commit
        clause = getattr(compiled, "statement", None)
        if compiled is None:
            sources = self.sources_of_sql(statement, conn.dialect.name)
        elif getattr(clause, "is_dml", False):
            sources = self.sources_of(getattr(clause, "table", None))
            sources |= self.partitions_of(clause, context)
        elif isinstance(clause, TextClause):
            sources = self.sources_of_sql(clause.text, conn.dialect.name)
        elif getattr(compiled, "ctes", None):
            sources = self.sources_of_ctes(compiled)
        else:
            return
        if sources and self._revisions_ready(conn):
            # In the statement's own transaction, after it: a rollback undoes both; under
            # AUTOCOMMIT the data commits first, so a reader can only over-invalidate.
            try:
                bump_counters(conn, sources)
            except Exception as exc:
                if conn.in_transaction():
                    exc.add_note(f"freshkeep could not bump the revisions of {sorted(sources)}")
                    raise
                # AUTOCOMMIT: the write is committed already; failing it now would lie.
                self.bump_errors += 1
                log.exception("bumping %s after an autocommitted write failed", sorted(sources))

    def _revisions_ready(self, conn: Connection) -> bool:
        """Whether ``freshkeep_revisions`` exists on ``conn``'s database (looked up once, and
        again every 10 s while it is missing): writes outside sessions are never failed by a
        freshkeep table that was not migrated yet; they are logged once instead."""
        key = id(conn.engine)
        now = time.monotonic()
        known = self._ready.get(key)
        if known is not None and (known[0] or now < known[1]):
            return known[0]
        try:
            ready = bool(inspect(conn).has_table(REVISION_TABLE))
        except Exception:
            ready = False
        self._ready[key] = (ready, now + 10.0)
        if not ready and known is None:
            log.warning(
                "no %s table: writes outside tracked sessions are not bumped until "
                "`freshkeep migrate` creates it",
                REVISION_TABLE,
            )
        return ready

    def _before_commit(self, session: Session) -> None:
        info = session.info
        for src, _pks in info.pop(_FLUSH_UNKNOWN, []):  # a flush that never ended
            note_unknown(session, self.keeper, (src,))
            _mark(session, self.every_of(src))
        bumped = info.pop(_BUMPED, ())
        if bumped:  # bump(session, table): every partition of it, by any name it has
            note_unknown(session, self.keeper, bumped)
            _mark(session, self.with_every(bumped))
        if session.in_nested_transaction():
            # A savepoint is released: the transaction goes on. Bumping now would lock the
            # counters until its end, and keep revisions a rollback of an enclosing savepoint
            # undoes. Its changes stay pending until the outermost commit.
            return
        session.flush()  # commit flushes after this event: flush now to see every change
        session.info[_COMMITTING] = True
        _bump_now(session)

    def _after_commit(self, session: Session) -> None:
        if session.in_nested_transaction():
            return  # a savepoint was released: the outer transaction has not committed yet
        revs = session.info.pop(_REVS, None)
        changes, unknown, since = self.changes_of(session)
        self._forget(session)
        if not revs:
            return
        session.info[_COMMITTED] = dict(revs)
        sent: CommitChanges | None = None
        log_ = self.keeper.changes
        if log_.followed:  # before the revisions: a read may follow at once
            log_.record(revs, changes, unknown, since=since)
            sent = commit_changes(log_, revs, changes, unknown, since)
        # Keeper.publish applies the revisions first (read-your-writes), then publishes (with
        # the known changed rows, for the other processes' delta sections). The commit
        # stands whatever the bus does (rule 7): a failed publish is counted and logged,
        # never raised from commit().
        try:
            if in_greenlet():  # an AsyncSession: await the publish inside its commit
                await_only(self.keeper.publish(revs, sent))
            else:
                self.keeper.publish_nowait(revs, sent)
        except Exception:
            self.publish_errors += 1
            log.exception(
                "publishing revisions %r failed; other processes see them at resync", revs
            )

    def _after_transaction_end(self, session: Session, transaction: Any) -> None:
        if transaction.parent is None:  # the root ended: a rollback forgets everything
            session.info.pop(_REVS, None)
            self._forget(session)

    def _forget(self, session: Session) -> None:
        info = session.info
        for name in (_FLUSH_UNKNOWN, _IN_FLUSH, _INSERTED, _BUMPED):
            info.pop(name, None)
        info.pop(_PENDING, None)
        info.pop(_COMMITTING, None)
        self.forget_changes(session)
        for conn in info.pop(_CONNS, ()):
            self._writers.pop(conn, None)
            _SESSION_OWNED.discard(conn)

    def _before_flush(self, session: Session, flush_context: Any, instances: Any) -> None:
        super()._before_flush(session, flush_context, instances)
        self.changes_begin_flush(session)

    def _after_flush(self, session: Session, flush_context: Any) -> None:
        self.changes_end_flush(session, flush_context)
        super()._after_flush(session, flush_context)

    def install(self) -> None:
        if self.target is None:
            return
        for name, fn in (
            ("after_begin", self._after_begin),
            ("before_flush", self._before_flush),
            ("after_flush", self._after_flush),
            ("before_commit", self._before_commit),
            ("after_commit", self._after_commit),
            ("after_transaction_end", self._after_transaction_end),
        ):
            sa_event.listen(self.target, name, fn)
            self._listeners.append((name, fn))

    def remove(self) -> None:
        """Uninstall the hooks."""
        for name, fn in self._listeners:
            sa_event.remove(self.target, name, fn)
        self._listeners.clear()
        for engine in self._engines:
            sa_event.remove(engine, "before_execute", self._before_execute)
            sa_event.remove(engine, "after_cursor_execute", self._after_cursor_execute)
        self._engines.clear()
        self._writers.clear()


_SESSION_OWNED: weakref.WeakSet[Connection] = weakref.WeakSet()
"""Connections some tracked session (of any :class:`Tracking`) is in a transaction on."""


def _match(name: str, known: Collection[str]) -> str | None:
    """``name`` as it is in ``known``: exactly, else ignoring case (the database folds unquoted
    names, the ORM keeps its own spelling)."""
    if name in known:
        return name
    lower = name.lower()
    for k in known:
        if k.lower() == lower:
            return k
    return None


def _event_target(target: Any) -> Any:
    if isinstance(target, async_sessionmaker):
        # Events live on the sync Session an AsyncSession wraps. Give this factory a class
        # of its own so the hooks do not reach sessions made elsewhere.
        base = target.kw.get("sync_session_class") or target.class_.sync_session_class
        cls = type(f"Tracked{base.__name__}", (base,), {})
        target.kw["sync_session_class"] = cls
        return cls
    if isinstance(target, sessionmaker):
        return target
    if isinstance(target, type) and issubclass(target, AsyncSession):
        return target.sync_session_class
    if isinstance(target, type) and issubclass(target, Session):
        return target
    if isinstance(target, AsyncSession):
        return target.sync_session
    if isinstance(target, Session):
        return target
    raise ConfigurationError(
        "track() needs a sessionmaker, an async_sessionmaker, a Session or AsyncSession "
        f"(class or instance), not {target!r}"
    )


def track(
    keeper: Keeper,
    target: Any,
    models: Iterable[Any] | None = None,
    *,
    engines: Iterable[Engine | AsyncEngine] = (),
) -> Tracking:
    """Install freshkeep's write hooks on ``target`` for ``models`` (all tables if ``None``).

    ``target`` is a ``sessionmaker``, an ``async_sessionmaker``, a Session / AsyncSession
    class or instance, or an ``Engine`` / ``AsyncEngine`` (its connections only). ``models``
    are mapped classes, tables or table names; tables of inheritance parents and many-to-many
    association tables touched through a model count too. ``engines`` are watched for writes
    outside tracked sessions from the start (a session factory's ``bind`` is, and so is every
    engine a tracked session uses, from its first transaction on). After this, views of
    ``keeper`` default to ``probe="interval"``.
    """
    tables: frozenset[str] | None = None
    if models is not None:
        names: set[str] = set()
        for m in models:
            if isinstance(m, str):
                names.add(m.removeprefix("table:"))
                continue
            mapper = inspect(m, raiseerr=False)
            if mapper is not None and hasattr(mapper, "tables"):
                names.update(t.fullname for t in mapper.tables if isinstance(t, Table))
                for rel in mapper.relationships:
                    if isinstance(rel.secondary, Table):
                        names.add(rel.secondary.fullname)
            elif isinstance(m, Table):
                names.add(m.fullname)
            else:
                raise ConfigurationError(f"not a mapped class, table or table name: {m!r}")
        tables = frozenset(names)
    watched: list[Engine | AsyncEngine] = list(engines)
    if isinstance(target, Engine | AsyncEngine):
        watched.append(target)
        tracking = Tracking(keeper, None, tables)
    else:
        bind = getattr(target, "kw", {}).get("bind")
        if isinstance(bind, Engine | AsyncEngine):
            watched.append(bind)
        tracking = Tracking(keeper, _event_target(target), tables)
        tracking.install()
    for engine in watched:
        tracking.watch_engine(engine)
    keeper.hooks_installed(tables)
    return tracking


def tracked_keeper(
    sessions: async_sessionmaker[Any] | sessionmaker[Any],
    models: Iterable[Any] | None = None,
    **kw: Any,
) -> Keeper:
    """A :class:`Keeper` reading revisions through the engine ``sessions`` is bound to
    (:class:`SQLAlchemyRevisions`), with the write hooks :func:`track` installs on ``sessions``
    for ``models`` (all tables if ``None``); ``kw`` go to :class:`Keeper`. Create the revision
    table once: ``await keeper.revisions.create_table()`` (or ``freshkeep migrate``)."""
    engine = sessions.kw.get("bind")
    if not isinstance(engine, Engine | AsyncEngine):
        raise ConfigurationError("tracked_keeper needs a session factory bound to an engine")
    keeper = Keeper(SQLAlchemyRevisions(engine), **kw)
    track(keeper, sessions, models)
    return keeper


def bump(session: Session | AsyncSession, *sources: Any) -> None:
    """Mark ``sources`` changed in ``session``'s transaction (after raw SQL writes).

    They are bumped at its commit with the rest, by the :func:`track` installed on it.
    ``sources`` are source names, tables or mapped classes.
    """
    sync = session.sync_session if isinstance(session, AsyncSession) else session
    names = [table_source(s) for s in sources]
    sync.info.setdefault(_BUMPED, set()).update(n for n in names if n.startswith("table:"))
    _mark(sync, with_every(names))


def committed_revisions(session: Session | AsyncSession) -> dict[str, Revision]:
    """The revisions the last commit of ``session`` produced (empty if it bumped nothing).

    Send them back to the client (``X-Freshkeep-Revision`` on a write's response): a read that
    returns them as ``X-Freshkeep-Min-Revision`` is never answered from an older entry.
    """
    sync = session.sync_session if isinstance(session, AsyncSession) else session
    return dict(sync.info.get(_COMMITTED, {}))


__all__ = [
    "REVISION_TABLE",
    "SQLITE_BEGIN",
    "SQLAlchemyRevisions",
    "Tracking",
    "Watermark",
    "bump",
    "committed_revisions",
    "metadata",
    "revisions_table",
    "sqlite_transactions",
    "table_source",
    "track",
    "tracked_keeper",
    "writer_engine",
]
