"""Processing state in the ``freshkeep_processing_state`` table, through SQLAlchemy.

The table belongs to :data:`freshkeep.integrations.sqlalchemy.metadata` (created by
``metadata.create_all`` and by migration ``0003``). A run reads a processor's rows in one
query and writes its marks in batched upserts (one transaction per batch).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import orjson
from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    Float,
    Integer,
    String,
    Table,
    Text,
    delete,
    select,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from freshkeep.exceptions import ConfigurationError, StoreError
from freshkeep.integrations.sqlalchemy import metadata, run_on, upsert_rows
from freshkeep.processing._types import ItemState

T = TypeVar("T")

PROCESSING_STATE_TABLE = "freshkeep_processing_state"

processing_state_table = Table(
    PROCESSING_STATE_TABLE,
    metadata,
    Column("processor", String(255), primary_key=True),
    Column("item", String(1024), primary_key=True),
    Column("mtime_ns", BigInteger, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("content_hash", String(128), nullable=True),
    Column("processed_at", Float, nullable=True),
    Column("counts", Text, nullable=False),
    Column("last_error", Text, nullable=True),
    Column("attempts", Integer, nullable=False),
    Column("retry_at", Float, nullable=True),
)
"""One row per (processor, item)."""

_VALUES = ("mtime_ns", "size", "content_hash", "processed_at", "counts", "last_error")
_UPDATED = (*_VALUES, "attempts", "retry_at")


def _row(s: ItemState) -> dict[str, Any]:
    return {
        "processor": s.processor,
        "item": s.key,
        "mtime_ns": s.mtime_ns,
        "size": s.size,
        "content_hash": s.content_hash,
        "processed_at": s.processed_at,
        "counts": orjson.dumps(dict(s.counts), option=orjson.OPT_SORT_KEYS).decode(),
        "last_error": s.last_error,
        "attempts": s.attempts,
        "retry_at": s.retry_at,
    }


def _states(rows: Iterable[Any]) -> dict[str, ItemState]:
    # Rows unpacked as tuples: attribute access per column costs more than the query.
    return {
        key: ItemState(p, key, mtime, size, digest, at, orjson.loads(counts), err, n, retry)
        for p, key, mtime, size, digest, at, counts, err, n, retry in rows
    }


class SQLProcessingState:
    """A :class:`~freshkeep.processing.ProcessingStateStore` in a SQL table (sync or async
    engine). Driver errors are raised as :class:`~freshkeep.exceptions.StoreError`."""

    def __init__(self, engine: AsyncEngine | Engine) -> None:
        if not isinstance(engine, AsyncEngine | Engine):
            raise ConfigurationError(f"expected a SQLAlchemy Engine or AsyncEngine, not {engine!r}")
        self.engine = engine

    async def create_table(self) -> None:
        """Create freshkeep's tables (this one included) if they do not exist."""
        await self._run(lambda conn: metadata.create_all(conn), write=True)

    async def load(self, processor: str) -> dict[str, ItemState]:
        """Every state of ``processor``, by item key (one query)."""
        t = processing_state_table
        cols = [t.c.processor, t.c.item, *(t.c[c] for c in _UPDATED)]
        query = select(*cols).where(t.c.processor == processor)
        return await self._run(lambda conn: _states(conn.execute(query)))

    async def save(self, states: Sequence[ItemState]) -> None:
        """Upsert ``states`` in one transaction."""
        rows = [_row(s) for s in states]
        if rows:
            await self._run(
                lambda conn: upsert_rows(conn, processing_state_table, rows), write=True
            )

    async def delete(self, processor: str, keys: Iterable[str]) -> None:
        """Forget the states of ``keys`` of ``processor``."""
        t = processing_state_table
        stmt = delete(t).where(t.c.processor == processor, t.c.item.in_(list(keys)))
        await self._run(lambda conn: conn.execute(stmt), write=True)

    async def _run(self, work: Callable[[Connection], T], *, write: bool = False) -> T:
        try:
            return await run_on(self.engine, work, write=write)
        except Exception as exc:
            raise StoreError(f"SQL processing state failed: {exc}") from exc
        with self.engine.connect() as conn:
            return work(conn)


__all__ = ["PROCESSING_STATE_TABLE", "SQLProcessingState", "processing_state_table"]
