"""Cached views: revision-gated, sectioned, single-flight, stale-while-revalidate.

A :class:`View` is created by :meth:`freshkeep.Keeper.view`. Reading it (:meth:`View.get`) is
one of: a hit (no I/O when revisions are pushed), a rebuild of the changed sections, a stale
serve with one background refresh, a full build, or, when a build fails, the last good value
within ``stale_if_error``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, ClassVar, assert_never

from freshkeep._view_builds import DELTA, ViewBuilds
from freshkeep._view_refresh import ViewRefresh
from freshkeep._view_replica import ReplicaStats
from freshkeep._view_types import (
    CLIENT_REFRESH,
    BuildContext,
    Builder,
    ClientRefresh,
    PolicySnapshot,
    Probe,
    ReplicaSnapshot,
    Section,
    ViewObserver,
    ViewSnapshot,
    ViewStats,
    check_labels,
)
from freshkeep.core.clock import SystemClock
from freshkeep.core.component import Component, Kind
from freshkeep.core.entry import Entry, Fingerprint, Read, Status, compute_etag
from freshkeep.core.partitions import Partitioned
from freshkeep.core.policy import (
    Hit,
    Miss,
    Policy,
    RebuildSections,
    ServeStale,
    decide,
)
from freshkeep.core.revision import Revision, is_older
from freshkeep.core.shared_cache import SharedCache, check_grant
from freshkeep.core.singleflight import SingleFlight
from freshkeep.exceptions import (
    ConfigurationError,
    FreshkeepError,
    UnavailableError,
)

if TYPE_CHECKING:
    from freshkeep.keeper import Keeper
    from freshkeep.sql.replica import ReadReplica

__all__ = [
    "BuildContext",
    "Builder",
    "ClientRefresh",
    "PolicySnapshot",
    "PrincipalView",
    "Probe",
    "ReplicaSnapshot",
    "Section",
    "SharedCache",
    "View",
    "ViewObserver",
    "ViewSnapshot",
    "ViewStats",
]

log = logging.getLogger("freshkeep.views")

_KEY_SOURCES = "freshkeep.key-sources"
"""An entry's memo: the sources of its key, found known and covered at an earlier hit."""


