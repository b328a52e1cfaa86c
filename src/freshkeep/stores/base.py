"""Ports of the distributed mode: a shared store (L2) and a cross-instance lock.

Every process keeps its :class:`~freshkeep.stores.memory.MemoryStore` as L1; a
:class:`SharedStore` (Redis) sits behind it so instances share their builds. Both ports are
asynchronous and never raise on the read path: a store that fails answers as a miss.

:func:`store_from_url` turns a URL into a store: ``memory://`` is L1 only (``None``),
``redis://`` and ``rediss://`` are a :class:`~freshkeep.stores.redis.RedisStore` (``redis``
extra, imported only then); :func:`store_from_settings` does the same from the ``store_*``
settings.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from freshkeep.core.component import Snapshot
from freshkeep.exceptions import ConfigurationError

if TYPE_CHECKING:
    from freshkeep.core.entry import Entry
    from freshkeep.settings import Settings


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SharedStoreSnapshot(Snapshot):
    """What every shared store reports (:meth:`SharedStore.snapshot`); adapters add their own
    counters in a subclass (:class:`~freshkeep.stores.redis.RedisStoreSnapshot`)."""

    reachable: bool = True
    """``False`` during an outage (every instance builds for itself meanwhile)."""
    outage_seconds: float | None = None
    """Seconds the current outage has lasted (``None``: reachable)."""
    outages: int = 0
    last_error: str | None = None
    last_error_at: float | None = None


class SharedStore(Protocol):
    """Entries shared by every instance, behind each one's memory L1.

    ``get`` answers a miss (``None``) for anything it cannot serve: absent, corrupt, tampered,
    or the server unreachable; ``put`` is compare-and-set on the revision vector and answers
    whether it stored. Neither raises; failures are counted in :meth:`snapshot`.
    """

    def key_for(self, view: str, identity: Hashable, *, version: str = "") -> str:
        """The store key of ``identity`` in ``view`` (the same in every process)."""
        ...

    async def get(self, key: str) -> Entry | None:
        """The entry under ``key``, or ``None``."""
        ...

    async def put(self, key: str, entry: Entry) -> bool:
        """Store ``entry`` unless the stored one was built from newer revisions."""
        ...

    async def delete(self, key: str) -> bool:
        """Remove ``key``; return whether it was there."""
        ...

    def snapshot(self) -> SharedStoreSnapshot:
        """Reachability and counters, without I/O."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


class Lock(Protocol):
    """A lease-based lock shared by every instance (single-flight across instances).

    A lease can expire while its holder still builds, so a lock alone does not fence: the
    holder's result is stored with the store's compare-and-set, which never replaces an entry
    built from newer revisions, so a late holder cannot overwrite a newer build.
    """

    async def acquire(self, name: str, lease: float) -> str | None:
        """Take the lock for ``lease`` seconds; return its token, or ``None`` if it is held."""
        ...

    async def release(self, name: str, token: str) -> bool:
        """Release the lock if ``token`` still holds it; return whether it did."""
        ...

    async def extend(self, name: str, token: str, lease: float) -> bool:
        """Renew the lease to ``lease`` seconds if ``token`` still holds it."""
        ...


def store_from_url(url: str, **kwargs: Any) -> SharedStore | None:
    """The shared store for ``url``: ``None`` for ``memory://`` (the memory L1 only), a
    :class:`~freshkeep.stores.redis.RedisStore` for ``redis://`` / ``rediss://`` (``kwargs``
    go to it). Raises :class:`~freshkeep.exceptions.ConfigurationError` for another scheme,
    and :class:`~freshkeep.exceptions.MissingDependencyError` without the ``redis`` extra.
    """
    scheme = urlsplit(url).scheme.lower()
    if scheme == "memory":
        return None
    if scheme in ("redis", "rediss", "unix"):
        from freshkeep.stores.redis import RedisStore

        return RedisStore(url, **kwargs)
    raise ConfigurationError(
        f"unknown store URL scheme {scheme!r} in {url!r}: use memory://, redis:// or rediss://"
    )


def store_from_settings(settings: Settings) -> SharedStore | None:
    """The shared store of ``settings.store_url`` with the ``store_*`` settings (prefix,
    secret, TTL, timeout, backoff); ``None`` for ``memory://``."""
    secret = settings.store_secret
    return store_from_url(
        settings.store_url,
        prefix=settings.store_prefix,
        secret=None if secret is None else secret.get_secret_value(),
        ttl=settings.store_ttl,
        timeout=settings.store_timeout,
        backoff=settings.store_backoff,
    )


__all__ = ["Lock", "SharedStore", "store_from_settings", "store_from_url"]
