"""SQLAlchemy 2 integration: revision counters bumped in the writing transaction.

- :class:`SQLAlchemyRevisions` reads the counters of many sources in one query (and, for tables
  other programs write, ``MAX(updated_at)`` + ``COUNT(*)`` watermarks).
- :func:`track` installs the write hooks on a session factory (sync or async): every table an
  INSERT, UPDATE or DELETE statement on the session's connection wrote (a flush, an ORM bulk
  or legacy bulk operation, a Core DML statement, also through ``session.connection()``) is
  bumped **at** ``before_commit``, **in** the writing transaction; the new revisions are
  applied to the keeper **after** commit (read-your-writes) and published to its bus; a
  rollback changes and publishes nothing. Raw SQL (``text()``, ``exec_driver_sql``) is not
  parsed.
- :func:`bump` marks sources changed by raw SQL run in a session.

Source names: ``table:<table name>`` (see :func:`table_source`).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from freshkeep.core.revision import Revision
from freshkeep.exceptions import ConfigurationError, RevisionSourceError, missing_extra

try:
    from sqlalchemy import (
        BigInteger,
        Column,
        Connection,
        Engine,
        MetaData,
        String,
        Table,
        func,
        inspect,
        select,
        update,
    )
    from sqlalchemy import event as sa_event
    from sqlalchemy.dialects import postgresql, sqlite
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
    from sqlalchemy.orm import Session, SessionTransaction, sessionmaker
    from sqlalchemy.sql.expression import ColumnElement, FromClause
    from sqlalchemy.sql.util import find_tables
    from sqlalchemy.util.concurrency import await_only, in_greenlet
except ImportError as exc:  # pragma: no cover - exercised by the no-extras import test
    raise missing_extra("sqlalchemy", "sqlalchemy") from exc

from freshkeep.keeper import Keeper

log = logging.getLogger("freshkeep.sqlalchemy")

T = TypeVar("T")

REVISION_TABLE = "freshkeep_revisions"

metadata = MetaData()
"""The metadata of freshkeep's own tables."""

revisions_table = Table(
    REVISION_TABLE,
    metadata,
    Column("source", String(255), primary_key=True),
    Column("revision", BigInteger, nullable=False),
)
"""One row per source: its counter. A source without a row has revision 0."""


def table_source(obj: Any) -> str:
    """The source name of a table, a mapped class or a table name: ``table:<name>``."""
    if isinstance(obj, str):
        return obj if obj.startswith("table:") else f"table:{obj}"
    if isinstance(obj, Table):
        return f"table:{obj.fullname}"
    mapper = inspect(obj, raiseerr=False)
    table = getattr(mapper, "local_table", None)
    if isinstance(table, Table):
        return f"table:{table.fullname}"
    raise ConfigurationError(f"not a table, a mapped class or a table name: {obj!r}")


def _upsert(conn: Connection, sources: list[str]) -> dict[str, Revision]:
    """Increment the counters of ``sources`` in ``conn``'s transaction, in a stable order."""
    t = revisions_table
    dialect = conn.dialect.name
    rows: list[dict[str, Any]] = [{"source": s, "revision": 1} for s in sorted(set(sources))]
    if dialect == "postgresql":
        pg = postgresql.insert(t).values(rows)
        pg_stmt = pg.on_conflict_do_update(
            index_elements=[t.c.source], set_={"revision": t.c.revision + 1}
        ).returning(t.c.source, t.c.revision)
        return {r.source: int(r.revision) for r in conn.execute(pg_stmt)}
    if dialect == "sqlite":
        lite = sqlite.insert(t).values(rows)
        lite_stmt = lite.on_conflict_do_update(
            index_elements=[t.c.source], set_={"revision": t.c.revision + 1}
        ).returning(t.c.source, t.c.revision)
        return {r.source: int(r.revision) for r in conn.execute(lite_stmt)}
    out: dict[str, Revision] = {}
    for row in rows:  # portable fallback: UPDATE, then INSERT the first revision
        res = conn.execute(
            update(t).where(t.c.source == row["source"]).values(revision=t.c.revision + 1)
        )
        if res.rowcount == 0:
            conn.execute(t.insert().values(row))
        out[row["source"]] = int(
            conn.execute(select(t.c.revision).where(t.c.source == row["source"])).scalar_one()
        )
    return out


