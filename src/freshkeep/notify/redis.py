"""A :class:`~freshkeep.notify.StateStore` in Redis: one hash per notifier (``redis`` extra).

Keys: ``<prefix>notify:<notifier>`` maps each subject to its confirmed state (canonical JSON);
``<prefix>notify-at:<notifier>`` maps it to the wall-clock second it was confirmed. Nothing is
pickled.
"""

from __future__ import annotations

from typing import Any, cast

from freshkeep.exceptions import StoreError, missing_extra
from freshkeep.ports import StateStore

try:
    import redis.asyncio as aioredis
except ImportError as exc:  # pragma: no cover - exercised by the no-extras import test
    raise missing_extra("redis", "redis") from exc


class RedisStateStore(StateStore):
    """Confirmed notifier states in Redis hashes under ``prefix`` (default ``freshkeep:``).

    Errors of the client are raised as :class:`~freshkeep.exceptions.StoreError`.
    """

    def __init__(self, client: aioredis.Redis, *, prefix: str = "freshkeep:") -> None:
        self.client = client
        self.prefix = prefix

    def key(self, notifier: str) -> str:
        """The hash of ``notifier``'s states."""
        return f"{self.prefix}notify:{notifier}"

    def _at_key(self, notifier: str) -> str:
        return f"{self.prefix}notify-at:{notifier}"

    async def get(self, notifier: str, subject: str) -> bytes | None:
        """The confirmed state of ``subject``, or ``None``."""
        found = await self._run(self.client.hget(self.key(notifier), subject))
        return None if found is None else _bytes(found)

    async def get_all(self, notifier: str) -> dict[str, bytes]:
        """Every confirmed state of ``notifier``."""
        found = await self._run(self.client.hgetall(self.key(notifier)))
        return {_bytes(k).decode(): _bytes(v) for k, v in cast(dict[Any, Any], found).items()}

    async def set(self, notifier: str, subject: str, state: bytes, confirmed_at: float) -> None:
        """Record the confirmed state of ``subject`` (one MULTI/EXEC)."""
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(self.key(notifier), subject, state)
        pipe.hset(self._at_key(notifier), subject, repr(confirmed_at))
        await self._run(pipe.execute())

    async def delete(self, notifier: str, subject: str) -> None:
        """Forget the confirmed state of ``subject``."""
        pipe = self.client.pipeline(transaction=True)
        pipe.hdel(self.key(notifier), subject)
        pipe.hdel(self._at_key(notifier), subject)
        await self._run(pipe.execute())

    @staticmethod
    async def _run(pending: Any) -> Any:
        try:
            return await pending
        except Exception as exc:
            raise StoreError(f"redis state store failed: {exc!r}") from exc


def _bytes(value: Any) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)
