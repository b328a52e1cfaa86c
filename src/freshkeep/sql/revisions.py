"""The SQL revision source: counters in ``freshkeep_revisions``, and watermarks.

- :class:`SQLAlchemyRevisions` reads the counters of many sources in one query (and, for tables
  other programs write, ``MAX(updated_at)`` + ``COUNT(*)`` watermarks), and bumps counters in a
  transaction of its own.
- :func:`bump_counters` increments counters inside a caller's transaction: the write hooks
  call it at ``before_commit`` (rule 1).
- :func:`table_source` names a table's source: ``table:<table name>``.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, overload
from urllib.parse import quote

from freshkeep.core.partitions import DEFAULT_BUCKETS, Partitioned
from freshkeep.core.revision import Revision
from freshkeep.exceptions import ConfigurationError, RevisionSourceError, missing_extra
from freshkeep.ports import RevisionSource

try:
    from sqlalchemy import Connection, Engine, Table, func, inspect, select, update
    from sqlalchemy.dialects import postgresql, sqlite
    from sqlalchemy.ext.asyncio import AsyncEngine
    from sqlalchemy.sql.expression import ColumnElement, FromClause
except ImportError as exc:  # pragma: no cover - exercised by the no-extras import test
    raise missing_extra("sqlalchemy", exc.name or "sqlalchemy") from exc

from freshkeep.sql.engine import check_engine, display_url, run_on, sqlite_file
from freshkeep.sql.schema import metadata, revisions_table

log = logging.getLogger("freshkeep.sql")


@overload
def table_source(obj: Any) -> str: ...


@overload
def table_source(obj: Any, *, by: str, buckets: int = DEFAULT_BUCKETS) -> Partitioned: ...


def table_source(
    obj: Any, *, by: str | None = None, buckets: int = DEFAULT_BUCKETS
) -> str | Partitioned:
    """The source name of a table, a mapped class or a table name: ``table:<name>``.

    With ``by``, the table's source partitioned by that column (a
    :class:`~freshkeep.core.partitions.Partitioned`, in ``buckets`` counters): put it among a
    keyed view's sources, and a write invalidates only the entries of the keys it touched.
    The column must exist on a table or mapped class given (a name is taken as it is).
    """
    source = _table_source(obj)
    if by is None:
        return source
    table = (
        obj
        if isinstance(obj, Table)
        else getattr(inspect(obj, raiseerr=False), "local_table", None)
    )
    if isinstance(table, Table) and not any(c.name == by or c.key == by for c in table.c):
        columns = ", ".join(c.name for c in table.c)
        raise ConfigurationError(f"{source} has no column {by!r} (its columns: {columns})")
    if isinstance(table, Table):
        by = next(c.name for c in table.c if c.name == by or c.key == by)
    return Partitioned(source, by, buckets)


def _table_source(obj: Any) -> str:
    if isinstance(obj, str):
        return obj if obj.startswith("table:") else f"table:{obj}"
    if isinstance(obj, Table):
        return f"table:{obj.fullname}"
    mapper = inspect(obj, raiseerr=False)
    table = getattr(mapper, "local_table", None)
    if isinstance(table, Table):
        return f"table:{table.fullname}"
    raise ConfigurationError(f"not a table, a mapped class or a table name: {obj!r}")


def bump_counters(conn: Connection, sources: Iterable[str]) -> dict[str, Revision]:
    """Increment the counters of ``sources`` in ``conn``'s transaction, in a stable order (so
    two transactions bumping the same sources cannot deadlock); return the new revisions."""
    t = revisions_table
    dialect = conn.dialect.name
    rows: list[dict[str, Any]] = [{"source": s, "revision": 1} for s in sorted(set(sources))]
    if not rows:
        return {}
    if dialect in ("postgresql", "sqlite"):
        ins = (postgresql if dialect == "postgresql" else sqlite).insert(t).values(rows)
        stmt = ins.on_conflict_do_update(
            index_elements=[t.c.source], set_={"revision": t.c.revision + 1}
        ).returning(t.c.source, t.c.revision)
        return {r.source: int(r.revision) for r in conn.execute(stmt)}
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


class DataVersion:
    """Whether anyone committed to a SQLite file since the last look: ``PRAGMA data_version``.

    The pragma, on a connection of its own that never writes, changes whenever another
    connection (of this process or any other) commits to the file. Reading it costs a few
    microseconds and no query of any table, so a revision source can skip re-reading counters
    that cannot have moved. ``None`` when the database is not a file (``:memory:``).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._generation = 0

    @classmethod
    def for_engine(cls, engine: AsyncEngine | Engine) -> DataVersion | None:
        """The data version of ``engine``'s SQLite file, or ``None`` for another database."""
        url = engine.url
        if url.get_backend_name() != "sqlite":
            return None
        database = sqlite_file(url.database)
        return None if database is None else cls(database)

    def read(self) -> tuple[int, int] | None:
        """``(connection generation, data version)`` now, or ``None`` if it cannot be read
        (then nothing may be skipped).

        Versions are comparable only on one connection: a reopened connection counts anew, so
        each (re)open starts a new generation and nothing read before it is reused. The
        connection never waits (``timeout=0``): a file locked by a writer answers "cannot
        tell", so the event loop is never blocked.
        """
        try:
            if self._conn is None:
                self._conn = sqlite3.connect(  # mode=rw: never create the file
                    f"file:{quote(self.path)}?mode=rw",
                    uri=True,
                    timeout=0.0,
                    isolation_level=None,
                    check_same_thread=False,
                )
                self._generation += 1
            row = self._conn.execute("PRAGMA data_version").fetchone()
            return self._generation, int(row[0])
        except sqlite3.Error:
            self.close()
            return None

    def close(self) -> None:
        """Close its connection (reopened by the next :meth:`read`)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class SQLAlchemyRevisions(RevisionSource):
    """Reads (and bumps) revision counters through a SQLAlchemy engine, sync or async.

    ``watermarks`` maps source names to :class:`Watermark` for tables freshkeep's hooks never
    see; they are read in one more query, with their limits.

    On a SQLite file, a read first looks at ``PRAGMA data_version`` (:class:`DataVersion`):
    when no connection committed to the file since the last read, the revisions read then are
    returned without a query (``skipped`` counts those reads). Writes by other processes are
    still seen at once, provided they move the counters (the change-capture triggers of
    :mod:`freshkeep.sql.triggers`, or the write hooks). ``skip_unchanged=False`` turns that
    off: every read queries, as on any other database (e.g. to measure what the check saves:
    ``freshkeep bench``).
    """

    def __init__(
        self,
        engine: AsyncEngine | Engine,
        *,
        watermarks: Mapping[str, Watermark] | None = None,
        skip_unchanged: bool = True,
        triggers: Collection[str] = (),
    ) -> None:
        self.engine = check_engine(engine)
        self.triggers = tuple(t.removeprefix("table:") for t in triggers)
        """Tables whose change-capture triggers :meth:`check` requires."""
        self.watermarks = dict(watermarks or {})
        self.queries = 0
        self.skipped = 0
        """Reads answered without a query: nothing was committed to the SQLite file since."""
        self.skip_unchanged = skip_unchanged
        self._version = DataVersion.for_engine(self.engine) if skip_unchanged else None
        self._seen_version: tuple[int, int] | None = None
        self._seen: dict[str, Revision] = {}

    async def read(self, sources: Collection[str]) -> dict[str, Revision]:
        """Read the revision of every source: counters in one query, watermarks in one more
        (none at all on an unchanged SQLite file)."""
        version = self._version.read() if self._version is not None else None
        if version is None:  # cannot tell: forget what was seen, query
            self._seen_version, self._seen = None, {}
        elif version == self._seen_version:
            seen = self._seen
            if all(s in seen for s in sources):
                self.skipped += 1
                return {s: seen[s] for s in sources}
        try:
            found = await run_on(self.engine, lambda conn: self._read(conn, sources))
        except Exception as exc:
            raise RevisionSourceError(f"reading revisions failed: {exc}") from exc
        if version is not None:
            # Read after the version: a commit in between shows as a new version next time.
            if version != self._seen_version:
                self._seen_version, self._seen = version, {}
            self._seen.update(found)
        return found

    async def check(self, partitions: Sequence[Partitioned] = ()) -> None:
        """Fail fast, naming the command to run, when freshkeep's revision table is missing,
        the change-capture triggers of a table given as ``triggers=`` are, or the triggers of
        a table compute partitions but not each of ``partitions`` of it (with the same
        buckets: :func:`~freshkeep.sql.triggers.check_partitions`). A database that cannot be
        reached is not an error here (it may come up later): it is logged."""
        from freshkeep.sql.triggers import check_partitions_async, triggered_tables_async

        def missing(conn: Connection) -> bool:
            return not inspect(conn).has_table(revisions_table.name)

        where = display_url(self.engine.url)
        try:
            absent = await run_on(self.engine, missing)
            triggered = set(await triggered_tables_async(self.engine)) if self.triggers else set()
            if partitions and not absent and self.engine.dialect.name in ("postgresql", "sqlite"):
                await check_partitions_async(self.engine, partitions)
        except ConfigurationError:
            raise
        except Exception as exc:
            log.warning("cannot check freshkeep's tables in %s yet: %s", where, exc)
            return
        if absent:
            raise ConfigurationError(
                f"freshkeep's tables are missing in {where}: run `freshkeep migrate --db "
                f"'{where}'` (or await SQLAlchemyRevisions(engine).create_table())"
            )
        lacking = [t for t in self.triggers if t.rsplit(".", 1)[-1] not in triggered]
        if lacking:
            raise ConfigurationError(
                f"the change-capture triggers are missing on {', '.join(lacking)} in {where}: "
                f"run `freshkeep migrate --db '{where}' --triggers {','.join(lacking)}`"
            )

    async def known_sources(self) -> frozenset[str]:
        """The ``table:`` sources of the database's tables and views (freshkeep's own left
        out) and the watermark sources: what a view may read.

        Every schema's tables are listed as ``table:schema.name``; those a bare name reaches
        (the default schema, PostgreSQL's ``search_path``) as ``table:name`` too.
        """

        def tables(conn: Connection) -> set[str]:
            inspector = inspect(conn)
            default = inspector.default_schema_name
            reached: set[str | None] = {None, default}
            if conn.dialect.name == "postgresql":
                rows = conn.exec_driver_sql("SELECT unnest(current_schemas(false))")
                reached |= {str(r[0]) for r in rows}
            found: set[str] = set()
            for schema in inspector.get_schema_names():
                if schema in ("information_schema", "pg_catalog") or schema.startswith("pg_"):
                    continue
                names = [
                    *inspector.get_table_names(schema=schema),
                    *inspector.get_view_names(schema=schema),
                ]
                for name in names:
                    if name.startswith("freshkeep_"):
                        continue
                    found.add(f"table:{schema}.{name}")
                    if schema in reached:
                        found.add(f"table:{name}")
            return found

        found = await run_on(self.engine, tables)
        return frozenset(found | set(self.watermarks))

    def close(self) -> None:
        """Release the connection of the SQLite data version, if any."""
        if self._version is not None:
            self._version.close()

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
        return await run_on(self.engine, lambda conn: bump_counters(conn, srcs), write=True)

    async def create_table(self) -> None:
        """Create freshkeep's tables (of :data:`~freshkeep.sql.schema.metadata`) that do not
        exist. ``freshkeep migrate`` does the same with versioned migrations."""
        await run_on(self.engine, metadata.create_all, write=True)


__all__ = ["DataVersion", "SQLAlchemyRevisions", "Watermark", "bump_counters", "table_source"]
