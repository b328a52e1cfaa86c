"""Per-processor locks: non-blocking, released in ``finally``, optionally across instances.

- :class:`LocalLocks`: in this process (the embedded mode; SQLite).
- :class:`PostgresLocks`: a session-level ``pg_try_advisory_lock`` held on a dedicated
  connection for the duration of the run. A crashed holder's connection closes and PostgreSQL
  releases its lock, so nothing stays blocked.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

from freshkeep.exceptions import ProcessorBusy


class Locks(Protocol):
    """Named non-blocking locks."""

    async def acquire(self, name: str) -> object | None:
        """Take ``name``; return a handle to release it with, or ``None`` if it is held."""
        ...

    async def release(self, name: str, handle: object) -> None:
        """Release ``name`` taken with ``handle`` (never raises)."""
        ...


class LocalLocks:
    """Locks held in this process."""

    def __init__(self) -> None:
        self.held: set[str] = set()

    async def acquire(self, name: str) -> object | None:
        """Take ``name`` unless this process holds it."""
        if name in self.held:
            return None
        self.held.add(name)
        return name

    async def release(self, name: str, handle: object) -> None:
        """Release ``name``."""
        self.held.discard(name)


def advisory_key(name: str) -> int:
    """The signed 64-bit PostgreSQL advisory lock key of the lock ``name``."""
    digest = hashlib.blake2b(f"freshkeep:lock:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class PostgresLocks:
    """Locks across every instance on one PostgreSQL database (``engine``: an ``AsyncEngine``).

    Each held lock keeps one pooled connection checked out; a lock held in this process is
    refused without asking the server.
    """

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self._local = LocalLocks()

    async def acquire(self, name: str) -> object | None:
        """Take ``name`` in this process, then on the server; ``None`` if either is held."""
        from sqlalchemy import text

        if await self._local.acquire(name) is None:
            return None
        conn = None
        try:
            conn = await self.engine.connect()
            query = text("SELECT pg_try_advisory_lock(:key)")
            taken = bool(await conn.scalar(query, {"key": advisory_key(name)}))
            await conn.commit()  # a session-level lock outlives the transaction
        except BaseException:
            await self._local.release(name, name)
            if conn is not None:
                await conn.close()
            raise
        if not taken:
            await conn.close()
            await self._local.release(name, name)
            return None
        handle: object = conn
        return handle

    async def release(self, name: str, handle: object) -> None:
        """Unlock on the server and return the connection; a connection that cannot unlock is
        discarded (closing it releases the lock)."""
        from sqlalchemy import text

        conn: Any = handle
        try:
            await conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": advisory_key(name)})
            await conn.commit()
        except Exception:
            try:
                await conn.invalidate()
            except Exception:
                pass
        finally:
            try:
                await conn.close()
            finally:
                await self._local.release(name, name)


@asynccontextmanager
async def hold(locks: Locks, name: str) -> AsyncIterator[None]:
    """Hold ``name`` for the ``async with`` body; raise :class:`ProcessorBusy` if it is held.

    The lock is released in ``finally``: an exception in the body never leaves it taken.
    """
    handle = await locks.acquire(name)
    if handle is None:
        raise ProcessorBusy(f"{name!r} is already running", processor=name)
    try:
        yield
    finally:
        await locks.release(name, handle)
