"""The artifact index: two SQL tables, and the set-based statements of builds and GC.

- ``freshkeep_artifacts``: one row per (cache, key): the object it serves, when it expires,
  and how it was built.
- ``freshkeep_artifact_objects``: one row per (cache, object id): the objects the cache has
  stored, and ``touched_at``, the last time a build used the object. GC deletes an object only
  through this table (see :meth:`ArtifactIndex.collect_objects`).

Both are defined in :mod:`freshkeep.sql.schema`; migration ``0005`` creates
them. Every statement works on PostgreSQL and SQLite.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from freshkeep.exceptions import ConfigurationError, StoreError, missing_extra

try:
    from sqlalchemy import (
        and_,
        delete,
        exists,
        func,
        select,
        tuple_,
        update,
    )
    from sqlalchemy.dialects import postgresql, sqlite
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
except ImportError as exc:  # pragma: no cover - exercised by the no-extras import test
    raise missing_extra("artifacts", "sqlalchemy") from exc

from freshkeep.sql.engine import writer_engine
from freshkeep.sql.schema import (
    ARTIFACT_OBJECTS_TABLE,
    ARTIFACTS_TABLE,
    artifact_objects_table,
    artifacts_table,
    metadata,
)
from freshkeep.sql.state import upsert_rows

_PARAMS = 400  # ids per IN (...) list: within SQLite's bound parameters


@dataclass(frozen=True, slots=True)
class IndexRow:
    """A row of ``freshkeep_artifacts``."""

    key: str
    artifact_id: str
    size: int
    content_type: str | None
    filename: str | None
    created_at: float
    expires_at: float
    build_seconds: float
    attempts: int
    last_error: str | None


_COLUMNS = tuple(IndexRow.__slots__)


@dataclass(frozen=True, slots=True)
class Backlog:
    """What :meth:`ArtifactIndex.backlog` counts."""

    stale_rows: int
    collectable_rows: int
    collectable_objects: int
    oldest_collectable: float | None


class ArtifactIndex:
    """The index of artifact caches in a database reached through an async SQLAlchemy engine.
    Driver errors are raised as :class:`~freshkeep.exceptions.StoreError`."""

    def __init__(self, engine: AsyncEngine) -> None:
        if not isinstance(engine, AsyncEngine):
            raise ConfigurationError(
                f"an artifact index needs a SQLAlchemy AsyncEngine, not {engine!r}"
            )
        self.engine = engine
        self._tx_engine = writer_engine(engine)  # writing transactions: BEGIN IMMEDIATE

    async def create_tables(self) -> None:
        """Create the two artifact tables if they do not exist."""
        tables = [artifacts_table, artifact_objects_table]
        async with self._begin("create tables") as conn:
            await conn.run_sync(lambda c: metadata.create_all(c, tables=tables))

    # -- reads -----------------------------------------------------------------------------

    async def row(self, cache: str, key: str) -> IndexRow | None:
        """The row of ``key``, or ``None``."""
        t = artifacts_table
        query = select(*(t.c[c] for c in _COLUMNS)).where(t.c.cache == cache, t.c.key == key)
        try:
            async with self.engine.connect() as conn:
                found = (await conn.execute(query)).first()
        except Exception as exc:
            raise StoreError(f"artifact index: cannot read {key!r}: {exc}") from exc
        return None if found is None else IndexRow(*found)

    async def fresh_keys(self, cache: str, keys: Sequence[str], now: float) -> set[str]:
        """Which of ``keys`` have a row fresh at ``now`` (one query per 400 keys)."""
        t = artifacts_table
        out: set[str] = set()
        try:
            async with self.engine.connect() as conn:
                for i in range(0, len(keys), _PARAMS):
                    part = list(keys[i : i + _PARAMS])
                    query = select(t.c.key).where(  # "+ 0": by primary key, not expiry
                        t.c.cache == cache, t.c.key.in_(part), t.c.expires_at + 0 > now
                    )
                    out.update(k for (k,) in await conn.execute(query))
        except Exception as exc:
            raise StoreError(f"artifact index: cannot read fresh keys: {exc}") from exc
        return out

    async def backlog(self, cache: str, now: float, stale: float, grace: float) -> Backlog:
        """Counts for health: rows expired but kept (stale), rows and objects GC may delete."""
        t, o = artifacts_table, artifact_objects_table
        cut = now - stale
        stale_rows = select(func.count()).where(
            t.c.cache == cache, t.c.expires_at <= now, t.c.expires_at > cut
        )
        rows = select(func.count(), func.min(t.c.expires_at)).where(
            t.c.cache == cache, t.c.expires_at <= cut
        )
        objects = select(func.count()).where(
            o.c.cache == cache, o.c.touched_at < now - grace, ~_referenced(cache)
        )
        try:
            async with self.engine.connect() as conn:
                n_stale = int((await conn.execute(stale_rows)).scalar_one())
                n_rows, oldest = (await conn.execute(rows)).one()
                n_objects = int((await conn.execute(objects)).scalar_one())
        except Exception as exc:
            raise StoreError(f"artifact index: cannot count the backlog: {exc}") from exc
        return Backlog(n_stale, int(n_rows), n_objects, None if oldest is None else float(oldest))

    # -- the build protocol -----------------------------------------------------------------

    async def touch_object(self, cache: str, artifact_id: str, size: int, now: float) -> None:
        """Step 1 of a build, before the object is written: record the object (or refresh its
        ``touched_at``), so that GC leaves it alone for the grace period. Waits while a GC
        transaction is deleting it."""
        o = artifact_objects_table
        row = {
            "cache": cache,
            "artifact_id": artifact_id,
            "size": size,
            "created_at": now,
            "touched_at": now,
        }
        async with self._begin(f"record object {artifact_id}") as conn:
            dialect = conn.dialect.name
            if dialect in ("postgresql", "sqlite"):
                ins = (postgresql if dialect == "postgresql" else sqlite).insert(o)
                stmt = ins.values(row).on_conflict_do_update(
                    index_elements=[o.c.cache, o.c.artifact_id],
                    set_={"touched_at": ins.excluded.touched_at},
                )
                await conn.execute(stmt)
                return
            res = await conn.execute(
                update(o)
                .where(o.c.cache == cache, o.c.artifact_id == artifact_id)
                .values(touched_at=now)
            )
            if res.rowcount == 0:
                await conn.execute(o.insert().values(row))

    async def commit_build(self, cache: str, row: IndexRow, now: float) -> bool:
        """Step 3 of a build, after the object is written: in one transaction, refresh the
        object's ``touched_at`` and upsert the key's row. Returns ``False`` (and writes
        nothing) when GC deleted the object row meanwhile: the caller starts over."""
        o = artifact_objects_table
        values = {c: getattr(row, c) for c in _COLUMNS}
        values["cache"] = cache
        try:
            async with self._begin(f"write row {row.key!r}") as conn:
                res = await conn.execute(
                    update(o)
                    .where(o.c.cache == cache, o.c.artifact_id == row.artifact_id)
                    .values(touched_at=now)
                )
                if res.rowcount != 1:
                    raise _ObjectGone
                await conn.run_sync(lambda c: upsert_rows(c, artifacts_table, [values]))
        except _ObjectGone:
            return False
        return True

    # -- GC --------------------------------------------------------------------------------

    async def delete_rows(self, cache: str, cutoff: float, batch: int) -> tuple[int, int]:
        """Delete rows that expired at or before ``cutoff``, ``batch`` at a time: one query
        finds the batch's last row in ``(expires_at, key)`` order, one ``DELETE`` (in a
        transaction of its own) takes the range up to it through the expiry index. A row
        rebuilt meanwhile has a later expiry and stays. Returns (rows deleted, statements)."""
        total, _, statements = await self._delete_expired(cache, cutoff, batch, None)
        return total, statements

    async def delete_scoped_rows(
        self, cache: str, prefix: str, cutoff: float, batch: int
    ) -> tuple[int, list[str], int]:
        """:meth:`delete_rows` for the keys that start with ``prefix`` (compared exactly, case
        included). Returns (rows deleted, the distinct object ids those rows referenced,
        statements): the candidates of :meth:`collect_listed_objects`."""
        return await self._delete_expired(cache, cutoff, batch, prefix)

    async def _delete_expired(
        self, cache: str, cutoff: float, batch: int, prefix: str | None
    ) -> tuple[int, list[str], int]:
        t = artifacts_table
        scope = [t.c.cache == cache]
        if prefix is not None:
            scope.append(key_prefix(prefix))
        ordered = tuple_(t.c.expires_at, t.c.key)
        last = (
            select(t.c.expires_at, t.c.key)
            .where(*scope, t.c.expires_at <= cutoff)
            .order_by(t.c.expires_at, t.c.key)
            .offset(batch - 1)
            .limit(1)
        )
        total = statements = 0
        ids: dict[str, None] = {}
        while True:
            try:
                async with self.engine.connect() as conn:
                    bound = (await conn.execute(last)).first()
            except Exception as exc:
                raise StoreError(f"artifact index: cannot find expired rows: {exc}") from exc
            statements += 1
            if bound is None:  # fewer than a batch left: all of them
                where = t.c.expires_at <= cutoff
            else:
                where = and_(t.c.expires_at <= bound[0], ordered <= tuple_(bound[0], bound[1]))
            stmt = delete(t).where(*scope, where)
            async with self._begin("delete expired rows") as conn:
                if prefix is None:
                    total += max((await conn.execute(stmt)).rowcount, 0)
                else:  # the objects these rows referenced: what a scoped GC may collect
                    taken = (await conn.execute(stmt.returning(t.c.artifact_id))).all()
                    total += len(taken)
                    ids.update((i, None) for (i,) in taken)
            statements += 1
            if bound is None:
                return total, list(ids), statements

    async def collect_objects(
        self,
        cache: str,
        cutoff: float,
        batch: int,
        remove: Callable[[list[str]], Awaitable[None]],
    ) -> tuple[int, int]:
        """Delete objects no row references and no build touched since ``cutoff``.

        Per batch: one query picks candidates; then, in one transaction, ``DELETE … RETURNING``
        takes those still unreferenced and untouched (it checks both again, on the rows it
        locks), ``remove(ids)`` deletes the stored objects, and the transaction commits. A
        build that touches one of these objects meanwhile waits for the commit, finds no row,
        records the object again and writes it anew; if ``remove`` fails, the rows come back
        with the rollback and the next GC tries again. Returns (objects deleted, statements).
        """
        o = artifact_objects_table
        pick = (
            select(o.c.artifact_id)
            .where(o.c.cache == cache, o.c.touched_at < cutoff, ~_referenced(cache))
            .limit(batch)
        )
        total = statements = 0
        while True:
            candidates = await self._select(pick, "find unreferenced objects")
            statements += 1
            for part in self._chunks(candidates):
                total += await self._delete_unreferenced(cache, part, cutoff, remove)
                statements += 1
            if len(candidates) < batch:
                return total, statements

    async def collect_listed_objects(
        self,
        cache: str,
        ids: Sequence[str],
        cutoff: float,
        batch: int,
        remove: Callable[[list[str]], Awaitable[None]],
    ) -> tuple[int, int]:
        """:meth:`collect_objects` for the objects ``ids`` only (no query picks candidates):
        those of them that no row references and no build touched since ``cutoff`` are
        deleted, ``batch`` ids per transaction, under the same locked checks. Returns
        (objects deleted, statements)."""
        total = statements = 0
        for i in range(0, len(ids), batch):
            for part in self._chunks(list(ids[i : i + batch])):
                total += await self._delete_unreferenced(cache, part, cutoff, remove)
                statements += 1
        return total, statements

    async def _delete_unreferenced(
        self,
        cache: str,
        part: list[str],
        cutoff: float,
        remove: Callable[[list[str]], Awaitable[None]],
    ) -> int:
        """One transaction: delete the object rows of ``part`` still unreferenced and
        untouched since ``cutoff`` (``DELETE … RETURNING``), then the stored objects, then
        commit. The number deleted."""
        o = artifact_objects_table
        # PostgreSQL re-evaluates touched_at on the row version a concurrent build committed
        # (the DELETE waits for its lock), so a just-touched object stays.
        # "+ 0": look the ids up by primary key, not by a range of touched_at.
        stmt = (
            delete(o)
            .where(
                o.c.cache == cache,
                o.c.artifact_id.in_(part),
                o.c.touched_at + 0 < cutoff,
                ~_referenced(cache),
            )
            .returning(o.c.artifact_id)
        )
        async with self._begin("delete unreferenced objects") as conn:
            ids = [i for (i,) in await conn.execute(stmt)]
            if ids:
                await remove(ids)
        return len(ids)

    async def _select(self, query: Any, what: str) -> list[str]:
        try:
            async with self.engine.connect() as conn:
                return [v for (v,) in await conn.execute(query)]
        except Exception as exc:
            raise StoreError(f"artifact index: cannot {what}: {exc}") from exc

    def _chunks(self, values: list[str]) -> list[list[str]]:
        step = 500 if self.engine.dialect.name == "sqlite" else max(len(values), 1)
        return [values[i : i + step] for i in range(0, len(values), step)]

    async def adopt_objects(
        self, cache: str, found: Iterable[tuple[str, int, float]]
    ) -> tuple[int, int]:
        """Record stored objects the table does not know (``(id, size, mtime)``), with
        ``touched_at`` = their modification time, so that :meth:`collect_objects` deletes them
        once they are older than the grace period. Known objects are left alone (``INSERT …
        ON CONFLICT DO NOTHING RETURNING``, 1,000 rows per transaction).
        Returns (objects adopted, statements)."""
        rows = [
            {"cache": cache, "artifact_id": oid, "size": size, "created_at": t, "touched_at": t}
            for oid, size, t in found
        ]
        step = 1000
        adopted = statements = 0
        for i in range(0, len(rows), step):
            async with self._begin("adopt stored objects") as conn:
                # executemany: one compiled statement, sent as multi-row INSERTs by SQLAlchemy
                result = await conn.execute(_insert_ignore(conn), rows[i : i + step])
                adopted += len(result.all())
            statements += 1
        return adopted, statements

    def _begin(self, what: str) -> _Transaction:
        return _Transaction(self._tx_engine, what)


class _ObjectGone(Exception):
    """Rolls back a build's row: GC deleted its object meanwhile."""


