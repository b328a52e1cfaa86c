"""Processing state in the ``freshkeep_processing_state`` table, and the record of runs
started by someone in ``freshkeep_processing_runs``, through SQLAlchemy.

The tables are defined with freshkeep's other tables in :mod:`freshkeep.sql.schema`
(migrations ``0003`` and ``0006`` create them). A run reads a processor's rows in one query and
writes its marks in batched upserts (one transaction per batch).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

import orjson

from freshkeep.core.clock import SYSTEM_CLOCK, Clock
from freshkeep.exceptions import missing_extra
from freshkeep.ports import ItemState, ProcessingStateStore
from freshkeep.processing._history import DEFAULT_KEEP, RunHistory, RunRecord, check_keep

try:
    from sqlalchemy import Connection, Engine, delete, insert, select
    from sqlalchemy.ext.asyncio import AsyncEngine
except ImportError as exc:  # pragma: no cover - exercised by the no-extras import test
    raise missing_extra("sqlalchemy", "sqlalchemy") from exc

from freshkeep.sql.schema import (
    PROCESSING_RUNS_TABLE,
    PROCESSING_STATE_TABLE,
    processing_runs_table,
    processing_state_table,
)
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


_RECORD_FIELDS = (
    "pipeline",
    "processor",
    "principal",
    "via",
    "operator",
    "outcome",
    "started_at",
    "finished_at",
    "scanned",
    "skipped",
    "unchanged",
    "deferred",
    "processed",
    "failed",
    "error",
)


class SQLRunHistory(SQLStateStore, RunHistory):
    """A :class:`~freshkeep.processing.RunHistory` in ``freshkeep_processing_runs`` (sync or
    async engine): each record is written with the deletion of the records that ended more
    than ``keep`` seconds before it, in one transaction. Driver errors are raised as
    :class:`~freshkeep.exceptions.StoreError`."""

    what = "SQL run history"

    def __init__(
        self,
        engine: AsyncEngine | Engine,
        *,
        keep: float = DEFAULT_KEEP,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        super().__init__(engine)
        self.keep = check_keep(keep)
        self.clock = clock

    async def record(self, record: RunRecord) -> RunRecord:
        """Insert ``record`` and delete the records older than ``keep``, in one transaction."""
        t = processing_runs_table
        row = {f: getattr(record, f) for f in _RECORD_FIELDS}
        cutoff = record.finished_at - self.keep

        def write(conn: Connection) -> int:
            conn.execute(delete(t).where(t.c.finished_at < cutoff))
            key = conn.execute(insert(t).values(row)).inserted_primary_key
            return int(key[0]) if key is not None else 0

        new_id = await self._run(write, write=True)
        return replace(record, id=new_id)

    async def recent(self, processor: str | None = None, *, limit: int = 50) -> list[RunRecord]:
        """The newest records first (one query)."""
        t = processing_runs_table
        query = select(t.c.id, *(t.c[f] for f in _RECORD_FIELDS))
        if processor is not None:
            query = query.where(t.c.processor == processor)
        query = query.order_by(t.c.started_at.desc(), t.c.id.desc()).limit(max(0, limit))

        def read(conn: Connection) -> list[RunRecord]:
            return [
                RunRecord(**dict(zip(_RECORD_FIELDS, rest, strict=True)), id=int(rid))
                for rid, *rest in conn.execute(query)
            ]

        return await self._run(read)

    async def prune(self, now: float | None = None) -> int:
        """Delete the records that ended more than ``keep`` seconds before ``now``."""
        t = processing_runs_table
        cutoff = (self.clock.time() if now is None else now) - self.keep
        stmt = delete(t).where(t.c.finished_at < cutoff)
        return await self._run(lambda conn: int(conn.execute(stmt).rowcount), write=True)


__all__ = [
    "PROCESSING_RUNS_TABLE",
    "PROCESSING_STATE_TABLE",
    "SQLProcessingState",
    "SQLRunHistory",
    "processing_runs_table",
    "processing_state_table",
]
