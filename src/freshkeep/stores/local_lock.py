"""Locks held in this process: the embedded default (one instance, SQLite)."""

from __future__ import annotations

import secrets

from freshkeep.core.clock import SYSTEM_CLOCK, Clock
from freshkeep.exceptions import ConfigurationError
from freshkeep.ports import Lock


class LocalLock(Lock):
    """Named leases held in this process (by tasks of one event loop), on ``clock``.

    A lease expires ``lease`` seconds after it was taken or extended: another holder may then
    take the lock, and the old token no longer releases or extends it.
    """

    def __init__(self, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.clock = clock
        self.held: dict[str, tuple[str, float]] = {}
        """Held locks: name -> (token, monotonic expiry)."""

    def _live(self, name: str) -> tuple[str, float] | None:
        found = self.held.get(name)
        if found is not None and found[1] <= self.clock.monotonic():
            del self.held[name]
            return None
        return found

    async def acquire(self, name: str, lease: float) -> str | None:
        """Take ``name`` for ``lease`` seconds unless a live lease holds it."""
        _check_lease(lease)
        if self._live(name) is not None:
            return None
        token = secrets.token_hex(8)
        self.held[name] = (token, self.clock.monotonic() + lease)
        return token

    async def release(self, name: str, token: str) -> bool:
        """Release ``name`` if ``token`` holds it."""
        found = self._live(name)
        if found is None or found[0] != token:
            return False
        del self.held[name]
        return True

    async def extend(self, name: str, token: str, lease: float) -> bool:
        """Renew ``name`` for ``lease`` seconds if ``token`` holds it."""
        _check_lease(lease)
        found = self._live(name)
        if found is None or found[0] != token:
            return False
        self.held[name] = (token, self.clock.monotonic() + lease)
        return True


def _check_lease(lease: float) -> None:
    if not lease > 0:
        raise ConfigurationError(f"a lease must be > 0 seconds, not {lease!r}")


__all__ = ["LocalLock"]