@dataclass(frozen=True, slots=True)
class Watermark:
    """A table other programs write: its revision is ``COUNT(*)`` and ``MAX(column)``.

    Limits (why counters are the default): a transaction that commits *after* a newer one was
    read leaves ``MAX`` unchanged if its timestamps are older, and a delete plus an insert in the
    same interval leave ``COUNT`` unchanged; either is missed until the next change. Updates
    that do not move ``column`` are missed entirely.
    """

    table: FromClause
    column: ColumnElement[Any]


class SQLAlchemyRevisions:
    """Reads (and bumps) revision counters through a SQLAlchemy engine, sync or async.

    ``watermarks`` maps source names to :class:`Watermark` for tables freshkeep's hooks never
    see; they are read in one more query, with their limits.
    """

    def __init__(
        self,
        engine: AsyncEngine | Engine,
        *,
        watermarks: Mapping[str, Watermark] | None = None,
    ) -> None:
        if not isinstance(engine, AsyncEngine | Engine):
            raise ConfigurationError(f"expected a SQLAlchemy Engine or AsyncEngine, not {engine!r}")
        self.engine = engine
        self.watermarks = dict(watermarks or {})
        self.queries = 0

    async def read(self, sources: Collection[str]) -> dict[str, Revision]:
        """Read the revision of every source: counters in one query, watermarks in one more."""
        try:
            return await run_on(self.engine, lambda conn: self._read(conn, sources))
        except Exception as exc:
            raise RevisionSourceError(f"reading revisions failed: {exc}") from exc

    def _read(self, conn: Connection, sources: Collection[str]) -> dict[str, Revision]:
        counters = [s for s in sources if s not in self.watermarks]
        marks = [s for s in sources if s in self.watermarks]
        out: dict[str, Revision] = dict.fromkeys(counters, 0)
        if counters:
            t = revisions_table
            self.queries += 1
            for source, rev in conn.execute(
                select(t.c.source, t.c.revision).where(t.c.source.in_(counters))
            ):
                out[source] = int(rev)
        if marks:
            cols = []
            for s in marks:
                w = self.watermarks[s]
                cols.append(select(func.count()).select_from(w.table).scalar_subquery())
                cols.append(select(func.max(w.column)).select_from(w.table).scalar_subquery())
            self.queries += 1
            row = conn.execute(select(*cols)).one()
            for i, s in enumerate(marks):
                out[s] = f"{row[2 * i]}@{row[2 * i + 1]}"
        conn.rollback()
        return out

    async def bump(self, sources: Iterable[str]) -> dict[str, Revision]:
        """Increment counters in a transaction of their own; return the new revisions."""
        srcs = list(sources)
        return await run_on(self.engine, lambda conn: _upsert(conn, srcs), write=True)

    async def create_table(self) -> None:
        """Create freshkeep's tables (of :data:`metadata`) that do not exist."""
        await run_on(self.engine, metadata.create_all, write=True)


