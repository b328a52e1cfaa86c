"""A lease-based lock in Redis: single-flight of builds across instances (``redis`` extra).

:meth:`RedisLock.acquire` is ``SET <prefix><name> <random token> NX PX <lease>``; release and
extend are Lua compare-and-delete / compare-and-expire, so a holder never releases or renews a
lock another holder took after its lease expired.

A lease can expire while its holder is still building (a long pause, a slow builder). The lock
alone therefore does not fence: freshkeep stores a build with the store's compare-and-set
(:meth:`~freshkeep.stores.redis.RedisStore.put`), which never replaces an entry built from
newer revisions, so a late holder cannot overwrite what a newer holder stored. The lock only
saves duplicate work.

Unlike the store, the lock raises :class:`~freshkeep.exceptions.StoreError` when Redis fails:
the caller must tell "someone else holds it" (wait for their build) from "nobody can tell"
(build locally).
"""

from __future__ import annotations

import asyncio
import secrets
from typing import TYPE_CHECKING, Any

from freshkeep.exceptions import ConfigurationError, StoreError
from freshkeep.ports import Lock
from freshkeep.stores.redis import check_client, connect
from freshkeep.stores.redis_client import close, is_cluster

if TYPE_CHECKING:
    from freshkeep.stores.redis_client import AnyRedis

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""


class RedisLock(Lock):
    """Named leases in Redis under ``prefix``; each operation is bounded by ``timeout``.

    ``url_or_client``: a URL (any topology of :mod:`freshkeep.stores.redis_client`; this lock
    owns that client and closes it in :meth:`aclose`) or a ``redis.asyncio.Redis`` /
    ``RedisCluster`` (e.g. a :class:`~freshkeep.stores.redis.RedisStore`'s ``client``).
    """

    def __init__(
        self,
        url_or_client: str | AnyRedis,
        *,
        prefix: str = "freshkeep:lock:",
        timeout: float = 0.25,
    ) -> None:
        if timeout <= 0:
            raise ConfigurationError(f"timeout must be > 0, not {timeout!r}")
        if isinstance(url_or_client, str):
            self.client = connect(url_or_client, timeout=timeout)
            self._owns_client = True
        else:
            check_client(url_or_client)
            self.client = url_or_client
            self._owns_client = False
        if is_cluster(self.client) and ("{" in prefix or "}" in prefix):
            # A lock named after a hash-tagged entry key must hash to the entry's slot.
            raise ConfigurationError(
                f"a lock prefix on a Redis Cluster must hold no '{{' or '}}', not {prefix!r}"
            )
        self.prefix = prefix
        self.timeout = timeout
        self._release = self.client.register_script(_RELEASE)
        self._extend = self.client.register_script(_EXTEND)

    def key(self, name: str) -> str:
        """The Redis key of the lock ``name``."""
        return self.prefix + name

    async def acquire(self, name: str, lease: float) -> str | None:
        """Take ``name`` for ``lease`` seconds; return the token that holds it, or ``None``
        when another holder has it. Raises :class:`~freshkeep.exceptions.StoreError`."""
        token = secrets.token_hex(16)
        taken = await self._run(self.client.set(self.key(name), token, nx=True, px=_ms(lease)))
        return token if taken else None

    async def release(self, name: str, token: str) -> bool:
        """Release ``name`` if ``token`` still holds it; return whether it did. Raises
        :class:`~freshkeep.exceptions.StoreError`."""
        return bool(await self._run(self._release(keys=[self.key(name)], args=[token])))

    async def extend(self, name: str, token: str, lease: float) -> bool:
        """Set the lease of ``name`` to ``lease`` seconds from now if ``token`` still holds
        it; return whether it did. Raises :class:`~freshkeep.exceptions.StoreError`."""
        result = await self._run(self._extend(keys=[self.key(name)], args=[token, _ms(lease)]))
        return bool(result)

    async def aclose(self) -> None:
        """Close the client, if this lock created it."""
        if self._owns_client:
            await close(self.client)

    async def _run(self, pending: Any) -> Any:
        try:
            async with asyncio.timeout(self.timeout):
                return await pending
        except Exception as exc:
            raise StoreError(f"redis lock failed: {type(exc).__name__}: {exc}") from exc


def _ms(seconds: float) -> int:
    if seconds <= 0:
        raise ConfigurationError(f"a lease must be > 0 seconds, not {seconds!r}")
    return max(1, round(seconds * 1000))


__all__ = ["RedisLock"]
