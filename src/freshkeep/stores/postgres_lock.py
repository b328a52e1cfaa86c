"""Locks across every instance on one PostgreSQL database: session-level advisory locks.

:meth:`PostgresLock.acquire` takes ``pg_try_advisory_lock`` on a connection it keeps checked
out until :meth:`~PostgresLock.release`. The lock lives as long as that session, not for a
lease: a crashed holder's connection closes and PostgreSQL releases its lock, so nothing stays
blocked (``leases_expire = False``; ``lease`` is accepted for the contract and ignored). A lock
held in this process is refused without asking the server.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any, ClassVar

from freshkeep.ports import Lock


def advisory_key(name: str) -> int:
    """The signed 64-bit PostgreSQL advisory lock key of the lock ``name``."""
    digest = hashlib.blake2b(f"freshkeep:lock:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class PostgresLock(Lock):
    """Advisory locks on ``engine`` (an SQLAlchemy ``AsyncEngine`` on PostgreSQL); each held
    lock keeps one pooled connection checked out."""

    leases_expire: ClassVar[bool] = False

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.held: dict[str, tuple[str, Any]] = {}
        """Locks held by this process: name -> (token, connection)."""

    async def acquire(self, name: str, lease: float) -> str | None:
        """Take ``name`` in this process, then on the server; ``None`` if either holds it."""
        from sqlalchemy import text

        if name in self.held:
            return None
        token = secrets.token_hex(8)
        self.held[name] = (token, None)  # reserved while the server is asked
        conn = None
        try:
            conn = await self.engine.connect()
            query = text("SELECT pg_try_advisory_lock(:key)")
            taken = bool(await conn.scalar(query, {"key": advisory_key(name)}))
            await conn.commit()  # a session-level lock outlives the transaction
        except BaseException:
            del self.held[name]
            if conn is not None:
                await conn.close()
            raise
        if not taken:
            del self.held[name]
            await conn.close()
            return None
        self.held[name] = (token, conn)
        return token

    async def release(self, name: str, token: str) -> bool:
        """Unlock on the server and return the connection; a connection that cannot unlock
        is discarded (closing it releases the lock). Never raises."""
        from sqlalchemy import text

        found = self.held.get(name)
        if found is None or found[0] != token or found[1] is None:
            return False
        del self.held[name]
        conn = found[1]
        try:
            await conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": advisory_key(name)})
            await conn.commit()
        except Exception:
            try:
                await conn.invalidate()
            except Exception:
                pass
        finally:
            await conn.close()
        return True

    async def extend(self, name: str, token: str, lease: float) -> bool:
        """Whether ``token`` still holds ``name`` (the session keeps it; nothing to renew)."""
        found = self.held.get(name)
        return found is not None and found[0] == token and found[1] is not None

    async def aclose(self) -> None:
        """Release every lock this process holds."""
        for name, (token, _) in list(self.held.items()):
            await self.release(name, token)


__all__ = ["PostgresLock", "advisory_key"]
