"""Per-processor locks: the one :class:`~freshkeep.ports.Lock` contract, under the names the
processing API has always used.

- :class:`LocalLocks` (:class:`~freshkeep.stores.local_lock.LocalLock`): in this process (the
  embedded mode; SQLite).
- :class:`PostgresLocks` (:class:`~freshkeep.stores.postgres_lock.PostgresLock`): a
  session-level ``pg_try_advisory_lock`` held on a dedicated connection for the duration of
  the run; a crashed holder's connection closes and PostgreSQL releases its lock.
- :class:`~freshkeep.stores.redis_lock.RedisLock` works as well (a lease renewed while the run
  lasts).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from freshkeep.exceptions import LockBusy, ProcessorBusy
from freshkeep.ports import Lock
from freshkeep.stores.local_lock import LocalLock
from freshkeep.stores.postgres_lock import PostgresLock, advisory_key

Locks = Lock
"""The lock port (the name the processing API had)."""

LocalLocks = LocalLock
PostgresLocks = PostgresLock

RUN_LEASE = 60.0
"""The lease of a processor run's lock, renewed while the run lasts."""


@asynccontextmanager
async def hold(locks: Lock, name: str, lease: float = RUN_LEASE) -> AsyncIterator[None]:
    """Hold ``name`` for the ``async with`` body; raise :class:`ProcessorBusy` if it is held.

    The lock is released in ``finally``: an exception in the body never leaves it taken.
    """
    try:
        async with locks.hold(name, lease):
            yield
    except LockBusy as exc:
        if isinstance(exc, ProcessorBusy) or exc.name != name:
            raise  # raised by the body, not by taking this lock
        raise ProcessorBusy(f"{name!r} is already running", processor=name) from None


__all__ = ["LocalLocks", "Locks", "PostgresLocks", "advisory_key", "hold"]