def key_prefix(prefix: str) -> Any:
    """The condition "the row's key starts with ``prefix``", exact on every database: SQLite's
    ``LIKE`` ignores the case of ASCII letters, and ``%`` or ``_`` in a prefix would be
    wildcards, so the key's first characters are compared instead."""
    t = artifacts_table
    return func.substr(t.c.key, 1, len(prefix)) == prefix


def _referenced(cache: str) -> Any:
    t, o = artifacts_table, artifact_objects_table
    return exists().where(and_(t.c.cache == cache, t.c.artifact_id == o.c.artifact_id))


def _insert_ignore(conn: AsyncConnection) -> Any:
    o = artifact_objects_table
    dialect = conn.dialect.name
    if dialect in ("postgresql", "sqlite"):
        ins = (postgresql if dialect == "postgresql" else sqlite).insert(o)
        return ins.on_conflict_do_nothing(index_elements=[o.c.cache, o.c.artifact_id]).returning(
            o.c.artifact_id
        )
    return o.insert().returning(o.c.artifact_id)  # pragma: no cover - a conflict raises


class _Transaction:
    """``async with``: a transaction on the engine; driver errors become ``StoreError``."""

    def __init__(self, engine: AsyncEngine, what: str) -> None:
        self._cm = engine.begin()
        self._what = what

    async def __aenter__(self) -> AsyncConnection:
        try:
            return await self._cm.__aenter__()
        except Exception as exc:
            raise StoreError(f"artifact index: cannot {self._what}: {exc}") from exc

    async def __aexit__(self, et: Any, exc: Any, tb: Any) -> None:
        try:
            await self._cm.__aexit__(et, exc, tb)
        except Exception as err:
            if err is exc:
                raise
            raise StoreError(f"artifact index: cannot {self._what}: {err}") from err
        if exc is not None and not isinstance(exc, StoreError) and _is_driver_error(exc):
            raise StoreError(f"artifact index: cannot {self._what}: {exc}") from exc


def _is_driver_error(exc: BaseException) -> bool:
    from sqlalchemy.exc import SQLAlchemyError

    return isinstance(exc, SQLAlchemyError)


__all__ = [
    "ARTIFACTS_TABLE",
    "ARTIFACT_OBJECTS_TABLE",
    "ArtifactIndex",
    "IndexRow",
    "artifact_objects_table",
    "artifacts_table",
]
