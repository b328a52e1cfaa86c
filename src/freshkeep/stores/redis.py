"""A shared store in Redis, L2 behind each process's memory L1 (``redis`` extra).

Each entry is one string key, ``<prefix><view>:<digest of version and key identity>``, holding
the entry encoded by :mod:`freshkeep.core.codec` (JSON header and bodies, optionally HMAC
signed; never pickled), with a TTL so that Redis never fills up with dead keys.

:meth:`RedisStore.put` is compare-and-set in one Lua script: it reads the revision vector from
the stored entry's header (``cjson``) and refuses to replace an entry built from a newer
revision of a common source, as :meth:`~freshkeep.core.entry.Entry.is_older_than` does. An
unreadable stored value never blocks a put. (The script does not verify signatures: whoever can
write to Redis can delete keys anyway; what it stores is verified by every reader.)

Failures never raise (design rule 7): ``get`` answers ``None``, ``put`` and ``delete``
``False``; each operation is bounded by ``timeout``; failures are counted and shown by
:meth:`RedisStore.snapshot`. After a failure, operations answer at once for ``backoff`` seconds
instead of waiting on a server that is down, then the next one tries again; redis-py reconnects
by itself, and a connection the server closed is retried once on a new one.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import orjson

from freshkeep.core.clock import SYSTEM_CLOCK, Clock
from freshkeep.core.codec import decode_entry, encode_entry, identity_json
from freshkeep.core.component import Kind
from freshkeep.core.entry import Entry
from freshkeep.exceptions import ConfigurationError, CorruptEntryError, EncodeError, missing_extra
from freshkeep.ports import SharedStore, SharedStoreSnapshot

try:
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import ResponseError
except ImportError as exc:  # pragma: no cover - exercised by the no-extras import test
    raise missing_extra("redis", "redis") from exc

if TYPE_CHECKING:
    from freshkeep.stores.redis_lock import RedisLock

log = logging.getLogger("freshkeep.stores.redis")

_CAS = """
local old = redis.pcall('GET', KEYS[1])
if type(old) == 'string' and #old >= 8 and string.sub(old, 1, 3) == 'FK1' then
  local b1, b2, b3, b4 = string.byte(old, 5, 8)
  local size = ((b1 * 256 + b2) * 256 + b3) * 256 + b4
  local ok, header = pcall(cjson.decode, string.sub(old, 9, 8 + size))
  if ok and type(header) == 'table' and type(header.vec) == 'table' then
    local new = cjson.decode(ARGV[2])
    for source, rev in pairs(new) do
      local had = header.vec[source]
      if type(rev) == 'number' and type(had) == 'number' and rev < had then
        return 0
      end
    end
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return 1
"""


def connect(url: str, *, timeout: float) -> aioredis.Redis:
    """A client for ``url`` whose socket operations are bounded by ``timeout`` and that retries
    a failed command once, at once, on a new connection (a connection the server closed)."""
    return aioredis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 1),
        health_check_interval=30,
    )


def check_client(client: aioredis.Redis) -> None:
    """Refuse a client that decodes responses (entries are bytes)."""
    if client.connection_pool.connection_kwargs.get("decode_responses"):
        raise ConfigurationError("the Redis client must not decode responses (decode_responses)")


@dataclass(slots=True)
class RedisStoreStats:
    """Counters of a :class:`RedisStore`."""

    hits: int = 0
    misses: int = 0
    stored: int = 0
    rejected: int = 0
    """Puts refused because the stored entry was built from newer revisions."""
    corrupt: int = 0
    """Values that were not a valid entry (tampered, unsigned, garbage): answered as misses."""
    unencodable: int = 0
    """Entries that could not be encoded (key identity not JSON)."""
    errors: int = 0
    """Operations that failed on Redis (unreachable, timed out)."""
    skipped: int = 0
    """Operations answered at once during an outage's backoff."""
    outages: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    last_corrupt: str | None = None
    outage_started_at: float | None = None
    """Wall-clock time of the first failure of the current outage (``None``: no outage)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RedisStoreSnapshot(SharedStoreSnapshot):
    """A :class:`RedisStore`'s reachability and every counter of :class:`RedisStoreStats`."""

    hits: int
    misses: int
    stored: int
    rejected: int
    corrupt: int
    unencodable: int
    errors: int
    skipped: int
    last_corrupt: str | None
    outage_started_at: float | None
    prefix: str
    signed: bool


