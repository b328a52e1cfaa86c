"""Buses carry committed revisions between keepers (the :class:`~freshkeep.ports.Bus` port).

- :class:`~freshkeep.buses.local.LocalBus`: in one process (``local://``, the default).
- :class:`~freshkeep.buses.redis.RedisBus`: Redis pub/sub (``redis://``, ``rediss://``;
  ``redis+sentinel://`` for a primary watched by Sentinel; ``redis+cluster://`` for a Redis
  Cluster, with sharded pub/sub; the ``redis`` extra).
- :class:`~freshkeep.buses.postgres.PostgresBus`: PostgreSQL ``LISTEN`` / ``NOTIFY``
  (``postgresql://``; the ``postgres`` extra).

:func:`bus_from_url` picks one from a URL (``FRESHKEEP_BUS_URL``); the drivers are imported only
when their bus is asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from freshkeep.exceptions import ConfigurationError

if TYPE_CHECKING:
    from freshkeep.ports import Bus
    from freshkeep.settings import Settings

_REDIS = ("redis", "rediss", "redis+cluster", "rediss+cluster", "redis+sentinel", "rediss+sentinel")


def bus_from_url(url: str, *, channel: str | None = None, settings: Settings | None = None) -> Bus:
    """The bus ``url`` names: ``local://``, ``redis://`` / ``rediss://`` (also
    ``redis+cluster://`` and ``redis+sentinel://``), or ``postgresql://`` (also
    ``postgres://`` and ``postgresql+asyncpg://``).

    ``channel`` defaults to ``settings.bus_channel``, then to the bus's own default; the
    reconnect, timeout and ping settings come from ``settings`` (default
    :meth:`Settings.load() <freshkeep.settings.Settings.load>`). A remote bus must be started
    (``await bus.start()``). Raises :class:`~freshkeep.exceptions.ConfigurationError` for an
    unknown scheme, and :class:`~freshkeep.exceptions.MissingDependencyError` when the
    bus's extra is not installed.
    """
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme == "local":
        from freshkeep.buses.local import LocalBus

        return LocalBus()
    if scheme not in _REDIS and not scheme.startswith(("postgresql", "postgres")):
        raise ConfigurationError(
            f"unknown bus URL scheme {scheme or url!r}: expected local://, redis://, rediss://, "
            "redis+cluster://, redis+sentinel:// or postgresql://"
        )
    if settings is None:
        from freshkeep.settings import Settings

        settings = Settings.load()
    options: dict[str, Any] = {
        "reconnect_backoff": settings.bus_reconnect_backoff,
        "max_reconnect_backoff": settings.bus_max_reconnect_backoff,
        "publish_timeout": settings.bus_publish_timeout,
        "connect_timeout": settings.bus_connect_timeout,
        "ping_interval": settings.bus_ping_interval,
        "max_changes_bytes": settings.bus_max_changes_bytes,
    }
    channel = channel or settings.bus_channel
    if scheme in _REDIS:
        from freshkeep.buses.redis import DEFAULT_CHANNEL, RedisBus

        return RedisBus(url, channel or DEFAULT_CHANNEL, **options)
    from freshkeep.buses.postgres import DEFAULT_CHANNEL as PG_CHANNEL
    from freshkeep.buses.postgres import PostgresBus

    return PostgresBus(url, channel or PG_CHANNEL, **options)


__all__ = ["bus_from_url"]
