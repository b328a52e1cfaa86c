"""A :class:`~freshkeep.notify.StateStore` in a SQL table, through SQLAlchemy (sync or async).

The table ``freshkeep_notify_state(notifier, subject, state, confirmed_at)`` belongs to
:data:`freshkeep.integrations.sqlalchemy.metadata`, so ``metadata.create_all`` (and
:meth:`SQLAlchemyStateStore.create_table`) creates it beside freshkeep's other tables. States
are canonical JSON text; nothing is pickled.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from freshkeep.exceptions import ConfigurationError, StoreError, missing_extra

try:
    from sqlalchemy import (
        Column,
        Connection,
        Engine,
        Float,
        String,
        Table,
        Text,
        delete,
        select,
    )
    from sqlalchemy.ext.asyncio import AsyncEngine
except ImportError as exc:  # pragma: no cover - exercised by the no-extras import test
    raise missing_extra("sqlalchemy", "sqlalchemy") from exc

from freshkeep.integrations.sqlalchemy import metadata, run_on, upsert_rows

T = TypeVar("T")

NOTIFY_STATE_TABLE = "freshkeep_notify_state"

notify_state_table = Table(
    NOTIFY_STATE_TABLE,
    metadata,
    Column("notifier", String(255), primary_key=True),
    Column("subject", String(255), primary_key=True),
    Column("state", Text, nullable=False),
    Column("confirmed_at", Float, nullable=False),
)
"""One row per (notifier, subject): its last confirmed state, as JSON text."""


class SQLAlchemyStateStore:
    """Confirmed notifier states in the ``freshkeep_notify_state`` table.

    Errors of the driver are raised as :class:`~freshkeep.exceptions.StoreError`.
    """

    def __init__(self, engine: AsyncEngine | Engine) -> None:
        if not isinstance(engine, AsyncEngine | Engine):
            raise ConfigurationError(f"expected a SQLAlchemy Engine or AsyncEngine, not {engine!r}")
        self.engine = engine

    async def create_table(self) -> None:
        """Create freshkeep's tables (this one included) if they do not exist."""
        await self._run(lambda conn: metadata.create_all(conn), write=True)

    async def get(self, notifier: str, subject: str) -> bytes | None:
        """The confirmed state of ``subject``, or ``None``."""
        t = notify_state_table
        query = select(t.c.state).where(t.c.notifier == notifier, t.c.subject == subject)
        found = await self._run(lambda conn: conn.execute(query).scalar_one_or_none())
        return None if found is None else str(found).encode()

    async def get_all(self, notifier: str) -> dict[str, bytes]:
        """Every confirmed state of ``notifier``."""
        t = notify_state_table
        query = select(t.c.subject, t.c.state).where(t.c.notifier == notifier)
        rows = await self._run(lambda conn: list(conn.execute(query)))
        return {r.subject: str(r.state).encode() for r in rows}

    async def set(self, notifier: str, subject: str, state: bytes, confirmed_at: float) -> None:
        """Record the confirmed state of ``subject`` (an upsert, in its own transaction)."""
        row = {
            "notifier": notifier,
            "subject": subject,
            "state": state.decode(),
            "confirmed_at": confirmed_at,
        }
        await self._run(lambda conn: upsert_rows(conn, notify_state_table, [row]), write=True)

    async def delete(self, notifier: str, subject: str) -> None:
        """Forget the confirmed state of ``subject``."""
        t = notify_state_table
        stmt = delete(t).where(t.c.notifier == notifier, t.c.subject == subject)
        await self._run(lambda conn: conn.execute(stmt), write=True)

    async def _run(self, work: Callable[[Connection], T], *, write: bool = False) -> T:
        try:
            return await run_on(self.engine, work, write=write)
        except Exception as exc:
            raise StoreError(f"SQL state store failed: {exc}") from exc
        with self.engine.connect() as conn:
            return work(conn)