def upsert_rows(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """Insert ``rows`` into ``table``, replacing every non-key column of rows whose primary key
    exists. PostgreSQL and SQLite use ``INSERT … ON CONFLICT DO UPDATE`` in batches (SQLite
    within its 999 bound parameters); other dialects ``UPDATE``, then ``INSERT``."""
    if not rows:
        return
    keys = list(table.primary_key.columns)
    updated = [c.name for c in table.columns if not c.primary_key]
    dialect = conn.dialect.name
    if dialect in ("postgresql", "sqlite"):
        ins = (postgresql if dialect == "postgresql" else sqlite).insert(table)
        stmt = ins.on_conflict_do_update(
            index_elements=keys, set_={c: getattr(ins.excluded, c) for c in updated}
        )
        step = 500 if dialect == "postgresql" else max(1, 999 // len(table.columns))
        for i in range(0, len(rows), step):
            conn.execute(stmt.values(rows[i : i + step]))
        return
    for row in rows:
        where = [k == row[k.name] for k in keys]
        new = {c: row[c] for c in updated}
        if conn.execute(update(table).where(*where).values(new)).rowcount == 0:
            conn.execute(table.insert().values(row))


async def run_on(
    engine: AsyncEngine | Engine, work: Callable[[Connection], T], *, write: bool = False
) -> T:
    """Run ``work(connection)`` on a sync or an async engine and return its result.

    ``write=True`` runs it in a transaction that commits; else on a plain connection. A sync
    engine runs in a worker thread, so the event loop never blocks on it.
    """
    if isinstance(engine, AsyncEngine):
        ctx = engine.begin() if write else engine.connect()
        async with ctx as aconn:
            return cast(T, await aconn.run_sync(work))

    def run_sync() -> T:
        with engine.begin() if write else engine.connect() as conn:
            return work(conn)

    return await asyncio.to_thread(run_sync)


SQLITE_BEGIN = "freshkeep_sqlite_begin"
"""Execution option read by :func:`sqlite_transactions`: how to ``BEGIN`` (``IMMEDIATE``...)."""


def writer_engine(engine: AsyncEngine) -> AsyncEngine:
    """``engine`` for transactions that write: on SQLite they begin with ``BEGIN IMMEDIATE``
    (see :func:`sqlite_transactions`), so one whose snapshot another writer outdated waits for
    the write lock instead of failing with ``SQLITE_BUSY_SNAPSHOT``. Other dialects: ``engine``
    itself. The returned engine shares ``engine``'s pool."""
    if engine.dialect.name != "sqlite":
        return engine
    return engine.execution_options(**{SQLITE_BEGIN: "IMMEDIATE"})


def sqlite_transactions(engine: AsyncEngine | Engine) -> None:
    """Give a SQLite engine real transactions (SQLAlchemy's documented recipe).

    Python's sqlite3 driver (and aiosqlite on top of it) emits ``BEGIN`` only before the first
    INSERT/UPDATE/DELETE: a ``SAVEPOINT`` issued first opens the transaction itself and its
    ``RELEASE`` commits everything, so an outer rollback undoes nothing, and the counters
    freshkeep bumps at the real commit would miss those writes. This turns the driver's own
    transaction handling off and emits ``BEGIN`` when SQLAlchemy begins one. Other dialects
    are left alone.

    A transaction that reads before it writes should begin with ``BEGIN IMMEDIATE``: in WAL
    mode, a deferred transaction whose snapshot another connection's commit has outdated
    cannot start writing and fails at once with "database is locked" (``SQLITE_BUSY_SNAPSHOT``;
    the busy timeout does not apply). Ask for it per connection with the execution option
    :data:`SQLITE_BEGIN` (``"IMMEDIATE"`` or ``"EXCLUSIVE"``), e.g.
    ``await session.connection(execution_options={SQLITE_BEGIN: "IMMEDIATE"})`` first thing in
    a writing session; it waits for the write lock (busy timeout) instead of failing.
    """
    sync = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
    if sync.dialect.name != "sqlite":
        return

    def no_driver_transactions(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None

    def begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get(SQLITE_BEGIN)
        if mode is None:
            conn.exec_driver_sql("BEGIN")
        elif str(mode).upper() in ("IMMEDIATE", "EXCLUSIVE", "DEFERRED"):
            conn.exec_driver_sql(f"BEGIN {str(mode).upper()}")
        else:
            raise ConfigurationError(
                f"{SQLITE_BEGIN} must be IMMEDIATE, EXCLUSIVE or DEFERRED, not {mode!r}"
            )

    sa_event.listen(sync, "connect", no_driver_transactions)
    sa_event.listen(sync, "begin", begin)


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
        revs = _upsert(session.connection(), sources)
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
class Tracking:
    """The hooks :func:`track` installed; :meth:`remove` uninstalls them.

    Writes are seen as statements: when a tracked session begins a transaction on a
    connection, statements executed on that connection until the transaction ends are
    watched (one listener per engine). A DML statement marks its table; an ORM UPDATE that
    changes nothing emits no statement and marks nothing.

    ``publish_errors`` counts commits whose revisions could not be published to the bus (the
    commit stands, the keeper of this process has them; other processes learn them at their
    next resync).
    """

    keeper: Keeper
    target: Any
    tables: frozenset[str] | None
    publish_errors: int = 0
    _listeners: list[tuple[str, Any]] = field(default_factory=list)
    _engines: list[Engine] = field(default_factory=list)
    _writers: weakref.WeakKeyDictionary[Connection, weakref.ref[Session]] = field(
        default_factory=weakref.WeakKeyDictionary
    )

    def source_of(self, table: Any) -> str | None:
        """The source of ``table`` if it is tracked."""
        if not isinstance(table, Table):
            return None
        if table.fullname == REVISION_TABLE:
            return None
        if self.tables is not None and table.fullname not in self.tables:
            return None
        return f"table:{table.fullname}"

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

    @staticmethod
    def pending(session: Session) -> set[str]:
        """The sources this session changed in its current transaction, not bumped yet."""
        return cast(set[str], session.info.setdefault(_PENDING, set()))

    # event handlers ------------------------------------------------------------------------

    def _after_begin(
        self, session: Session, transaction: SessionTransaction, connection: Connection
    ) -> None:
        engine = connection.engine
        if not any(e is engine for e in self._engines):
            sa_event.listen(engine, "before_execute", self._before_execute)
            self._engines.append(engine)
        self._writers[connection] = weakref.ref(session)
        session.info.setdefault(_CONNS, []).append(connection)

    def _before_execute(
        self,
        conn: Connection,
        clause: Any,
        multiparams: Any,
        params: Any,
        execution_options: Any,
    ) -> None:
        ref = self._writers.get(conn)
        if ref is None or not getattr(clause, "is_dml", False):
            return
        session = ref()
        if session is not None:
            _mark(session, self.sources_of(getattr(clause, "table", None)))

    def _before_commit(self, session: Session) -> None:
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
        self._forget(session)
        if not revs:
            return
        session.info[_COMMITTED] = dict(revs)
        keeper = self.keeper
        keeper.committed(revs)
        # The commit stands whatever the bus does (rule 7): a failed publish is counted and
        # logged, never raised from commit().
        try:
            if in_greenlet():  # an AsyncSession: await the publish inside its commit
                await_only(keeper.bus.publish(revs, origin=keeper.instance_id))
            else:
                keeper.bus.publish_nowait(revs, origin=keeper.instance_id)
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
        info.pop(_PENDING, None)
        info.pop(_COMMITTING, None)
        for conn in info.pop(_CONNS, ()):
            self._writers.pop(conn, None)

    def install(self) -> None:
        for name, fn in (
            ("after_begin", self._after_begin),
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
        self._engines.clear()
        self._writers.clear()


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


def track(keeper: Keeper, target: Any, models: Iterable[Any] | None = None) -> Tracking:
    """Install freshkeep's write hooks on ``target`` for ``models`` (all tables if ``None``).

    ``target`` is a ``sessionmaker``, an ``async_sessionmaker``, or a Session / AsyncSession
    class or instance. ``models`` are mapped classes, tables or table names; tables of
    inheritance parents and many-to-many association tables touched through a model count too.
    After this, views of ``keeper`` default to ``probe="interval"``.
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
    tracking = Tracking(keeper, _event_target(target), tables)
    tracking.install()
    keeper.hooks_installed()
    return tracking


def bump(session: Session | AsyncSession, *sources: Any) -> None:
    """Mark ``sources`` changed in ``session``'s transaction (after raw SQL writes).

    They are bumped at its commit with the rest, by the :func:`track` installed on it.
    ``sources`` are source names, tables or mapped classes.
    """
    sync = session.sync_session if isinstance(session, AsyncSession) else session
    _mark(sync, [table_source(s) for s in sources])


def committed_revisions(session: Session | AsyncSession) -> dict[str, Revision]:
    """The revisions the last commit of ``session`` produced (empty if it bumped nothing).

    Send them back to the client (``X-Freshkeep-Revision`` on a write's response): a read that
    returns them as ``X-Freshkeep-Min-Revision`` is never answered from an older entry.
    """
    sync = session.sync_session if isinstance(session, AsyncSession) else session
    return dict(sync.info.get(_COMMITTED, {}))
