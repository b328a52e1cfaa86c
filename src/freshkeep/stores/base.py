"""Choosing the shared store (L2) from a URL; the ports themselves live in :mod:`freshkeep.ports`
(:class:`SharedStore` and :class:`Lock` are re-exported here).

Every process keeps its :class:`~freshkeep.stores.memory.MemoryStore` as L1; a
:class:`SharedStore` (Redis) sits behind it so instances share their builds. Both ports are
asynchronous and never raise on the read path: a store that fails answers as a miss.

:func:`store_from_url` turns a URL into a store: ``memory://`` is L1 only (``None``),
``redis://`` and ``rediss://`` (one server), ``redis+cluster://`` (a Redis Cluster) and
``redis+sentinel://`` (a primary watched by Sentinel) are a
:class:`~freshkeep.stores.redis.RedisStore` (``redis`` extra, imported only then);
:func:`store_from_settings` does the same from the ``store_*`` settings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from freshkeep.exceptions import ConfigurationError
from freshkeep.ports import Lock, SharedStore

if TYPE_CHECKING:
    from freshkeep.settings import Settings


def store_from_url(url: str, **kwargs: Any) -> SharedStore | None:
    """The shared store for ``url``: ``None`` for ``memory://`` (the memory L1 only), a
    :class:`~freshkeep.stores.redis.RedisStore` for ``redis://`` / ``rediss://``,
    ``redis+cluster://`` and ``redis+sentinel://`` (see :mod:`freshkeep.stores.redis_client`;
    ``kwargs`` go to it). Raises :class:`~freshkeep.exceptions.ConfigurationError` for another
    scheme, and :class:`~freshkeep.exceptions.MissingDependencyError` without the ``redis``
    extra.
    """
    scheme = urlsplit(url).scheme.lower()
    if scheme == "memory":
        return None
    if scheme.startswith("redis") or scheme == "unix":  # the URL's form is checked there
        from freshkeep.stores.redis import RedisStore

        return RedisStore(url, **kwargs)
    raise ConfigurationError(
        f"unknown store URL scheme {scheme!r} in {url!r}: use memory://, redis://, rediss://, "
        "redis+cluster:// or redis+sentinel://"
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