class View(ViewBuilds, ViewRefresh, Component):
    """A cached, revision-gated view. Create it with :meth:`freshkeep.Keeper.view`."""

    kind: ClassVar[Kind] = "view"

    def __init__(
        self,
        keeper: Keeper,
        name: str,
        sections: Mapping[str, Section],
        *,
        policy: Policy,
        probe: Probe | None,
        per_principal: bool,
        public: bool,
        version: str = "",
        labels: Mapping[str, str] | None = None,
        client_refresh: ClientRefresh | None = None,
        retry_backoff: float = 1.0,
        max_retry_backoff: float = 30.0,
        shared_cache: SharedCache | None = None,
        replica: ReadReplica | None = None,
    ) -> None:
        if not sections:
            raise ConfigurationError(f"view {name!r} needs at least one section")
        if per_principal and public:
            raise ConfigurationError(f"view {name!r} cannot be both per_principal and public")
        if probe not in (None, "always", "interval"):
            raise ConfigurationError(f"probe must be 'always' or 'interval', not {probe!r}")
        self.name = name
        self.sections: dict[str, Section] = dict(sections)
        self.sources: tuple[str, ...] = tuple(
            sorted({s for x in sections.values() for s in x.sources})
        )
        """The sources every key depends on (a keyed section adds its key's own)."""
        self.partitions: tuple[Partitioned, ...] = tuple(
            dict.fromkeys(p for x in sections.values() for p in x.keyed)
        )
        """The partitioned sources whose partition of the key a keyed section reads."""
        self.keyed = any(x.per_key for x in sections.values())
        self._fixed_sources = all(x.sources_of is None for x in sections.values())
        """Whether a key's sources are the same at every read (no callable gives them)."""
        """Whether the sources of an entry depend on its key."""
        self.policy = policy
        if shared_cache is not None:
            policies = (policy, *(x.policy for x in self.sections.values() if x.policy is not None))
            check_grant(name, shared_cache, public=public, policies=policies)
        self.shared_cache = shared_cache
        """What shared HTTP caches may do with the view's current responses (``None``: revalidate
        every use, ``no-cache``)."""
        self.probe = probe
        self.per_principal = per_principal
        self.public = public
        self.version = version
        self.labels: dict[str, str] = check_labels(
            {**keeper.settings.status_labels, **(labels or {})}, f"view {name!r}"
        )
        """What the status header says for each status (a status not here keeps its name)."""
        mode = client_refresh if client_refresh is not None else keeper.settings.client_refresh
        if mode not in CLIENT_REFRESH:
            raise ConfigurationError(
                f"view {name!r}: client_refresh must be one of {', '.join(CLIENT_REFRESH)}, "
                f"not {mode!r}"
            )
        self.client_refresh = mode
        """Who may force a rebuild over HTTP (:meth:`may_force`)."""
        self.client_refresh_interval = keeper.settings.client_refresh_interval
        self._forced = {}
        self.stats = ViewStats()
        self.replica = replica
        """The read replica its sections are built on (:mod:`freshkeep.sql.replica`), or
        ``None``: built wherever its builders read."""
        self._replica_stats = ReplicaStats()
        self.observers: list[ViewObserver] = []
        """Told about builds and stale serves (slow path only); see :class:`ViewObserver`."""
        self._keeper = keeper
        self._tracker = keeper.tracker
        self._store = keeper.store
        self._clock = keeper.clock
        # The hit path calls these directly: C functions, no Python frame in between.
        self._mono = (
            time.monotonic if isinstance(keeper.clock, SystemClock) else keeper.clock.monotonic
        )
        self._lookup = self._store.hot_lookup()
        self._section_sources = {n: s.sources for n, s in self.sections.items()}
        self._section_keys: dict[str, frozenset[str]] = {}
        self._flights: SingleFlight[Hashable, tuple[Entry, Status]] = SingleFlight(self._on_error)
        self._retry_at: dict[Hashable, tuple[float, int]] = {}
        self._write_backs = {}
        self._retry_backoff = retry_backoff
        self._max_retry_backoff = max_retry_backoff
        self._hits = 0
        self._hot: Entry | None = None
        """The unkeyed entry :meth:`read` serves while its epoch is current (the store turns
        the epoch of an entry it drops to -1)."""
        self._probe_always = False
        self._none_key: Hashable = (name, None)
        self._source_set = frozenset(self.sources)
        self._policies: dict[str, Policy] | None = {
            n: s.policy for n, s in self.sections.items() if s.policy is not None
        } or None
        self._capped = any(
            p.max_age is not None for p in (policy, *(self._policies or {}).values())
        )
        """Whether any section has a ``max_age``: reads then compare build times."""
        self._deltas = any(s.apply is not None for s in self.sections.values())
        """Whether a section applies changes (their sources' changes are recorded)."""
        self.apply_deltas = True
        """Whether sections with ``apply`` apply changes (``False``: they are rebuilt, as
        sections without; e.g. to compare the two)."""
        if self._deltas:
            keeper.changes.follow(
                src for s in self.sections.values() if s.apply is not None for src in s.sources
            )
        self._tracker.register(self.sources)

    # -- reading --------------------------------------------------------------------------

    async def get(
        self,
        key: Hashable = None,
        *,
        principal: str | None = None,
        refresh: bool = False,
        min_revision: Mapping[str, Revision] | None = None,
    ) -> Read:
        """Read the view for ``key`` (and ``principal``, for per-principal views).

        ``refresh=True`` rebuilds every section now (single-flight) after reading fresh
        revisions. ``min_revision`` is a causal token (the revisions a write produced, e.g.
        from its response's ``X-Freshkeep-Revision``): the read is never answered from an entry
        older than it, not even stale. Raises :class:`~freshkeep.exceptions.UnavailableError`
        when no value within the policy's bounds can be served.
        """
        ck = self._none_key if key is None else (self.name, key)
        # The hit path: the entry was found current at the tracker's epoch, and the epoch has
        # not moved since (no revision changed, the resync deadline has not passed). One
        # counter serves the hit count and the store's recency (second-chance eviction).
        entry = self._lookup(ck)
        if (
            entry is not None
            and entry.epoch == self._tracker.epoch
            and not refresh
            and min_revision is None
        ):
            entry.hits += 1
            return entry.hit
        return await self._get_slow(ck, key, principal, entry, refresh, min_revision)

    async def read(self) -> Read:
        """``await view.get()``, at the cost of a hit: the argument-free read of the unkeyed
        entry (no key, principal, refresh or token to look at).

        The same read as :meth:`get` with no arguments, statuses and bounds included: while the
        entry it served last is still stored and the revisions have not moved since it was
        found current, it is served again; otherwise :meth:`get` answers.
        """
        entry = self._hot
        if entry is not None and entry.epoch == self._tracker.epoch:
            entry.hits += 1
            return entry.hit
        read = await self.get()
        self._hot = self._lookup(self._none_key)
        return read

    async def _get_slow(
        self,
        ck: Hashable,
        key: Hashable,
        principal: str | None,
        entry: Entry | None,
        refresh: bool,
        min_revision: Mapping[str, Revision] | None,
    ) -> Read:
        tracker = self._tracker
        token: dict[str, Revision] | None = None
        sources, source_set = self.sources, self._source_set
        probe = self._probe_always or tracker.fresh_until <= self._mono()
        try:
            if self.keyed:
                memo = entry.memo.get(_KEY_SOURCES) if entry is not None else None
                if memo is None:
                    sources = self._all_sources(self._sources_of(key))
                    source_set = frozenset(sources)
                    await self._learn(sources)
                else:  # checked at an earlier hit on this entry: known and covered
                    sources, source_set = memo
        except UnavailableError as exc:
            self._keeper.stats.probe_errors += 1
            return self._on_failed_read(ck, exc)
        if (
            (min_revision or self._probe_always)
            and entry is not None
            and not entry.vector.keys() <= source_set
        ):
            # Sources its build found (BuildContext.depend) are probed, and count for a
            # token, too.
            sources = tuple(sorted({*sources, *entry.vector}))
            source_set = frozenset(sources)
        if min_revision:
            token = {s: r for s, r in min_revision.items() if s in source_set}
            snap = tracker.snapshot
            behind = any(is_older(snap.get(s, 0), r) for s, r in token.items())
            probe = probe or behind
        if probe:
            try:
                await tracker.resync(sources if self._probe_always or token else None)
            except UnavailableError as exc:
                # Rule 7: a failing database fails no read that an entry within
                # stale_if_error can answer.
                self._keeper.stats.probe_errors += 1
                return self._on_failed_read(ck, exc)
            entry = self._lookup(ck)
        must_rebuild: Callable[[Sequence[str], Fingerprint], bool] = tracker.must_rebuild
        if token:
            # Never older than the token, but no newer than the database either: a token
            # from the future must not force a rebuild on every read.
            snap = tracker.snapshot
            floor = {s: r for s, r in token.items() if not is_older(snap.get(s, 0), r)}

            def below_token(sources: Sequence[str], fp: Fingerprint) -> bool:
                return tracker.must_rebuild(sources, fp) or any(
                    s in floor and is_older(rev, floor[s])
                    for s, rev in zip(sources, fp, strict=True)
                )

            must_rebuild = below_token

        return await self._read(ck, key, principal, entry, refresh, must_rebuild)

    def current_hit(self, key: Hashable = None) -> Read | None:
        """The hit a read of ``key`` answers now, found without I/O or a check, or ``None``
        when a read would have to look further (no entry, revisions moved, a per-principal
        view). Counted as a hit."""
        if self.per_principal:
            return None
        entry = self._lookup(self._none_key if key is None else (self.name, key))
        if entry is not None and entry.epoch == self._tracker.epoch:
            entry.hits += 1
            return entry.hit
        return None

    @property
    def keeper(self) -> Keeper:
        """The keeper this view belongs to."""
        return self._keeper

    async def current_etag(self, key: Hashable = None, *, principal: str | None = None) -> str:
        """The ETag a read of ``key`` would carry if it were built from the current revisions.

        Reads revisions as :meth:`get` does (so it costs no I/O when they are pushed) and runs
        no builder: a conditional request whose ETag matches is answered ``304`` from this.
        """
        ck = self._cache_key(key, principal)  # validates principal
        tracker = self._tracker
        sources = self.sources
        if self.keyed:
            entry = self._store.peek(ck)
            wanted = self._all_sources(self._sources_of(key))
            # Sources its build found (BuildContext.depend) are part of its ETag.
            found = wanted if entry is None else (*wanted, *entry.vector)
            sources = tuple(sorted(set(found)))
            await self._learn(sources)
        if self._probe_always or tracker.fresh_until <= self._mono():
            await tracker.resync(sources if self._probe_always else None)
        vector = dict(zip(sources, tracker.current(sources), strict=True))
        return compute_etag(self.name, self._identity(key, principal), vector, self.version)

    def peek(self, key: Hashable = None, *, principal: str | None = None) -> Entry | None:
        """The stored entry for ``key``, without any freshness check."""
        return self._store.peek(self._cache_key(key, principal))

    def invalidate(
        self, key: Hashable = None, *, principal: str | None = None, section: str | None = None
    ) -> bool:
        """Drop the stored entry for ``key``; return whether there was one.

        With ``section``, drop that section only: the next read rebuilds it in line (status
        ``section``, or ``miss`` for a view of one section) and keeps the others, whatever
        the revisions and the policy say. An unknown section raises
        :class:`~freshkeep.exceptions.ConfigurationError`.
        """
        ck = self._cache_key(key, principal)
        if section is None:
            return self._store.delete(ck)
        if section not in self.sections:
            raise ConfigurationError(
                f"view {self.name!r} has no section {section!r} "
                f"(its sections: {', '.join(self.sections)})"
            )
        entry = self._store.peek(ck)
        if entry is None:
            return False
        entry.invalid = entry.invalid | {section}
        entry.epoch = -1  # the next read goes through decide()
        return True

    async def wait_idle(self) -> None:
        """Wait for builds in flight (background refreshes included) to end, their storing in
        the shared store included."""
        await self._flights.wait_all()
        while self._write_backs:
            await asyncio.wait(list(self._write_backs.values()))

    @property
    def in_flight(self) -> int:
        """How many builds of this view are running (or storing their entry in the shared
        store: the reads that waited for them have their answer already)."""
        return len(self._flights) + len(self._write_backs)

    def snapshot(self, *, store_hits: int | None = None) -> ViewSnapshot:
        """The view's counters now. ``store_hits``: the hits counted on this view's entries,
        when the caller has them (:meth:`MemoryStore.hits_by_view`)."""
        s = self.stats
        reads = dict(s.reads)
        if store_hits is None:
            store_hits = self._store.hits_of(self.name)
        reads["hit"] = reads.get("hit", 0) + self._hits + store_hits
        p = self.policy
        return ViewSnapshot(
            name=self.name,
            view=self.name,
            sources=self.sources,
            policy=PolicySnapshot(
                mode=p.mode,
                max_stale=p.max_stale,
                stale_if_error=p.stale_if_error,
                max_age=p.max_age,
            ),
            reads=reads,
            builds=dict(s.builds),
            build_seconds=dict(s.build_seconds),
            build_errors=s.build_errors,
            background_refreshes=s.background_refreshes,
            collapsed=s.collapsed,
            shared_hits=s.shared_hits,
            shared_waits=s.shared_waits,
            last_error=s.last_error,
            last_error_at=s.last_error_at,
            last_build_at=s.last_build_at,
            failing_since=s.failing_since,
            in_flight=self.in_flight,
            deltas=dict(s.deltas),
            delta_seconds=dict(s.delta_seconds),
            delta_fallbacks=dict(s.delta_fallbacks),
            partitions=tuple(str(p) for p in self.partitions),
            replica=None
            if self.replica is None
            else self._replica_stats.snapshot(self.name, self.replica),
        )

    # -- internals ------------------------------------------------------------------------

    def _cache_key(self, key: Hashable, principal: str | None) -> Hashable:
        if self.per_principal:
            if principal is None:
                raise ConfigurationError(f"view {self.name!r} is per-principal: pass principal=")
            return (self.name, principal, key)
        return self._none_key if key is None else (self.name, key)

    def _count(self, status: Status) -> None:
        reads = self.stats.reads
        reads[status] = reads.get(status, 0) + 1

    async def _read(
        self,
        ck: Hashable,
        key: Hashable,
        principal: str | None,
        entry: Entry | None,
        refresh: bool,
        must_rebuild: Callable[[Sequence[str], Fingerprint], bool],
    ) -> Read:
        tracker = self._tracker
        if self.keyed and entry is not None and _KEY_SOURCES not in entry.memo:
            wants = self._sources_of(key)
            if len(self._covers(entry, wants)) < len(wants):
                entry = None  # built when the key had other sources: rebuild it
        for _ in range(3):
            age = self._mono() - entry.confirmed_mono if entry is not None else 0.0
            decision = decide(
                entry,
                tracker.current,
                must_rebuild,
                age=age,
                policy=self.policy,
                refresh=refresh,
                now=self._clock.time() if self._capped else None,
                policies=self._policies,
            )
            background: tuple[str, ...] = ()
            reason: str | None = None
            if isinstance(decision, Hit):
                assert entry is not None
                if self.keyed and self._fixed_sources and _KEY_SOURCES not in entry.memo:
                    # The key's sources cannot change: the next checks of this entry skip
                    # working them out again.
                    srcs = self._all_sources(self._sources_of(key))
                    entry.memo[_KEY_SOURCES] = (srcs, frozenset(srcs))
                entry.confirmed_mono = max(entry.confirmed_mono, tracker.confirmed_at())
                # The hit path skips decide() until the epoch moves; with a max_age it must
                # move on its own (the resync timer), or every read comes back here.
                if not self._probe_always and tracker.timed and self._lookup(ck) is entry:
                    if not self._capped or tracker.has_source:
                        entry.epoch = tracker.epoch
                self._hits += 1
                return entry.hit
            if isinstance(decision, ServeStale) and self._deltas and self.apply_deltas:
                assert entry is not None
                if self.delta_ready(entry, decision.sections):
                    # Applying the known changes costs less than serving stale: do it now.
                    decision = RebuildSections(decision.sections, (), decision.reason)
            if isinstance(decision, ServeStale):
                assert entry is not None
                self._refresh_in_background(ck, key, principal, decision.sections)
                self._count("stale")
                if self.observers:
                    self._observe_stale("stale", age)
                return Read("stale", entry, reason=_reason(decision.reason))
            if isinstance(decision, Miss):
                sections = tuple(self.sections)
                reason = "expired" if decision.reason == "expired" else None
            elif isinstance(decision, RebuildSections):
                sections = decision.sections
                background = decision.background
                reason = _reason(decision.reason)
            else:  # pragma: no cover - exhaustive
                assert_never(decision)
            try:
                task, leader = self._flights.start(
                    ck, partial(self._build, ck, key, principal, sections, refresh)
                )
                built, status = await asyncio.shield(task)
            except FreshkeepError as exc:
                if isinstance(exc, ConfigurationError):
                    raise
                return self._on_failed_read(ck, exc)
            except Exception as exc:
                return self._on_failed_read(ck, exc)
            if leader:
                if reason is None and DELTA in built.memo:
                    reason = "delta"
                self._count(status)
                if background:  # sections whose own policy lets them be served stale
                    self._refresh_in_background(ck, key, principal, background)
                return Read(status, built, reason=reason)
            # A waiter: the build it joined may have read revisions older than this read saw.
            entry, refresh = built, False
            age = self._mono() - built.confirmed_mono
            if isinstance(
                decide(built, tracker.current, tracker.must_rebuild, age=age, policy=Policy()),
                Hit,
            ):
                self._count(status)
                self.stats.collapsed += 1
                return Read(status, built, collapsed=True)
        # Revisions kept moving under us; serve the newest build we waited for.
        assert entry is not None
        self._count("miss")
        return Read("miss", entry, collapsed=True)


def _reason(reason: str) -> str | None:
    return "expired" if reason == "expired" else None


class PrincipalView(View):
    """A view whose entries are keyed by principal (``per_principal=True``)."""

    async def get(
        self,
        key: Hashable = None,
        *,
        principal: str | None = None,
        refresh: bool = False,
        min_revision: Mapping[str, Revision] | None = None,
    ) -> Read:
        """Read the view for ``key`` as ``principal`` (required); see :meth:`View.get`."""
        ck = self._cache_key(key, principal)
        entry = self._lookup(ck)
        if (
            entry is not None
            and entry.epoch == self._tracker.epoch
            and not refresh
            and min_revision is None
        ):
            entry.hits += 1
            return entry.hit
        return await self._get_slow(ck, key, principal, entry, refresh, min_revision)
