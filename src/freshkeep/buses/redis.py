"""A bus over Redis pub/sub (``redis.asyncio``): revisions between processes and hosts."""

from __future__ import annotations

import uuid
from typing import Any

from freshkeep.buses.base import RemoteBus
from freshkeep.exceptions import ConfigurationError, missing_extra

try:
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise missing_extra("redis", exc.name or "redis") from exc

DEFAULT_CHANNEL = "freshkeep:revisions"


class RedisBus(RemoteBus):
    """Publishes revisions on a Redis pub/sub channel and delivers what others publish.

    ``url_or_client`` is a ``redis://`` / ``rediss://`` URL or a ``redis.asyncio.Redis``
    client. With a URL the bus makes its own clients and closes them; its subscriber
    connection is named :attr:`client_name` (``CLIENT LIST``), never retries inside the
    driver, and sends a health-check ``PING`` every ``ping_interval`` seconds, so every loss
    of it is seen, shown in :meth:`snapshot` and followed by a reconnect and the ``on_connect``
    callbacks. With a client, the bus publishes through it and subscribes on a connection of
    its pool; the driver may then reconnect by itself, which the bus sees as a resubscribe (a
    reconnect with a zero-length outage). The client is not closed.

    See :class:`~freshkeep.buses.base.RemoteBus` for the lifecycle and the other options.
    """

    backend = "redis"

    def __init__(
        self,
        url_or_client: str | aioredis.Redis,
        channel: str = DEFAULT_CHANNEL,
        *,
        ping_interval: float = 5.0,
        **options: Any,
    ) -> None:
        super().__init__(channel, **options)
        self.ping_interval = ping_interval
        if isinstance(url_or_client, str):
            if not url_or_client.startswith(("redis://", "rediss://", "unix://")):
                raise ConfigurationError(f"not a Redis URL: {url_or_client!r}")
            timeout = self.connect_timeout
            self._client = aioredis.Redis.from_url(url_or_client, socket_connect_timeout=timeout)
            safe = "".join(c if c.isalnum() or c in ":-_." else "_" for c in channel)
            self.client_name: str | None = f"freshkeep-bus:{safe}:{uuid.uuid4().hex[:8]}"
            self._subscriber = aioredis.Redis.from_url(
                url_or_client,
                retry=Retry(NoBackoff(), 0),
                socket_connect_timeout=timeout,
                health_check_interval=ping_interval,
                client_name=self.client_name,
            )
            self._owned = True
        elif isinstance(url_or_client, aioredis.Redis):
            self._client = self._subscriber = url_or_client
            self.client_name = None
            self._owned = False
        else:
            raise ConfigurationError(f"expected a Redis URL or client, not {url_or_client!r}")

    async def _listen(self) -> None:
        pubsub = self._subscriber.pubsub()
        try:
            await pubsub.subscribe(self.channel)
            while True:
                message = await pubsub.get_message(timeout=self.ping_interval)
                if message is None:
                    continue
                kind = message.get("type")
                if kind == "subscribe":
                    self._connected()
                elif kind == "message":
                    self._deliver(message["data"])
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call,unused-ignore]

    async def _send(self, payload: bytes) -> None:
        await self._client.publish(self.channel, payload)

    async def _close_backend(self) -> None:
        if self._owned:
            await self._client.aclose()
            await self._subscriber.aclose()
