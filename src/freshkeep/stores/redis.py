"""A shared store in Redis, L2 behind each process's memory L1 (``redis`` extra).

Each entry is one string key, ``<prefix><view>:<digest of version and key identity>``, holding
the entry encoded by :mod:`freshkeep.core.codec` (JSON header and bodies, optionally HMAC
signed; never pickled). Every write sets the TTL (``PX``), so Redis never fills up with dead
keys.

On a Redis Cluster every key a Lua script touches must be in one slot, and a view's build
lock should live with its entry. So a cluster store puts the digest in a hash tag,
``<prefix>{<digest of view, version and key identity>}:<view>``, and a lock named after that key
(``<prefix>lock:<entry key>``) hashes to the same slot. The two formats never meet: a store
uses one, and a changed format only costs misses (entries are a cache).

Compare-and-set (design rule 3). :meth:`RedisStore.put` runs one Lua script that reads the
revision vector from the stored value's header (``cjson``) and stores the new entry at once
when no common source has a newer counter there. The header alone proves nothing, though:
anyone who can write to Redis can plant a value whose header claims huge revisions, and a
script that refused on its word would keep every genuine write out of that key. So the script
never refuses by itself. When the header claims newer revisions (or cannot be parsed), it
stores nothing and returns the stored value; the client then reads it exactly as
:meth:`RedisStore.get` does (signature, structure, ETag and vector, the key it belongs under).
Only a value that reads as a genuine entry built from newer revisions refuses the put. Any
other value is replaced by a second script, and only if the key still holds that same value
(compared by ``redis.sha1hex``); if it changed meanwhile, the put starts over (a few times at
most).

The secret never reaches Redis. Redis Lua has no HMAC-SHA256, and any key that lets the server
check a MAC would let whoever reads the server's traffic (``MONITOR``, the slow log) forge one.
The one check that needs the secret runs in the client. The common cases stay one round trip:
an absent key, a stored entry built from older or equal revisions, and a value that is plainly
not an entry (another Redis type, no ``FK1`` header, an unsigned entry while this store signs,
a truncated header), which the script replaces at once. Only a put whose stored entry claims
newer revisions costs a read of that entry, and a second round trip if it turns out forged.

Every value a put found unreadable and replaced is counted as ``poisoned`` (with
``last_poisoned`` and ``last_poisoned_at``) and shown by the ``store`` health check. A forged
value that claims older revisions is replaced like any older entry, without being read, and is
not counted (a reader that met it first counted it as ``corrupt``).

What ``secret`` protects: with it, a value in Redis is served only if an instance holding the
secret wrote it for that key, and no value that lacks the signature can refuse a write.
Whoever can write to Redis can still delete keys, fill the server up, or put back an older
genuine entry of the same key (which is then served only where its revisions are current,
and replaced by the next newer build). Without a secret the store trusts Redis: whoever can
write to it can plant a well-formed entry that every instance serves, and whose revisions
refuse genuine writes until it expires or is deleted. A value that cannot be decoded still
never blocks a put.

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
from freshkeep.stores.redis_client import AnyRedis, close, decodes_responses, is_cluster
from freshkeep.stores.redis_client import connect as connect_url

try:
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import ResponseError
except ImportError as exc:  # pragma: no cover - exercised by the no-extras import test
    raise missing_extra("redis", "redis") from exc

if TYPE_CHECKING:
    from freshkeep.stores.redis_lock import RedisLock

log = logging.getLogger("freshkeep.stores.redis")

_CAS = """
-- KEYS[1]: the entry's key. ARGV: the encoded entry, its revision vector (JSON), the TTL in
-- milliseconds, '1' when this store signs its entries.
-- Returns 1: stored; {2, why}: stored over a value that is not an entry; the stored value
-- itself: its header claims newer revisions (or cannot be parsed), and the client decides.
local function store()
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
end
local old = redis.pcall('GET', KEYS[1])
if old == false then
  store()
  return 1
end
if type(old) ~= 'string' then
  store()
  return {2, 'not a string'}
end
if #old < 8 or string.sub(old, 1, 3) ~= 'FK1' then
  store()
  return {2, 'not a freshkeep entry (bad magic)'}
end
local flag = string.sub(old, 4, 4)
local payload = #old
if flag == 'S' then
  payload = #old - 32
elseif flag ~= 'U' then
  store()
  return {2, 'unknown entry flag'}
elseif ARGV[4] == '1' then
  store()
  return {2, 'entry is unsigned but a secret is configured'}
end
local b1, b2, b3, b4 = string.byte(old, 5, 8)
local size = ((b1 * 256 + b2) * 256 + b3) * 256 + b4
if 8 + size > payload then
  store()
  return {2, 'entry header is truncated'}
