"""A bus over Redis pub/sub (``redis.asyncio``): revisions between processes and hosts.

On one server, or on the primary a Sentinel names, the bus uses plain pub/sub (``SUBSCRIBE``,
``PUBLISH``). On a Redis Cluster it uses sharded pub/sub (``SSUBSCRIBE``, ``SPUBLISH``, Redis 7
or later): a message then travels only within the shard that owns the channel's slot, instead
of being broadcast over the cluster bus to every node. redis-py's cluster pub/sub keeps the
subscription on the node that owns the slot (it follows ``MOVED`` and slot migrations); every
``ssubscribe`` confirmation, the first and any after such a move, counts as a (re)connect and
runs the ``on_connect`` callbacks, so the keeper re-reads the revisions it may have missed.
When the subscription fails all the same (the node that owns the channel died, and the client
still maps the slot to it), a bus made from a URL resubscribes with a new cluster client, which
learns the cluster again from the URL's startup nodes (so list several). A bus given a client
relies on that client's own refresh of its map of slots.

Under Sentinel, a failover does not always close the subscriber's connection: a primary the
Sentinels demote keeps its subscribers, and still relays what its new primary publishes, until
it goes away. So every ``ping_interval`` the bus asks the Sentinels (redis-py's
``discover_master``) which server is the primary, and when it is no longer the one it listens
on, it drops the connection and subscribes again on the new primary, with a resync.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from freshkeep.buses.base import RemoteBus
from freshkeep.exceptions import ConfigurationError, missing_extra

try:
    import redis.asyncio as aioredis
    from redis.asyncio.client import PubSub
    from redis.asyncio.cluster import RedisCluster
    from redis.asyncio.retry import Retry
    from redis.asyncio.sentinel import SentinelConnectionPool
    from redis.backoff import NoBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import RedisError

    from freshkeep.stores.redis_client import AnyRedis, RedisURL, close
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise missing_extra("redis", exc.name or "redis") from exc

DEFAULT_CHANNEL = "freshkeep:revisions"


class RedisBus(RemoteBus):
    """Publishes revisions on a Redis pub/sub channel and delivers what others publish.

    ``url_or_client`` is a Redis URL (``redis://``, ``rediss://``, ``redis+cluster://``,
    ``redis+sentinel://``: see :mod:`freshkeep.stores.redis_client`) or a
    ``redis.asyncio.Redis`` / ``redis.asyncio.cluster.RedisCluster`` client. With a URL the bus
    makes its own clients and closes them; its subscriber connection is named
    :attr:`client_name` (``CLIENT LIST``), never retries inside the driver, and sends a
    health-check ``PING`` every ``ping_interval`` seconds, so every loss of it is seen, shown in
    :meth:`snapshot` and followed by a reconnect and the ``on_connect`` callbacks. Under
    Sentinel each (re)connect asks the Sentinels for the current primary, so the bus follows a
    failover. With a client, the bus publishes through it and subscribes on a connection of
    its pool; the driver may then reconnect by itself, which the bus sees as a resubscribe (a
    reconnect with a zero-length outage). The client is not closed.

    On a cluster (:attr:`sharded`) the channel is a shard channel: see the module docstring.
    See :class:`~freshkeep.buses.base.RemoteBus` for the lifecycle and the other options.
    """

    backend = "redis"

    def __init__(
        self,
        url_or_client: str | AnyRedis,
        channel: str = DEFAULT_CHANNEL,
        *,
        ping_interval: float = 5.0,
        **options: Any,
    ) -> None:
        super().__init__(channel, **options)
        self.ping_interval = ping_interval
        self._client: AnyRedis
        self._subscriber: AnyRedis
        self._target: RedisURL | None = None
        self._renew = False
        if isinstance(url_or_client, str):
            self._target = RedisURL.parse(url_or_client)
            timeout = self.connect_timeout
            self._client = self._target.connect(socket_connect_timeout=timeout)
            safe = "".join(c if c.isalnum() or c in ":-_." else "_" for c in channel)
            self.client_name: str | None = f"freshkeep-bus:{safe}:{uuid.uuid4().hex[:8]}"
            self._subscriber = self._new_subscriber()
            self._owned = True
        elif isinstance(url_or_client, aioredis.Redis | RedisCluster):
            self._client = self._subscriber = url_or_client
            self.client_name = None
            self._owned = False
        else:
            raise ConfigurationError(f"expected a Redis URL or client, not {url_or_client!r}")
        self.sharded = isinstance(self._client, RedisCluster)
        """Whether the bus uses sharded pub/sub (a Redis Cluster)."""

    def _new_subscriber(self) -> AnyRedis:
        assert self._target is not None
        return self._target.connect(
            retry=Retry(NoBackoff(), 0),
            socket_connect_timeout=self.connect_timeout,
            health_check_interval=self.ping_interval,
            client_name=self.client_name,
        )

    async def _listen(self) -> None:
        if self._renew and self._target is not None:
            # The old cluster client's map of slots may still name a node that is gone: a new
            # client learns the cluster again from the URL's startup nodes.
            self._renew = False
            old, self._subscriber = self._subscriber, self._new_subscriber()
            await close(old)
        subscriber = self._subscriber
        if isinstance(subscriber, RedisCluster):
            await self._listen_sharded(subscriber)
            return
        pool = subscriber.connection_pool
        sentinel = pool if isinstance(pool, SentinelConnectionPool) else None
        pubsub = subscriber.pubsub()
        try:
            await pubsub.subscribe(self.channel)
            check_at = time.monotonic() + self.ping_interval
            while True:
                message = await pubsub.get_message(timeout=self.ping_interval)
                if sentinel is not None and time.monotonic() >= check_at:
                    check_at = time.monotonic() + self.ping_interval
                    await _still_on_the_primary(sentinel, pubsub, self.connect_timeout)
                if message is None:
                    continue
                kind = message.get("type")
                if kind == "subscribe":
                    self._connected()
                elif kind == "message":
                    self._deliver(message["data"])
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call,unused-ignore]

    async def _listen_sharded(self, cluster: RedisCluster) -> None:
        pubsub = cluster.pubsub()
        try:
            await pubsub.ssubscribe(self.channel)
            while True:
                message = await pubsub.get_sharded_message(timeout=self.ping_interval)
                if message is None:
                    continue
                kind = message.get("type")
                if kind in ("ssubscribe", b"ssubscribe"):
                    self._connected()
                elif kind in ("smessage", b"smessage"):
                    self._deliver(message["data"])
        except Exception:
            self._renew = True
            raise
        finally:
            await pubsub.aclose()

    async def _send(self, payload: bytes) -> None:
        if isinstance(self._client, RedisCluster):
            await self._client.spublish(self.channel, payload)
        else:
            await self._client.publish(self.channel, payload)

    async def _close_backend(self) -> None:
        if self._owned:
            await close(self._client)
            await close(self._subscriber)


async def _still_on_the_primary(
    pool: SentinelConnectionPool, pubsub: PubSub, timeout: float
) -> None:
    """Raise ``ConnectionError`` when the Sentinels name another primary than the server
    ``pubsub`` listens on. Sentinels that cannot tell within ``timeout`` seconds leave the
    subscription as it is."""
    connection = pubsub.connection
    if connection is None:
        return
    try:
        async with asyncio.timeout(timeout):
            host, port = await pool.sentinel_manager.discover_master(pool.service_name)
    except (RedisError, TimeoutError):  # MasterNotFoundError, or no Sentinel answers
        return
    if (connection.host, connection.port) != (host, port):
        raise RedisConnectionError(
            f"the primary of {pool.service_name!r} is now {host}:{port}, "
            f"not {connection.host}:{connection.port}"
        )
