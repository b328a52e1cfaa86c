"""The lock port: named leases, single-flight of work across tasks, processes or instances.

One contract for every use (a view's cross-instance build, a processor's run, a scheduled
job): :meth:`Lock.acquire` takes a lease and answers a token, :meth:`Lock.release` and
:meth:`Lock.extend` act only while that token holds it, and :meth:`Lock.hold` wraps the three
in an ``async with`` that raises :class:`~freshkeep.exceptions.LockBusy` when the lock is held
and renews the lease while its body runs.

A lease can expire while its holder still works (a long pause), so a lock alone does not
fence: a build is stored with the store's compare-and-set, which never replaces an entry built
from newer revisions, and a late holder cannot overwrite a newer build. The lock saves
duplicate work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from typing import ClassVar

from freshkeep.exceptions import FreshkeepError, LockBusy

log = logging.getLogger("freshkeep.lock")


class Lock(ABC):
    """Named, lease-based, non-blocking locks with tokens.

    ``leases_expire``: whether a lease ends by itself after ``lease`` seconds (Redis, local).
    A lock that is held for as long as its holder lives (a PostgreSQL session advisory lock,
    released when the holder's connection closes) says ``False``.
    """

    leases_expire: ClassVar[bool] = True

    @abstractmethod
    async def acquire(self, name: str, lease: float) -> str | None:
        """Take ``name`` for ``lease`` seconds; return its token, or ``None`` if it is held.
        Raises a :class:`~freshkeep.exceptions.FreshkeepError` (e.g. ``StoreError``) when
        nobody can tell, so that a caller can tell "held" from "unknown"."""

    @abstractmethod
    async def release(self, name: str, token: str) -> bool:
        """Release ``name`` if ``token`` still holds it; return whether it did."""

    @abstractmethod
    async def extend(self, name: str, token: str, lease: float) -> bool:
        """Renew the lease of ``name`` to ``lease`` seconds from now if ``token`` still holds
        it; return whether it did."""

    async def aclose(self) -> None:
        """Release what the lock owns (connections); the base owns nothing."""
        return None

    @contextlib.asynccontextmanager
    async def hold(self, name: str, lease: float = 60.0) -> AsyncIterator[str]:
        """Hold ``name`` for the ``async with`` body and yield the token; raise
        :class:`~freshkeep.exceptions.LockBusy` when it is held.

        The lease is renewed every ``lease / 3`` seconds while the body runs; the lock is
        released in ``finally`` (an exception in the body never leaves it taken; a release
        that fails is logged, the lease then ends by itself).
        """
        token = await self.acquire(name, lease)
        if token is None:
            raise LockBusy(f"{name!r} is held", name=name)
        renew = asyncio.ensure_future(self._renew(name, token, lease))
        try:
            yield token
        finally:
            renew.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renew
            try:
                await self.release(name, token)
            except FreshkeepError as exc:
                log.warning("lock %r: release failed (the lease ends by itself): %s", name, exc)

    async def _renew(self, name: str, token: str, lease: float) -> None:
        while True:
            await asyncio.sleep(lease / 3)
            try:
                if not await self.extend(name, token, lease):
                    log.warning("lock %r: the lease was lost while held", name)
                    return
            except FreshkeepError as exc:
                log.warning("lock %r: renewing the lease failed: %s", name, exc)


__all__ = ["Lock"]