end
local ok, header = pcall(cjson.decode, string.sub(old, 9, 8 + size))
if not ok then
  return old
end
if type(header) ~= 'table' or type(header.vec) ~= 'table' then
  store()
  return {2, 'entry header has no revision vector'}
end
local new = cjson.decode(ARGV[2])
for source, rev in pairs(new) do
  local had = header.vec[source]
  if type(rev) == 'number' and type(had) == 'number' and rev < had then
    return old
  end
end
store()
return 1
"""

_REPLACE = """
-- KEYS[1]: the entry's key. ARGV: the encoded entry, the SHA-1 (hex) of the value it replaces,
-- the TTL in milliseconds. Stores only if the key still holds that value.
local old = redis.pcall('GET', KEYS[1])
if type(old) == 'string' and redis.sha1hex(old) == ARGV[2] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
  return 1
end
return 0
"""

_ATTEMPTS = 3
"""Compare-and-set rounds of one put when the key changes between reading and replacing."""


def connect(url: str, *, timeout: float) -> AnyRedis:
    """A client for ``url`` (one server, a cluster or a Sentinel-managed primary: see
    :mod:`freshkeep.stores.redis_client`) whose socket operations are bounded by ``timeout`` and
    that retries a failed command once, at once, on a new connection (a connection the server
    closed)."""
    return connect_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 1),
        health_check_interval=30,
    )


def check_client(client: AnyRedis) -> None:
    """Refuse a client that decodes responses (entries are bytes)."""
    if decodes_responses(client):
        raise ConfigurationError("the Redis client must not decode responses (decode_responses)")


@dataclass(slots=True)
class RedisStoreStats:
    """Counters of a :class:`RedisStore`."""

    hits: int = 0
    misses: int = 0
    stored: int = 0
    rejected: int = 0
    """Puts refused because the stored entry was built from newer revisions (or, rarely, because
    the key kept changing while a put tried to replace an unreadable value)."""
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
    poisoned: int = 0
    """Unreadable values a put replaced (see the module docstring)."""
    last_poisoned: str | None = None
    last_poisoned_at: float | None = None
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

    ``url_or_client``: a URL of one server (``redis://``, ``rediss://``), a Redis Cluster
    (``redis+cluster://``) or a Sentinel-managed primary (``redis+sentinel://``; see
    :mod:`freshkeep.stores.redis_client`), which the store owns and closes in :meth:`aclose`;
    or a ``redis.asyncio.Redis`` / ``redis.asyncio.cluster.RedisCluster`` (not closed here; it
    must not decode responses). ``secret``: HMAC key; entries are signed with it and only
    entries signed with it are read. ``ttl``: seconds each entry is kept. ``timeout``: bound of
    each operation. ``backoff``: seconds operations answer at once after a failure.

    ``hash_tags``: put each entry's digest in a hash tag (``<prefix>{<digest>}:<view>``), so
    that the entry and its build lock (``<prefix>lock:<entry key>``) hash to one cluster slot.
    Default: on for a cluster client, off otherwise (the single-server key format). The
    prefix must then hold no ``{`` or ``}``.
    """

    kind: ClassVar[Kind] = "store"
    name = "shared"
    """The component name of a keeper's shared store."""

    def __init__(
        self,
        url_or_client: str | AnyRedis,
        *,
        prefix: str = "freshkeep:",
        secret: bytes | str | None = None,
        ttl: float = 3600.0,
        timeout: float = 0.25,
        backoff: float = 1.0,
        clock: Clock = SYSTEM_CLOCK,
        hash_tags: bool | None = None,
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
        self.hash_tags = is_cluster(self.client) if hash_tags is None else hash_tags
        """Whether keys carry a hash tag (see the class docstring)."""
        if self.hash_tags and ("{" in prefix or "}" in prefix):
            raise ConfigurationError(
                f"a prefix of hash-tagged keys must hold no '{{' or '}}', not {prefix!r}"
            )
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
        self._replace = self.client.register_script(_REPLACE)

    def key_for(self, view: str, identity: Hashable, *, version: str = "") -> str:
        """``<prefix><view>:<hex digest>`` of the view's ``version`` and the key identity's JSON:
        the same in every process. With :attr:`hash_tags`, ``<prefix>{<hex digest>}:<view>``,
        the digest also covering the view's name: the hash tag is never empty and holds no
        brace, whatever the view is called. Raises
        :class:`~freshkeep.exceptions.EncodeError` for an identity that has no JSON form."""
        h = hashlib.blake2b(digest_size=16)
        if self.hash_tags:
            h.update(view.encode())
            h.update(b"\x00")
        h.update(version.encode())
        h.update(b"\x00")
        h.update(identity_json(identity))
        if self.hash_tags:
            return f"{self.prefix}{{{h.hexdigest()}}}:{view}"
        return f"{self.prefix}{view}:{h.hexdigest()}"

    async def get(self, key: str) -> Entry | None:
        """The entry under ``key``; ``None`` when absent, unreadable or Redis fails."""
        if self._skip():
            return None
        try:
            async with asyncio.timeout(self.timeout):
                data = await self.client.get(key)
        except ResponseError as exc:
            if not str(exc).startswith("WRONGTYPE"):  # CLUSTERDOWN, TRYAGAIN…: the server's
                self._failed("get", exc)
                return None
            self._corrupt(key, f"{exc}")  # the server answered: the value is not a string
            return None
        except Exception as exc:
            self._failed("get", exc)
            return None
        self._ok()
        if data is None:
            self.stats.misses += 1
            return None
        try:
            entry = self._read(key, data)
        except (CorruptEntryError, EncodeError) as exc:
            self._corrupt(key, str(exc))
            return None
        self.stats.hits += 1
        return entry

    async def put(self, key: str, entry: Entry) -> bool:
        """Store ``entry`` under ``key`` with the TTL, unless the stored entry is a genuine entry
        built from a newer revision of a common source; return whether it stored. A stored
        value this store cannot read is replaced, whatever revisions its header claims.

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
                stored, poisoned = await self._compare_and_set(key, entry, data, vector)
        except Exception as exc:
            self._failed("put", exc)
            return False
        self._ok()
        if poisoned is not None:
            self._poisoned(key, poisoned)
        if stored:
            self.stats.stored += 1
            return True
        self.stats.rejected += 1
        return False

    async def _compare_and_set(
        self, key: str, entry: Entry, data: bytes, vector: bytes
    ) -> tuple[bool, str | None]:
        """Whether ``data`` was stored, and why the value it replaced was unreadable (``None``:
        there was none, or it was a genuine entry)."""
        signs = b"1" if self.secret is not None else b"0"
        for _ in range(_ATTEMPTS):
            answer = await self._cas(keys=[key], args=[data, vector, self._ttl_ms, signs])
            if not isinstance(answer, bytes):  # the script stored
                if isinstance(answer, list):  # over a value that is not an entry
                    reason = answer[1]
                    return True, reason.decode() if isinstance(reason, bytes) else str(reason)
                return True, None
            # The stored value claims newer revisions: only a genuine entry may refuse.
            why: str | None = None
            try:
                current = self._read(key, answer)
            except (CorruptEntryError, EncodeError) as exc:
                why = str(exc)
            else:
                if entry.is_older_than(current):
                    return False, None
            digest = hashlib.sha1(answer, usedforsecurity=False).hexdigest()
            if await self._replace(keys=[key], args=[data, digest, self._ttl_ms]):
                return True, why
            # The key changed since it was read: compare again with what it holds now.
        return False, None

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
        ``<prefix>lock:<name>`` by default). A view's build lock is named after its entry's
        key, so with :attr:`hash_tags` the lock and the entry share a cluster slot."""
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
            poisoned=s.poisoned,
            last_poisoned=s.last_poisoned,
            last_poisoned_at=s.last_poisoned_at,
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
            await close(self.client)

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

    def _read(self, key: str, data: object) -> Entry:
        """``data`` as the entry stored under ``key``: what :meth:`get` serves and the only
        stored value that can refuse a put. Raises
        :class:`~freshkeep.exceptions.CorruptEntryError` (or ``EncodeError``)."""
        if not isinstance(data, bytes):
            raise CorruptEntryError(f"value is {type(data).__name__}, not bytes")
        entry = decode_entry(data, secret=self.secret, clock=self._clock)
        if self.key_for(entry.view, entry.key, version=entry.version) != key:
            raise CorruptEntryError("entry is stored under another key than its own")
        return entry

    def _poisoned(self, key: str, why: str) -> None:
        s = self.stats
        s.poisoned += 1
        s.last_poisoned = f"{key}: {why}"
        s.last_poisoned_at = self._clock.time()
        log.warning("unreadable value in Redis replaced by a put: %s", s.last_poisoned)

    def _corrupt(self, key: str, why: str) -> None:
        s = self.stats
        s.corrupt += 1
        s.last_corrupt = f"{key}: {why}"
        log.warning("corrupt entry in Redis treated as a miss: %s", s.last_corrupt)


__all__ = ["RedisStore", "RedisStoreStats", "check_client", "connect"]
