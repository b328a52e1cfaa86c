"""A :class:`~freshkeep.notify.StateStore` in a SQL table, through SQLAlchemy (sync or async).

The table ``freshkeep_notify_state(notifier, subject, state, confirmed_at)`` is defined with
freshkeep's other tables in :mod:`freshkeep.sql.schema` (migration ``0002`` creates it, and so
does :meth:`SQLAlchemyStateStore.create_table`). States are canonical JSON text; nothing is
pickled.
"""

from __future__ import annotations

from freshkeep.exceptions import missing_extra
from freshkeep.ports import StateStore

try:
    from sqlalchemy import delete, select
except ImportError as exc:  # pragma: no cover - exercised by the no-extras import test
    raise missing_extra("sqlalchemy", "sqlalchemy") from exc

from freshkeep.sql.schema import NOTIFY_STATE_TABLE, notify_state_table
from freshkeep.sql.state import SQLStateStore, upsert_rows


class SQLAlchemyStateStore(SQLStateStore, StateStore):
    """Confirmed notifier states in the ``freshkeep_notify_state`` table.

    Errors of the driver are raised as :class:`~freshkeep.exceptions.StoreError`.
    """

    what = "SQL state store"

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


__all__ = ["NOTIFY_STATE_TABLE", "SQLAlchemyStateStore", "notify_state_table"]
