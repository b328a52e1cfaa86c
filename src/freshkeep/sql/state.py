"""The base of freshkeep's SQL state stores, and the upsert they share.

A state store keeps a component's durable state in one of freshkeep's tables (notifier states,
processing state): :class:`SQLStateStore` holds the engine (sync or async), creates the tables,
and runs work with driver errors raised as :class:`~freshkeep.exceptions.StoreError`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from freshkeep.exceptions import StoreError, missing_extra

try:
    from sqlalchemy import Connection, Engine, Table, update
    from sqlalchemy.dialects import postgresql, sqlite
    from sqlalchemy.ext.asyncio import AsyncEngine
except ImportError as exc:  # pragma: no cover - exercised by the no-extras import test
    raise missing_extra("sqlalchemy", exc.name or "sqlalchemy") from exc

from freshkeep.sql.engine import check_engine, run_on
from freshkeep.sql.schema import metadata

T = TypeVar("T")


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


class SQLStateStore:
    """A store of component state in one of freshkeep's tables, on a sync or async engine.

    Subclasses set :attr:`what` (named in errors) and run their statements with :meth:`_run`.
    """

    what: ClassVar[str] = "SQL state store"
    """What the store is, in error messages (``"SQL state store failed: …"``)."""

    def __init__(self, engine: AsyncEngine | Engine) -> None:
        self.engine = check_engine(engine)

    async def create_table(self) -> None:
        """Create freshkeep's tables (this store's included) if they do not exist."""
        await self._run(lambda conn: metadata.create_all(conn), write=True)

    async def _run(self, work: Callable[[Connection], T], *, write: bool = False) -> T:
        try:
            return await run_on(self.engine, work, write=write)
        except Exception as exc:
            raise StoreError(f"{self.what} failed: {exc}") from exc


__all__ = ["SQLStateStore", "upsert_rows"]
