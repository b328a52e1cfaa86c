"""Processing state in the ``freshkeep_processing_state`` table, through SQLAlchemy.

The table is defined with freshkeep's other tables in :mod:`freshkeep.sql.schema` (migration
``0003`` creates it). A run reads a processor's rows in one query and writes its marks in
batched upserts (one transaction per batch).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from freshkeep.exceptions import missing_extra
from freshkeep.ports import ItemState, ProcessingStateStore

try:
    from sqlalchemy import delete, select
except ImportError as exc:  # pragma: no cover - exercised by the no-extras import test
    raise missing_extra("sqlalchemy", "sqlalchemy") from exc

from freshkeep.sql.schema import PROCESSING_STATE_TABLE, processing_state_table
from freshkeep.sql.state import SQLStateStore, upsert_rows

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


class SQLProcessingState(SQLStateStore, ProcessingStateStore):
    """A :class:`~freshkeep.processing.ProcessingStateStore` in a SQL table (sync or async
    engine). Driver errors are raised as :class:`~freshkeep.exceptions.StoreError`."""

    what = "SQL processing state"

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


__all__ = ["PROCESSING_STATE_TABLE", "SQLProcessingState", "processing_state_table"]