class RedisStore(SharedStore):
    """Entries in Redis, shared by every instance. See the module docstring.

    ``url_or_client``: a ``redis://`` / ``rediss://`` URL (the store owns that client and closes
    it in :meth:`aclose`) or a ``redis.asyncio.Redis`` (not closed here; it must not decode
    responses). ``secret``: HMAC key; entries are signed with it and only entries signed with it
    are read. ``ttl``: seconds each entry is kept. ``timeout``: bound of each operation.
    ``backoff``: seconds operations answer at once after a failure.
    """

    kind: ClassVar[Kind] = "store"
    name = "shared"
    """The component name of a keeper's shared store."""

    def __init__(
        self,
        url_or_client: str | aioredis.Redis,
        *,
        prefix: str = "freshkeep:",
        secret: bytes | str | None = None,
        ttl: float = 3600.0,
        timeout: float = 0.25,
        backoff: float = 1.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if ttl <= 0:
            raise ConfigurationError(f"ttl must be > 0, not {ttl!r}")
        if timeout <= 0:
            raise ConfigurationError(f"timeout must be > 0, not {timeout!r}")
        if backoff < 0:
            raise ConfigurationError(f"backoff must be >= 0, not {backoff!r}")
        if isinstance(url_or_client, str):
            self.client = connect(url_or_client, timeout=timeout)
            self._owns_client = True
        else:
            check_client(url_or_client)
            self.client = url_or_client
            self._owns_client = False
        self.prefix = prefix
        self.secret = secret.encode() if isinstance(secret, str) else secret
        self.ttl = ttl
        self._ttl_ms = max(1, round(ttl * 1000))
        self.timeout = timeout
        self.backoff = backoff
        self.stats = RedisStoreStats()
        self._clock = clock
        self._retry_at = float("-inf")
        self._cas = self.client.register_script(_CAS)

    def key_for(self, view: str, identity: Hashable, *, version: str = "") -> str:
        """``<prefix><view>:<hex digest>`` of the view's ``version`` and the key identity's JSON:
        the same in every process. Raises :class:`~freshkeep.exceptions.EncodeError` for an
        identity that has no JSON form."""
        h = hashlib.blake2b(digest_size=16)
        h.update(version.encode())
        h.update(b"\x00")
        h.update(identity_json(identity))
        return f"{self.prefix}{view}:{h.hexdigest()}"

    async def get(self, key: str) -> Entry | None:
        """The entry under ``key``; ``None`` when absent, unreadable or Redis fails."""
        if self._skip():
            return None
        try:
            async with asyncio.timeout(self.timeout):
                data = await self.client.get(key)
        except ResponseError as exc:  # the server answered: the value is not a string
            self._corrupt(key, f"{exc}")
            return None
        except Exception as exc:
            self._failed("get", exc)
            return None
        self._ok()
        if data is None:
            self.stats.misses += 1
            return None
        try:
            if not isinstance(data, bytes):
                raise CorruptEntryError(f"value is {type(data).__name__}, not bytes")
            entry = decode_entry(data, secret=self.secret, clock=self._clock)
            if self.key_for(entry.view, entry.key, version=entry.version) != key:
                raise CorruptEntryError("entry is stored under another key than its own")
        except (CorruptEntryError, EncodeError) as exc:
            self._corrupt(key, str(exc))
            return None
        self.stats.hits += 1
        return entry

    async def put(self, key: str, entry: Entry) -> bool:
        """Store ``entry`` under ``key`` with the TTL, unless the stored entry was built from a
        newer revision of a common source; return whether it stored.

        ``key`` must be ``key_for(entry.view, entry.key, version=entry.version)`` (``get``
        rejects an entry found under another key): else :class:`ConfigurationError` is raised.
        """
        try:
            if self.key_for(entry.view, entry.key, version=entry.version) != key:
                raise ConfigurationError(
                    f"entry of view {entry.view!r} put under {key!r}, not under its key_for()"
                )
            data = encode_entry(entry, secret=self.secret)
            vector = orjson.dumps(entry.vector)
        except (EncodeError, TypeError) as exc:
            self.stats.unencodable += 1
            log.warning("entry of view %r not stored in Redis: %s", entry.view, exc)
            return False
        if self._skip():
            return False
        try:
            async with asyncio.timeout(self.timeout):
                done = await self._cas(keys=[key], args=[data, vector, self._ttl_ms])
        except Exception as exc:
            self._failed("put", exc)
            return False
        self._ok()
        if done:
            self.stats.stored += 1
            return True
        self.stats.rejected += 1
        return False

    async def delete(self, key: str) -> bool:
        """Remove ``key``; return whether it was there (``False`` when Redis fails)."""
        if self._skip():
            return False
        try:
            async with asyncio.timeout(self.timeout):
                removed = await self.client.delete(key)
        except Exception as exc:
            self._failed("delete", exc)
            return False
        self._ok()
        return bool(removed)

    def lock(self, *, prefix: str | None = None) -> RedisLock:
        """A :class:`~freshkeep.stores.redis_lock.RedisLock` on this store's client (keys
        ``<prefix>lock:<name>`` by default)."""
        from freshkeep.stores.redis_lock import RedisLock

        return RedisLock(
            self.client,
            prefix=f"{self.prefix}lock:" if prefix is None else prefix,
            timeout=self.timeout,
        )

    def snapshot(self) -> RedisStoreSnapshot:
        """Reachability and counters: ``reachable`` (``False`` during an outage),
        ``outage_seconds``, and every counter of :class:`RedisStoreStats`."""
        s = self.stats
        return RedisStoreSnapshot(
            name=self.name,
            hits=s.hits,
            misses=s.misses,
            stored=s.stored,
            rejected=s.rejected,
            corrupt=s.corrupt,
            unencodable=s.unencodable,
            errors=s.errors,
            skipped=s.skipped,
            outages=s.outages,
            last_error=s.last_error,
            last_error_at=s.last_error_at,
            last_corrupt=s.last_corrupt,
            outage_started_at=s.outage_started_at,
            reachable=s.outage_started_at is None,
            outage_seconds=(
                None
                if s.outage_started_at is None
                else max(0.0, self._clock.time() - s.outage_started_at)
            ),
            prefix=self.prefix,
            signed=self.secret is not None,
        )

    async def aclose(self) -> None:
        """Close the client, if this store created it."""
        if self._owns_client:
            await self.client.aclose()

    # -- internals ------------------------------------------------------------------------

    def _skip(self) -> bool:
        if self._retry_at > self._clock.monotonic():
            self.stats.skipped += 1
            return True
        return False

    def _ok(self) -> None:
        s = self.stats
        if s.outage_started_at is not None:
            log.info("Redis store reachable again after %s", s.last_error)
            s.outage_started_at = None
        self._retry_at = float("-inf")

    def _failed(self, op: str, exc: BaseException) -> None:
        s = self.stats
        s.errors += 1
        s.last_error = f"{op}: {type(exc).__name__}: {exc}"
        s.last_error_at = self._clock.time()
        if s.outage_started_at is None:
            s.outage_started_at = s.last_error_at
            s.outages += 1
            log.warning("Redis store failed: %s", s.last_error)
        self._retry_at = self._clock.monotonic() + self.backoff

    def _corrupt(self, key: str, why: str) -> None:
        s = self.stats
        s.corrupt += 1
        s.last_corrupt = f"{key}: {why}"
        log.warning("corrupt entry in Redis treated as a miss: %s", s.last_corrupt)


__all__ = ["RedisStore", "RedisStoreStats", "check_client", "connect"]
