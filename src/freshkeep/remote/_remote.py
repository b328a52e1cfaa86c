"""The :class:`Remote`: values per key, fetched on expiry, served stale on error."""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import threading
from collections.abc import Callable, Hashable, Mapping
from functools import partial
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar

from freshkeep.core import tracing
from freshkeep.core.backoff import backoff
from freshkeep.core.component import Component, Kind
from freshkeep.core.singleflight import SingleFlight
from freshkeep.exceptions import ConfigurationError, RemoteUnavailableError
from freshkeep.remote._complete import Completed, FallbackItem, check_completion, complete
from freshkeep.remote._config import RemoteConfig
from freshkeep.remote._types import (
    EMPTY,
    NO_FALLBACK,
    Derive,
    Fetch,
    RemoteKeySnapshot,
    RemoteRead,
    RemoteRecord,
    RemoteSnapshot,
    RemoteStats,
    RemoteStatus,
    Slot,
)

if TYPE_CHECKING:
    from freshkeep.keeper import Keeper

log = logging.getLogger("freshkeep.remote")


def _is_async(fn: Callable[..., Any]) -> bool:
    call = getattr(fn, "__call__", None)  # noqa: B004 - an object with an async __call__
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(call)


class Remote(Component):
    """A remote value per key, with a TTL, stale-on-error and backoff.

    Create it with :meth:`freshkeep.Keeper.remote`. ``get``/``read``/``lookup`` are the async
    API; ``get_sync``/``read_sync`` serve sync code with a sync fetch (see :meth:`read_sync`).
    """

    kind: ClassVar[Kind] = "remote"

    def __init__(
        self,
        keeper: Keeper,
        name: str,
        fetch: Fetch | None,
        config: RemoteConfig,
        *,
        fallback: Any = NO_FALLBACK,
        derive: Derive | None = None,
        fetch_sync: Callable[[Any], Any] | None = None,
        defaults: Mapping[Any, Any] | None = None,
        fallback_item: FallbackItem | None = None,
    ) -> None:
        if fetch is None and fetch_sync is None:
            raise ConfigurationError(f"remote {name!r}: give fetch= or fetch_sync=")
        self._defaults = check_completion(name, defaults, fallback_item)
        self._fallback_item = fallback_item
        if fetch_sync is not None and _is_async(fetch_sync):
            raise ConfigurationError(f"remote {name!r}: fetch_sync must not be async")
        self.name = name
        self.config = config
        self.stats = RemoteStats()
        self._keeper = keeper
        self._clock = keeper.clock
        self._fetch = fetch if fetch is not None else fetch_sync
        self._fetch_is_async = fetch is not None and _is_async(fetch)
        self._fetch_sync = (
            fetch_sync
            if fetch_sync is not None
            else (fetch if fetch is not None and not self._fetch_is_async else None)
        )
        self._derive = derive
        self._fallback = fallback
        self._fallback_lookups = EMPTY
        if fallback is not NO_FALLBACK and derive is not None:
            try:
                self._fallback_lookups = self._lookups(fallback)
            except Exception as exc:
                raise ConfigurationError(
                    f"remote {name!r}: derive() fails on the fallback: {exc!r}"
                ) from exc
        self._slots: dict[Hashable, Slot] = {}
        self._flights: SingleFlight[Hashable, RemoteRecord] = SingleFlight()
        self._sync_locks: dict[Hashable, threading.Lock] = {}

    # -- async reads ------------------------------------------------------------------------

    async def get(self, key: Hashable = None, *, refresh: bool = False) -> Any:
        """The value for ``key``; raises ``RemoteUnavailableError`` if none can be served."""
        return (await self.read(key, refresh=refresh)).value

    async def lookup(self, name: str, key: Hashable = None) -> Mapping[Any, Any]:
        """The derived lookup ``name`` for ``key``. Read value and lookups together with
        :meth:`read` when both are needed: one read sees one record."""
        return (await self.read(key)).lookup(name)

    async def read(self, key: Hashable = None, *, refresh: bool = False) -> RemoteRead:
        """Read ``key``: from memory within the TTL, else fetch (single-flight per key).

        ``refresh=True`` fetches now, ignoring the TTL and the backoff.
        """
        slot = self._slots.get(key)
        now = self._clock.monotonic()
        if slot is not None and slot.expires > now and not refresh:
            return self._served(slot.record, "hit", now)
        if slot is None:
            slot = self._slots.setdefault(key, Slot())
        if not refresh and now < slot.retry_at:
            return self._unavailable(key, slot, slot.error, now)
        rec = slot.record
        if self.config.swr and rec is not None and not refresh and self._within_bounds(rec, now):
            if self._flights.running(key) is None:
                self.stats.background_refreshes += 1
                self._flights.start(key, partial(self._fetch_async, key, slot))
            return self._served(rec, "stale", now)
        task, leader = self._flights.start(key, partial(self._fetch_async, key, slot))
        try:
            rec = await asyncio.shield(task)
        except Exception as exc:
            return self._unavailable(key, slot, exc, self._clock.monotonic())
        if not leader:
            self.stats.collapsed += 1
        return self._served(rec, "miss", self._clock.monotonic())

    async def _fetch_async(self, key: Hashable, slot: Slot) -> RemoteRecord:
        fetch = self._fetch
        assert fetch is not None
        started, started_at, generation = self._begin(slot)
        try:
            with tracing.span("freshkeep.remote.fetch", {"freshkeep.remote": self.name}):
                if self._fetch_is_async:
                    value = await fetch(key)
                else:  # a sync fetch must not block the event loop
                    value = await asyncio.to_thread(fetch, key)
                    if inspect.isawaitable(value):  # e.g. a lambda returning a coroutine
                        value = await value
                done = self._complete(value)
                lookups = self._lookups(done.value)
        except Exception as exc:
            self._failed(slot, exc)
            raise
        return self._succeeded(slot, done, lookups, started, started_at, generation)

    # -- sync reads -------------------------------------------------------------------------

    def get_sync(self, key: Hashable = None, *, refresh: bool = False) -> Any:
        """:meth:`get` for sync code; see :meth:`read_sync`."""
        return self.read_sync(key, refresh=refresh).value

    def read_sync(self, key: Hashable = None, *, refresh: bool = False) -> RemoteRead:
        """:meth:`read` for sync code (threads, sync web frameworks).

        It shares the values, TTL, backoff and counters of the async API, and runs the sync
        fetch (``fetch`` when it is not async, else ``fetch_sync=``) in the calling thread;
        threads wanting the same key wait for one fetch. Without a sync fetch it raises
        ``ConfigurationError``. Stale-while-revalidate does not apply: an expired value is
        fetched in line.
        """
        fetch = self._fetch_sync
        if fetch is None:
            raise ConfigurationError(
                f"remote {self.name!r} has an async fetch: read_sync() needs fetch_sync="
            )
        slot = self._slots.get(key)
        if slot is not None and slot.expires > self._clock.monotonic() and not refresh:
            return self._served(slot.record, "hit", self._clock.monotonic())
        slot = self._slots.setdefault(key, Slot())
        with self._sync_locks.setdefault(key, threading.Lock()):
            now = self._clock.monotonic()
            if slot.expires > now and not refresh:  # another thread fetched it meanwhile
                self.stats.collapsed += 1
                return self._served(slot.record, "hit", now)
            if not refresh and now < slot.retry_at:
                return self._unavailable(key, slot, slot.error, now)
            started, started_at, generation = self._begin(slot)
            try:
                with tracing.span("freshkeep.remote.fetch", {"freshkeep.remote": self.name}):
                    value = fetch(key)
                    if inspect.isawaitable(value):
                        _discard(value)
                        raise ConfigurationError(
                            f"remote {self.name!r}: fetch_sync returned an awaitable; "
                            "read_sync() needs a fetch that returns the value"
                        )
                    done = self._complete(value)
                    lookups = self._lookups(done.value)
            except ConfigurationError:
                raise
            except Exception as exc:
                self._failed(slot, exc)
                return self._unavailable(key, slot, exc, self._clock.monotonic())
            rec = self._succeeded(slot, done, lookups, started, started_at, generation)
            return self._served(rec, "miss", self._clock.monotonic())

    # -- control ----------------------------------------------------------------------------

    def reload(self, *keys: Hashable) -> None:
        """Make the next read of ``keys`` (of every key, when none are given) fetch again.

        The values are kept: if that fetch fails, they are still served as ``error-stale``.
        A fetch already in flight when this is called stores its value as expired.
        """
        slots = (
            self._slots.values()
            if not keys
            else [s for k in keys if (s := self._slots.get(k)) is not None]
        )
        for slot in slots:
            slot.expires = -math.inf
            slot.retry_at = -math.inf
            slot.generation += 1

    def peek(self, key: Hashable = None) -> RemoteRecord | None:
        """The record held for ``key``, without any freshness check or fetch."""
        slot = self._slots.get(key)
        return slot.record if slot is not None else None

    def cached(self, key: Hashable = None, default: Any = None) -> Any:
        """The value held for ``key``, from memory only: it never fetches, never starts a
        background refresh, and is not counted as a read. Within the TTL or past it alike, as
        long as the value may still be served (``max_stale``); otherwise, or when nothing was
        fetched for ``key`` yet, ``default`` (not the fallback). Safe from any thread."""
        slot = self._slots.get(key)
        rec = slot.record if slot is not None else None
        if rec is None or not self._within_bounds(rec, self._clock.monotonic()):
            return default
        return rec.value

    async def wait_idle(self) -> None:
        """Wait for fetches in flight (background refreshes included) to end."""
        await self._flights.wait_all()

    @property
    def in_flight(self) -> int:
        """How many async fetches of this remote are running."""
        return len(self._flights)

    def snapshot(self) -> RemoteSnapshot:
        """The remote's settings, counters and, per key, the age of its value and its last
        error."""
        s, c = self.stats, self.config
        now, wall = self._clock.monotonic(), self._clock.time()
        values: dict[str, RemoteKeySnapshot] = {}
        for key, slot in list(self._slots.items()):
            rec = slot.record
            values[str(key)] = RemoteKeySnapshot(
                age=None if rec is None else now - rec.fetched_mono,
                fetched_at=None if rec is None else rec.fetched_at,
                expired=slot.expires <= now,
                failures=slot.failures,
                retry_in=max(0.0, slot.retry_at - now) if slot.failures else None,
                last_error=None if slot.error is None else _describe(slot.error),
                last_error_at=slot.error_at,
            )
        ages = [v.age for v in values.values() if v.age is not None]
        return RemoteSnapshot(
            name=self.name,
            remote=self.name,
            ttl=c.ttl,
            max_stale=c.max_stale,
            swr=c.swr,
            reads=dict(s.reads),
            fetches=s.fetches,
            fetch_errors=s.fetch_errors,
            background_refreshes=s.background_refreshes,
            collapsed=s.collapsed,
            backfilled=s.backfilled,
            filled=s.filled,
            last_error=s.last_error,
            last_error_at=s.last_error_at,
            last_fetch_at=s.last_fetch_at,
            keys=len(values),
            failing=sum(1 for v in values.values() if v.failures),
            max_age=max(ages) if ages else None,
            in_flight=self.in_flight,
            values=values,
            now=wall,
        )

    # -- internals --------------------------------------------------------------------------

    def _complete(self, value: Any) -> Completed:
        if self._defaults is None and self._fallback_item is None:
            return Completed(value, frozenset(), frozenset())
        done = complete(self.name, value, self._defaults, self._fallback_item)
        self.stats.backfilled += len(done.backfilled)
        self.stats.filled += len(done.filled)
        return done

    def _lookups(self, value: Any) -> Mapping[str, Mapping[Any, Any]]:
        if self._derive is None:
            return EMPTY
        derived = self._derive(value)
        return MappingProxyType({str(n): MappingProxyType(dict(m)) for n, m in derived.items()})

    def _within_bounds(self, rec: RemoteRecord, now: float) -> bool:
        bound = self.config.max_stale
        return bound is None or now - rec.fetched_mono <= bound

    def _served(self, rec: RemoteRecord | None, status: RemoteStatus, now: float) -> RemoteRead:
        assert rec is not None
        reads = self.stats.reads
        reads[status] = reads.get(status, 0) + 1
        return RemoteRead(
            rec.value,
            rec.lookups,
            status,
            now - rec.fetched_mono,
            None,
            rec.backfilled,
            rec.filled,
        )

    def _unavailable(
        self, key: Hashable, slot: Slot, exc: BaseException | None, now: float
    ) -> RemoteRead:
        rec = slot.record
        reads = self.stats.reads
        if rec is not None and self._within_bounds(rec, now):
            reads["error-stale"] = reads.get("error-stale", 0) + 1
            age = now - rec.fetched_mono
            return RemoteRead(
                rec.value, rec.lookups, "error-stale", age, exc, rec.backfilled, rec.filled
            )
        if self._fallback is not NO_FALLBACK:
            reads["fallback"] = reads.get("fallback", 0) + 1
            return RemoteRead(self._fallback, self._fallback_lookups, "fallback", None, exc)
        reason = f": {_describe(exc)}" if exc is not None else ""
        raise RemoteUnavailableError(
            f"remote {self.name!r} has no value to serve for key {key!r} and no fallback{reason}",
            remote=self.name,
            key=key,
        ) from exc

    def _begin(self, slot: Slot) -> tuple[float, float, int]:
        self.stats.fetches += 1
        return self._clock.monotonic(), self._clock.time(), slot.generation

    def _succeeded(
        self,
        slot: Slot,
        done: Completed,
        lookups: Mapping[str, Mapping[Any, Any]],
        started: float,
        started_at: float,
        generation: int,
    ) -> RemoteRecord:
        rec = RemoteRecord(done.value, lookups, started_at, started, done.backfilled, done.filled)
        old = slot.record
        if old is not None and old.fetched_mono > started:
            return old  # a newer fetch finished first; keep its value
        slot.record = rec
        slot.expires = math.inf if self.config.ttl == 0 else started + self.config.ttl
        if generation != slot.generation:
            slot.expires = -math.inf  # reloaded while in flight: serve it, fetch again next
        slot.failures, slot.backoff, slot.retry_at = 0, 0.0, -math.inf
        self.stats.last_fetch_at = started_at
        return rec

    def _failed(self, slot: Slot, exc: BaseException) -> None:
        c = self.config
        now = self._clock.monotonic()
        slot.failures += 1
        slot.backoff = backoff(slot.failures, c.retry_backoff, c.max_retry_backoff)
        slot.retry_at = now + slot.backoff
        slot.error, slot.error_at = exc, self._clock.time()
        s = self.stats
        s.fetch_errors += 1
        s.last_error, s.last_error_at = _describe(exc), slot.error_at
        log.warning("fetch of remote %r failed: %s", self.name, s.last_error)


def _discard(awaitable: Any) -> None:
    close = getattr(awaitable, "close", None)
    if close is not None:
        close()  # no "never awaited" warning


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
