"""Redis topologies from a URL: one server, a Redis Cluster, or a primary watched by Sentinel
(``redis`` extra).

Every Redis adapter (the store, its build lock, the bus) takes one of these URLs:

- ``redis://[user:password@]host:port[/db]``, ``rediss://…``, ``unix://…``: one server
  (``redis.asyncio.Redis.from_url``).
- ``redis+cluster://[user:password@]host:port[,host:port…]``, ``rediss+cluster://…``: a Redis
  Cluster, through redis-py's ``redis.asyncio.cluster.RedisCluster``. The hosts are startup
  nodes; the client learns the rest of the cluster from them and follows ``MOVED`` /
  ``ASK`` and failovers by itself.
- ``redis+sentinel://[user:password@]host:port[,host:port…]/service[/db]``,
  ``rediss+sentinel://…``: the primary of ``service`` as the Sentinels name it, through
  redis-py's ``redis.asyncio.sentinel.Sentinel.master_for``. Its connections ask the
  Sentinels for the current primary whenever they connect, and drop a connection to a server
  that has become a replica, so a failover is followed by a reconnect. The query string may
  carry ``sentinel_password`` (and ``sentinel_username``) when the Sentinels need their own.

The Sentinel form is the one of the ``redis-sentinel-url`` convention (Sentinels comma-
separated, the service name as the first path segment, then the database). A Redis Cluster has
one database, so ``redis+cluster://`` takes no path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, TypeAlias
from urllib.parse import parse_qs, unquote

from freshkeep.exceptions import ConfigurationError, missing_extra

try:
    import redis.asyncio as aioredis
    from redis.asyncio.cluster import ClusterNode, RedisCluster
    from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
except ImportError as exc:  # pragma: no cover - exercised by the no-extras import test
    raise missing_extra("redis", "redis") from exc

AnyRedis: TypeAlias = "aioredis.Redis | RedisCluster"
"""A client of one server (or of a Sentinel-managed primary), or of a Redis Cluster."""

Topology = Literal["single", "cluster", "sentinel"]

SCHEMES: dict[str, Topology] = {
    "redis": "single",
    "rediss": "single",
    "unix": "single",
    "redis+cluster": "cluster",
    "rediss+cluster": "cluster",
    "redis+sentinel": "sentinel",
    "rediss+sentinel": "sentinel",
}
"""Every URL scheme a Redis adapter takes, and the topology it names."""


@dataclass(frozen=True, slots=True)
class RedisURL:
    """A parsed Redis URL. ``nodes``: the startup nodes (cluster) or the Sentinels; empty for
    one server, whose URL goes to redis-py as it is."""

    url: str
    topology: Topology
    tls: bool
    nodes: tuple[tuple[str, int], ...] = ()
    service: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None

    @classmethod
    def parse(cls, url: str) -> RedisURL:
        """Parse ``url``; raise :class:`~freshkeep.exceptions.ConfigurationError` for a scheme
        that names no Redis topology or a malformed host list, service or database."""
        scheme = url.partition("://")[0].lower() if "://" in url else ""
        topology = SCHEMES.get(scheme)
        if topology is None:
            raise ConfigurationError(
                f"not a Redis URL: {_redact(url)!r} (expected one of "
                + ", ".join(f"{s}://" for s in SCHEMES)
                + ")"
            )
        tls = scheme.startswith("rediss")
        if topology == "single":
            return cls(url, topology, tls)
        rest, _, query = url.partition("://")[2].partition("?")
        # the credentials end at the last '@' (a password may hold an unescaped '/')
        userinfo, _, located = rest.rpartition("@")
        hosts, _, path = located.partition("/")
        username, password = _userinfo(userinfo)
        nodes = tuple(_node(h, url) for h in hosts.split(",") if h.strip())
        if not nodes:
            raise ConfigurationError(f"no host in the Redis URL {_redact(url)!r}")
        params = {k: v[-1] for k, v in parse_qs(query).items()}
        if topology == "cluster":
            if path.strip("/"):
                raise ConfigurationError(
                    f"a Redis Cluster has one database; no path in {_redact(url)!r}"
                )
            return cls(url, topology, tls, nodes, username=username, password=password)
        parts = [p for p in path.split("/") if p]
        if not parts or len(parts) > 2:
            raise ConfigurationError(
                f"expected redis+sentinel://host:port[,host:port]/service[/db], "
                f"not {_redact(url)!r}"
            )
        try:
            db = int(parts[1]) if len(parts) == 2 else 0
        except ValueError:
            raise ConfigurationError(f"not a database number in {_redact(url)!r}") from None
        return cls(
            url,
            topology,
            tls,
            nodes,
            service=unquote(parts[0]),
            db=db,
            username=username,
            password=password,
            sentinel_username=params.get("sentinel_username"),
            sentinel_password=params.get("sentinel_password"),
        )

    def connect(self, **options: Any) -> AnyRedis:
        """A client of this topology; ``options`` are redis-py connection options
        (``socket_timeout``, ``retry``, ``health_check_interval``, ``client_name``…)."""
        if self.topology == "single":
            return aioredis.Redis.from_url(self.url, **options)
        options = {**options, "username": self.username, "password": self.password}
        if self.tls:
            options["ssl"] = True
        if self.topology == "cluster":
            return RedisCluster(
                startup_nodes=[ClusterNode(host, port) for host, port in self.nodes], **options
            )
        sentinel_options: dict[str, Any] = {
            k: v for k, v in options.items() if k.startswith("socket_")
        }
        sentinel_options.update(
            username=self.sentinel_username, password=self.sentinel_password, ssl=self.tls
        )
        sentinel = Sentinel(list(self.nodes), sentinel_kwargs=sentinel_options)
        assert self.service is not None
        client: aioredis.Redis = sentinel.master_for(self.service, db=self.db, **options)
        return client


def connect(url: str, **options: Any) -> AnyRedis:
    """A client for ``url`` (any scheme of :data:`SCHEMES`) with the redis-py ``options``."""
    return RedisURL.parse(url).connect(**options)


def is_cluster(client: object) -> bool:
    """Whether ``client`` is a Redis Cluster client."""
    return isinstance(client, RedisCluster)


def decodes_responses(client: AnyRedis) -> bool:
    """Whether ``client`` decodes responses to ``str`` (entries and tokens are bytes)."""
    return bool(client.get_encoder().decode_responses)


async def close(client: AnyRedis) -> None:
    """Close ``client`` and, for a Sentinel-managed one, its connections to the Sentinels."""
    await client.aclose()
    if isinstance(client, aioredis.Redis):
        pool = client.connection_pool
        if isinstance(pool, SentinelConnectionPool):
            for sentinel in pool.sentinel_manager.sentinels:
                await sentinel.aclose()


def _userinfo(userinfo: str) -> tuple[str | None, str | None]:
    if not userinfo:
        return None, None
    user, sep, password = userinfo.partition(":")
    return (unquote(user) or None), (unquote(password) if sep else None)


def _node(text: str, url: str) -> tuple[str, int]:
    text = text.strip()
    if text.startswith("["):  # [IPv6]:port
        name, _, port = text[1:].partition("]:")
    else:
        name, _, port = text.rpartition(":")
    if not name or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigurationError(f"expected host:port, not {text!r} in {_redact(url)!r}")
    return name, int(port)


def _redact(url: str) -> str:
    """``url`` without its secrets: the password of its credentials (which end at the last
    ``@`` before the query, whatever characters the password holds) and the value of any query
    parameter named like a password."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "<not a URL>" if "@" in url or "password" in url.lower() else url
    rest, q, query = rest.partition("?")
    userinfo, at, located = rest.rpartition("@")
    if at:
        user = userinfo.partition(":")[0] if ":" in userinfo else ""
        rest = f"{user}:***@{located}" if ":" in userinfo or user else f"***@{located}"
    if q:
        params = []
        for param in query.split("&"):
            name, eq, _ = param.partition("=")
            secret = "password" in name.lower() or "secret" in name.lower()
            params.append(f"{name}=***" if eq and secret else param)
        query = "&".join(params)
    return f"{scheme}://{rest}{q}{query}"


__all__ = [
    "SCHEMES",
    "AnyRedis",
    "RedisURL",
    "Topology",
    "close",
    "connect",
    "decodes_responses",
    "is_cluster",
]
