"""The :class:`Keeper`: revisions, the store, the bus, and the views built on them."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from freshkeep._keeper_components import KeeperComponents
from freshkeep._keeper_types import KeeperSnapshot, KeeperStats
from freshkeep.buses.local import LocalBus
from freshkeep.core.change_wire import CommitChanges
from freshkeep.core.changes import ChangeLog
from freshkeep.core.clock import SYSTEM_CLOCK, Clock
from freshkeep.core.component import Component
from freshkeep.core.partitions import Partitioned, every_partition, with_every
from freshkeep.core.policy import Policy
from freshkeep.core.revision import Revision, RevisionTracker
from freshkeep.core.sources import SourceCheck
from freshkeep.exceptions import ConfigurationError, FreshkeepError, UnknownSourceError
from freshkeep.ports import Bus, Lock, RevisionSource, SharedStore
from freshkeep.settings import Settings
from freshkeep.stores.memory import MemoryStore
from freshkeep.views import Probe, View

log = logging.getLogger("freshkeep")

if TYPE_CHECKING:
    from freshkeep.health import Health


def _check_port(what: str, value: object, port: type) -> None:
    """Refuse a backend that does not subclass its port (its optional capabilities are called
    without probing)."""
    if value is not None and not isinstance(value, port):
        raise ConfigurationError(
            f"{what} must be a freshkeep.ports.{port.__name__} (subclass it), "
            f"not {type(value).__name__}"
        )


class Keeper(KeeperComponents):
    """Keeps derived data fresh: one per application (per database).

    ``revisions`` reads source revisions (for SQLAlchemy:
    :class:`freshkeep.sql.SQLAlchemyRevisions`); without it, revisions are
    only learned from :meth:`publish` and the bus. ``store`` is this process's memory store;
    ``bus`` carries revisions between processes (an in-process :class:`LocalBus` by default).
    ``shared`` is a store every instance shares (L2, e.g.
    :class:`~freshkeep.stores.redis.RedisStore`): a build is looked up there before it runs and
    stored there after; ``lock`` (e.g. ``shared.lock()``) makes a rebuild single-flight across
    instances (the others wait up to ``lock_wait`` seconds for its result).

    Every view, remote, notifier, artifact cache, processing pipeline and job queue is a
    :class:`~freshkeep.core.component.Component` registered with :meth:`register` (views,
    remotes and notifiers made here, and artifact caches given ``keeper=``, register
    themselves); health checks, metrics and the dashboard read their typed snapshots.
    """

    health_factory: ClassVar[Callable[[Keeper], Health] | None] = None
    """Makes :attr:`health` (set by the :mod:`freshkeep` package to
    :class:`freshkeep.health.Health`: the keeper does not import the health package)."""

    def __init__(
        self,
        revisions: RevisionSource | None = None,
        *,
        store: MemoryStore | None = None,
        bus: Bus | None = None,
        probe: Probe | None = None,
        resync_interval: float | None = None,
        policy: Policy | None = None,
        clock: Clock = SYSTEM_CLOCK,
        settings: Settings | None = None,
        shared: SharedStore | None = None,
        lock: Lock | None = None,
        sources: Iterable[str] = (),
    ) -> None:
        _check_port("revisions", revisions, RevisionSource)
        _check_port("bus", bus, Bus)
        _check_port("shared", shared, SharedStore)
        _check_port("lock", lock, Lock)
        self.settings = settings if settings is not None else Settings.load()
        s = self.settings
        interval = s.resync_interval if resync_interval is None else resync_interval
        if interval <= 0:
            raise ConfigurationError(f"resync_interval must be > 0, not {interval!r}")
        probe = probe if probe is not None else s.probe
        if probe not in (None, "always", "interval"):
            raise ConfigurationError(f"probe must be 'always' or 'interval', not {probe!r}")
        self.clock = clock
        self.revisions = revisions
        self.tracker = RevisionTracker(revisions, resync_interval=interval, clock=clock)
        self.changes = ChangeLog()
        """This process's committed changes to the sources delta sections read."""
        self.store = (
            store
            if store is not None
            else MemoryStore(max_entries=s.memory_max_entries, max_bytes=s.memory_max_bytes)
        )
        self.bus: Bus = bus if bus is not None else LocalBus()
        self.shared = shared
        """The store shared by every instance (L2 behind :attr:`store`), or ``None``."""
        self.build_lock = lock
        """The lock that makes a rebuild single-flight across instances, or ``None``."""
        self.lock_lease = s.lock_lease
        self.lock_wait = s.lock_wait
        self.default_policy = (
            policy if policy is not None else Policy.strict(stale_if_error=s.stale_if_error)
        )
        self.stats = KeeperStats()
        self.instance_id = uuid.uuid4().hex
        """Identifies this keeper's messages on the bus."""
        self._probe = probe
        self._hooks = False
        self._sources = SourceCheck(sources)
        self._sources_checked = False
        self._partitions: dict[str, dict[str, Partitioned]] = {}
        self._init_components()
        if isinstance(self.bus, Component):
            self.register(self.bus)
        if isinstance(shared, Component):
            self.register(shared)
        self._unsubscribe = self.bus.subscribe(self._on_bus)
        self._unsubscribe_changes = self.bus.on_changes(self._on_bus_changes)
        self._bus_remover: Callable[[], Any] | None = None
        self._bus_is_down = False
        self._health: Health | None = None

    @classmethod
    def from_settings(
        cls, revisions: RevisionSource | None = None, *, settings: Settings | None = None, **kw: Any
    ) -> Keeper:
        """A keeper configured from URLs: ``FRESHKEEP_STORE_URL`` (``memory://`` or
        ``redis://…``: a shared store, with its build lock) and ``FRESHKEEP_BUS_URL``
        (``local://``, ``redis://…``, ``postgresql://…``). Switching from the embedded default
        to the distributed mode is configuration, not code. Call :meth:`start` before serving
        (it connects the bus) and :meth:`aclose` at shutdown. ``kw`` go to :class:`Keeper`.
        """
        from freshkeep.buses import bus_from_url
        from freshkeep.stores.base import store_from_settings

        s = settings if settings is not None else Settings.load()
        shared = kw.pop("shared", None) or store_from_settings(s)
        lock = kw.pop("lock", None)
        if lock is None and shared is not None:
            lock = shared.lock()
        bus = kw.pop("bus", None) or bus_from_url(s.bus_url, settings=s)
        return cls(revisions, settings=s, shared=shared, lock=lock, bus=bus, **kw)

    async def start(self) -> None:
        """Connect the bus (if it is a network bus) and read revisions on every (re)connect,
        so a message lost while disconnected is caught at once. Never raises for a bus that
        cannot connect yet: it keeps retrying, and revisions are re-read every resync_interval.
        Validates the ``FRESHKEEP_HEALTH_*`` overrides, the revision source
        (:meth:`RevisionSource.check <freshkeep.ports.RevisionSource.check>`: freshkeep's
        tables, and the triggers it was told to expect, exist; triggers that compute
        partitions compute each of :attr:`partitions` of their table) and every view's
        sources first (``ConfigurationError`` naming the command to run,
        :class:`~freshkeep.exceptions.UnknownSourceError`).
        """
        self.health.configure()
        if self.revisions is not None:
            # e.g. freshkeep's tables were never created, or triggers compute other partitions
            await self.revisions.check(partitions=self.partitions)
        await self.check_sources()
        if self._bus_remover is None:
            removers = [self.bus.on_connect(self._bus_up), self.bus.on_disconnect(self._bus_down)]

            def remove() -> None:
                for r in removers:
                    r()

            self._bus_remover = remove
        if not await self.bus.start():
            self._bus_down()  # not connected yet: it keeps trying in the background

    @property
    def bus_down(self) -> bool:
        """Whether the bus is down: nothing is pushed, so every read probes revisions."""
        return self._bus_is_down

    def _bus_down(self) -> None:
        """No revision is pushed while the bus is down: every read probes until it is back."""
        self._bus_is_down = True
        for v in self._views.values():
            self._apply_probe(v)
        self.tracker.invalidate()

    async def _bus_up(self) -> None:
        self._bus_is_down = False
        for v in self._views.values():
            self._apply_probe(v)
        try:  # a message lost while disconnected is caught here
            await self.tracker.resync()
        except FreshkeepError:
            self.stats.probe_errors += 1

    @property
    def health(self) -> Health:
        """The health checks of this keeper (:class:`freshkeep.health.Health`), made on
        first use."""
        if self._health is None:
            factory = Keeper.health_factory
            if factory is None:  # pragma: no cover - the freshkeep package sets it
                raise ConfigurationError("freshkeep.health is not loaded")
            self._health = factory(self)
        return self._health

    # -- sources ---------------------------------------------------------------------------

    def declare(self, *sources: str) -> None:
        """Declare ``sources`` as the application's own: it bumps them itself
        (:meth:`bump`, :meth:`publish`), so views may read them (tags: ``"tag:…"``)."""
        for s in sources:
            if not isinstance(s, str) or not s:
                raise ConfigurationError(f"a source must be a non-empty string, not {s!r}")
        self._sources.declared.update(sources)

    def partition(self, partitioned: Partitioned) -> Partitioned:
        """Declare a partitioned source (``table_source(Order, by="customer_id")``): the write
        hooks of this keeper then bump the partitions of the rows a write touches instead of
        every partition of the table. Views declare the partitions of their sections
        themselves; a process that writes but defines no view (a worker) declares the same
        partitions here. A table may be partitioned by several columns. Returns it."""
        if not isinstance(partitioned, Partitioned):
            raise ConfigurationError(f"not a partitioned source: {partitioned!r}")
        found = self._partitions.setdefault(partitioned.table, {})
        old = found.get(partitioned.column)
        if old is not None and old != partitioned:
            raise ConfigurationError(
                f"{partitioned} is already partitioned into {old.buckets} buckets, "
                f"not {partitioned.buckets}: every reader and writer must use the same number"
            )
        found[partitioned.column] = partitioned
        return partitioned

    def every_of(self, table: str) -> set[str]:
        """The sources that move every partition of the table source ``table``: its own
        ``/*``, and that of each partition this keeper knows it by (the bare name's, for
        ``table:schema.t``)."""
        return {every_partition(table), *(p.every for p in self.partitions_of(table))}

    @property
    def partitions(self) -> tuple[Partitioned, ...]:
        """Every partitioned source declared (:meth:`partition`, and by views)."""
        return tuple(p for by in self._partitions.values() for p in by.values())

    def partitions_of(self, table: str) -> tuple[Partitioned, ...]:
        """The partitioned sources of the table source ``table`` (``table:<name>``)."""
        found = self._partitions.get(table)
        if found is None and "." in table:  # table:public.tasks for a partition of table:tasks
            found = self._partitions.get("table:" + table.rsplit(".", 1)[-1])
        return tuple(found.values()) if found else ()

    @property
    def source_catalog(self) -> frozenset[str]:
        """What the revision source listed at :meth:`check_sources` (the database's tables and
        watermarks); empty before, or when it cannot tell."""
        return self._sources.catalog or frozenset()

    async def check_sources(self) -> None:
        """Check every view's sources against what can move them (rule 8: a typo'd source
        is an error, never a view that silently never invalidates). :meth:`start` calls it;
        call it at startup when you do not start the keeper. The revision source lists the
        database's tables (when it can); a source that is neither one of those, a tracked
        table, nor declared raises :class:`~freshkeep.exceptions.UnknownSourceError`, with a
        did-you-mean suggestion. From then on, views are checked when they are defined."""
        if self.revisions is not None:
            try:
                self._sources.catalog = await self.revisions.known_sources()
            except Exception as exc:  # the database may be down at start: check later
                log.warning("cannot list the database's tables to check sources: %s", exc)
                return
        self._sources_checked = True
        check = self._sources
        if not check.active:
            return  # nothing to check against: every source is the application's
        bad = {
            name: check.unknown((*v.sources, *(p.table for p in v.partitions)))
            for name, v in self._views.items()
        }
        errors = [str(check.error(name, b)) for name, b in bad.items() if b]
        if errors:
            raise UnknownSourceError("; ".join(errors))

    def _check_view_sources(self, name: str, sources: Iterable[str]) -> None:
        check = self._sources
        if not check.active:
            return
        bad = check.unknown(sources)
        if not bad:
            return
        if self._sources_checked:
            raise check.error(name, bad)
        # Before the database's tables are known, only a plain slip is certain: "orders"
        # for the tracked "table:orders". The rest is checked by check_sources().
        slips = [s for s in bad if ":" not in s and f"table:{s}" in check.known]
        if slips:
            raise check.error(name, slips)

    @property
    def probe(self) -> Probe:
        """The probe mode of views that do not set their own."""
        if self._probe is not None:
            return self._probe
        return "interval" if self._hooks or self.revisions is None else "always"

    def hooks_installed(self, tables: Iterable[str] | None = None) -> None:
        """Called by write hooks once they push revisions: views default to ``interval``.
        ``tables`` are the tables they track (``None``: every table), whose ``table:`` sources
        views may read."""
        self._hooks = True
        if tables is not None:
            self._sources.tracked.update(f"table:{t.removeprefix('table:')}" for t in tables)
        for v in self._views.values():
            self._apply_probe(v)

    def _apply_probe(self, v: View) -> None:
        mode = v.probe if v.probe is not None else self.probe
        always = mode == "always" or self._bus_is_down
        v._probe_always = always and self.revisions is not None

    # -- revisions -------------------------------------------------------------------------

    def committed(self, revisions: Mapping[str, Revision]) -> None:
        """Apply revisions committed by this process (read-your-writes), without publishing."""
        self.stats.commits += 1
        self.tracker.apply(revisions, local=True)

    async def publish(
        self, revisions: Mapping[str, Revision], changes: CommitChanges | None = None
    ) -> None:
        """Apply revisions committed by this process and publish them to the bus, with the
        commit's known ``changes`` when given (other processes then apply them to their delta
        sections instead of rebuilding)."""
        self.committed(revisions)
        if changes is None:
            await self.bus.publish(revisions, origin=self.instance_id)
        else:
            await self.bus.publish_commit(revisions, changes, origin=self.instance_id)

    def publish_nowait(
        self, revisions: Mapping[str, Revision], changes: CommitChanges | None = None
    ) -> None:
        """:meth:`publish` from synchronous code."""
        self.committed(revisions)
        if changes is None:
            self.bus.publish_nowait(revisions, origin=self.instance_id)
        else:
            self.bus.publish_commit_nowait(revisions, changes, origin=self.instance_id)

    async def bump(self, *sources: str) -> dict[str, Revision]:
        """Bump ``sources`` in a transaction of their own, then publish: for writes freshkeep's
        hooks cannot see (raw SQL on another connection, files, remote systems)."""
        if not sources:
            return {}
        self._sources.declared.update(sources)  # what the application bumps, it moves
        # A table bumped by hand changed where nobody can tell: every partition moves.
        sources = tuple(sorted(with_every(sources, self.every_of)))
        revs: dict[str, Revision] | None
        if self.revisions is None:
            snap = self.tracker.snapshot
            revs = {}
            for s in sources:
                old = snap.get(s, 0)
                revs[s] = (old if isinstance(old, int) else 0) + 1
        else:
            revs = await self.revisions.bump(sources)
        if revs is None:
            raise ConfigurationError(
                f"the revision source {type(self.revisions).__name__} cannot bump counters"
            )
        await self.publish(revs)
        return revs

    async def resync(self) -> None:
        """Read every registered source's revision now (tests, or after a bus outage)."""
        await self.tracker.resync()

    def _on_bus_changes(
        self, revisions: Mapping[str, Revision], origin: str, changes: CommitChanges
    ) -> None:
        """Another process's commit with its changed rows: recorded as a local commit's are
        (before its revisions are applied), each source whose changes the message does not
        all carry as unknown."""
        if origin == self.instance_id:
            return
        self.stats.remote_changes += 1
        if self.changes.followed:
            unknown = [s for s in revisions if s not in changes.known]
            self.changes.record(revisions, changes.changes, unknown, since=changes.since)

    def _on_bus(self, revisions: Mapping[str, Revision], origin: str) -> None:
        if origin == self.instance_id:
            return  # applied already, as this process's own commit
        self.stats.remote_revisions += 1
        self.tracker.apply(revisions)
        if self.settings.refresh_on_push:
            for v in tuple(self._views.values()):
                v._refresh_pushed(revisions)

    # -- lifecycle -------------------------------------------------------------------------

    async def wait_idle(self) -> None:
        """Wait until no view has a build, no remote a fetch, and no artifact cache a build in
        flight."""
        while (
            any(v.in_flight for v in self._views.values())
            or any(r.in_flight for r in self._remotes.values())
            or any(a.in_flight for a in self._artifacts.values())
        ):
            await asyncio.gather(
                *(v.wait_idle() for v in self._views.values()),
                *(r.wait_idle() for r in self._remotes.values()),
                *(a.wait_idle() for a in self._artifacts.values()),
            )

    async def aclose(self) -> None:
        """Wait for builds in flight, detach from the bus, close the shared store."""
        await self.wait_idle()
        self._unsubscribe()
        self._unsubscribe_changes()
        if self._bus_remover is not None:
            self._bus_remover()
            self._bus_remover = None
        self.tracker.close()
        await self.bus.aclose()
        if self.shared is not None:
            await self.shared.aclose()

    def snapshot(self) -> KeeperSnapshot:
        """Counters of the keeper and the snapshots of its views, remotes, notifiers and
        artifact caches, the shared store and the bus (reachable, outages, last error); no
        I/O. Pipelines and job queues report their own (``keeper.pipelines``,
        ``keeper.jobs``): the stats JSON keeps the keys it always had."""
        hits = self.store.hits_by_view()  # one pass over the entries for every view
        return KeeperSnapshot(
            name="keeper",
            instance=self.instance_id,
            probe=self.probe,
            resync_interval=self.tracker.resync_interval,
            probes=self.tracker.probes,
            commits=self.stats.commits,
            remote_revisions=self.stats.remote_revisions,
            probe_errors=self.stats.probe_errors,
            unattributed_writes=self.stats.unattributed_writes,
            remote_changes=self.stats.remote_changes,
            store=self.store.snapshot(),
            shared=self.shared.snapshot() if self.shared is not None else None,
            bus=self.bus.snapshot(),
            bus_down=self._bus_is_down,
            views={
                name: v.snapshot(store_hits=hits.get(name, 0))
                for name, v in list(self._views.items())
            },
            remotes={name: r.snapshot() for name, r in list(self._remotes.items())},
            notifiers={name: n.snapshot() for name, n in list(self._notifiers.items())},
            artifacts={name: a.snapshot() for name, a in list(self._artifacts.items())},
        )


__all__ = ["Keeper", "KeeperSnapshot", "KeeperStats"]
