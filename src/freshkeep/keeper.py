"""The :class:`Keeper`: revisions, the store, the bus, and the views built on them."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from freshkeep.buses.local import LocalBus
from freshkeep.core.clock import SYSTEM_CLOCK, Clock
from freshkeep.core.policy import Policy
from freshkeep.core.revision import Revision, RevisionTracker
from freshkeep.exceptions import (
    ConfigurationError,
    DuplicateNameError,
    DuplicateViewError,
    FreshkeepError,
    UnknownViewError,
)
from freshkeep.health import Health
from freshkeep.ports import Bus, Lock, RevisionSource, SharedStore
from freshkeep.remote import NO_FALLBACK, Remote, RemoteConfig
from freshkeep.remote._config import from_env
from freshkeep.settings import Settings
from freshkeep.stores.memory import MemoryStore
from freshkeep.views import Builder, PrincipalView, Probe, Section, View, ViewObserver

if TYPE_CHECKING:
    from freshkeep.artifacts import ArtifactCache
    from freshkeep.notify import ChangeNotifier, Send, StateStore
    from freshkeep.remote import Derive, Fetch


def _check_port(what: str, value: object, port: type) -> None:
    """Refuse a backend that does not subclass its port (its optional capabilities are called
    without probing)."""
    if value is not None and not isinstance(value, port):
        raise ConfigurationError(
            f"{what} must be a freshkeep.ports.{port.__name__} (subclass it), "
            f"not {type(value).__name__}"
        )


@dataclass(slots=True)
class KeeperStats:
    """Counters of a keeper."""

    commits: int = 0
    """Commits of this process applied to the keeper (write hooks, :meth:`Keeper.publish`,
    :meth:`Keeper.bump`)."""
    remote_revisions: int = 0
    """Messages of revisions received from other keepers through the bus."""
    probe_errors: int = 0
    """Reads whose revision probe failed."""


class Keeper:
    """Keeps derived data fresh: one per application (per database).

    ``revisions`` reads source revisions (for SQLAlchemy:
    :class:`freshkeep.sql.SQLAlchemyRevisions`); without it, revisions are
    only learned from :meth:`publish` and the bus. ``store`` is this process's memory store;
    ``bus`` carries revisions between processes (an in-process :class:`LocalBus` by default).
    ``shared`` is a store every instance shares (L2, e.g.
    :class:`~freshkeep.stores.redis.RedisStore`): a build is looked up there before it runs and
    stored there after; ``lock`` (e.g. ``shared.lock()``) makes a rebuild single-flight across
    instances (the others wait up to ``lock_wait`` seconds for its result).
    """

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
        self._views: dict[str, View] = {}
        self.view_observers: list[ViewObserver] = []
        """Observers added to every view registered from now on (e.g. by the metrics)."""
        self._remotes: dict[str, Remote] = {}
        self._notifiers: dict[str, ChangeNotifier] = {}
        self._artifacts: dict[str, ArtifactCache] = {}
        self._unsubscribe = self.bus.subscribe(self._on_bus)
        self._bus_remover: Callable[[], Any] | None = None
        self._bus_is_down = False
        self.health = Health(self)
        """The health checks of this keeper (:class:`freshkeep.health.Health`)."""

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
        Validates the ``FRESHKEEP_HEALTH_*`` overrides first (``ConfigurationError``).
        """
        self.health.configure()
        if self._bus_remover is None:
            removers = [self.bus.on_connect(self._bus_up), self.bus.on_disconnect(self._bus_down)]

            def remove() -> None:
                for r in removers:
                    r()

            self._bus_remover = remove
        if not await self.bus.start():
            self._bus_down()  # not connected yet: it keeps trying in the background

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

    # -- views ---------------------------------------------------------------------------

    def view(
        self,
        name: str,
        build: Builder | None = None,
        *,
        sources: Iterable[str] = (),
        sections: Mapping[str, Section] | None = None,
        policy: Policy | None = None,
        probe: Probe | None = None,
        per_principal: bool = False,
        public: bool = False,
        version: str = "",
    ) -> View:
        """Register and return a view.

        Either one ``build`` with its ``sources``, or ``sections``: ``{name: Section(build,
        sources)}`` whose dict values are merged into one JSON object. ``per_principal``
        keys entries by the reader; ``public`` declares the value the same for everyone.
        ``version`` is part of the ETag: change it when a builder's output changes for the
        same data, so clients holding an old ETag get the new output.
        """
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"a view name must be a non-empty string, not {name!r}")
        if name in self._views:
            raise DuplicateViewError(f"a view named {name!r} is already registered")
        if (build is None) == (sections is None):
            raise ConfigurationError(
                f"view {name!r}: give either build= and sources=, or sections="
            )
        if sections is None:
            assert build is not None
            sections = {"default": Section(build, sources)}
        elif sources:
            raise ConfigurationError(f"view {name!r}: sources belong to each Section")
        v = (PrincipalView if per_principal else View)(
            self,
            name,
            sections,
            policy=policy if policy is not None else self.default_policy,
            probe=probe,
            per_principal=per_principal,
            public=public,
            version=version,
            retry_backoff=self.settings.retry_backoff,
            max_retry_backoff=self.settings.max_retry_backoff,
        )
        self._views[name] = v
        v.observers.extend(self.view_observers)
        self._apply_probe(v)
        return v

    def get_view(self, name: str) -> View:
        """The view registered under ``name``."""
        try:
            return self._views[name]
        except KeyError:
            known = ", ".join(sorted(self._views)) or "none"
            raise UnknownViewError(f"no view named {name!r} (registered: {known})") from None

    @property
    def views(self) -> Mapping[str, View]:
        """Every registered view, by name."""
        return dict(self._views)

    @property
    def probe(self) -> Probe:
        """The probe mode of views that do not set their own."""
        if self._probe is not None:
            return self._probe
        return "interval" if self._hooks or self.revisions is None else "always"

    def hooks_installed(self) -> None:
        """Called by write hooks once they push revisions: views default to ``interval``."""
        self._hooks = True
        for v in self._views.values():
            self._apply_probe(v)

    def _apply_probe(self, v: View) -> None:
        mode = v.probe if v.probe is not None else self.probe
        always = mode == "always" or self._bus_is_down
        v._probe_always = always and self.revisions is not None

    # -- remote values and notifiers ---------------------------------------------------------

    def remote(
        self,
        name: str,
        fetch: Fetch | None = None,
        *,
        ttl: float,
        fallback: Any = NO_FALLBACK,
        derive: Derive | None = None,
        swr: bool = False,
        max_stale: float | None = None,
        retry_backoff: float | None = None,
        max_retry_backoff: float | None = None,
        fetch_sync: Callable[[Any], Any] | None = None,
    ) -> Remote:
        """Register and return a remote value: ``fetch(key)`` (sync or async) per key, kept
        ``ttl`` seconds (``0``: for the process lifetime), stale on error, with backoff.

        ``fallback`` is served while nothing was ever fetched for a key and the fetch fails
        (leave it out to raise ``RemoteUnavailableError`` instead). ``derive(value)`` returns
        named lookups computed from the same fetch. ``swr`` serves an expired value and
        refreshes it in the background. ``max_stale`` bounds how old a value may be served
        (default: no bound). ``fetch_sync`` serves :meth:`Remote.get_sync` when ``fetch`` is
        async. Every setting is overridable by ``FRESHKEEP_REMOTE_<NAME>_*`` (see
        :func:`freshkeep.remote.env_prefix`); a bad one raises ``ConfigurationError``.
        """
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"a remote name must be a non-empty string, not {name!r}")
        if name in self._remotes:
            raise DuplicateNameError(f"a remote named {name!r} is already registered")
        s = self.settings
        try:
            config = RemoteConfig(
                ttl=ttl,
                max_stale=max_stale,
                swr=swr,
                retry_backoff=s.retry_backoff if retry_backoff is None else retry_backoff,
                max_retry_backoff=(
                    s.max_retry_backoff if max_retry_backoff is None else max_retry_backoff
                ),
            )
        except ConfigurationError as exc:
            raise ConfigurationError(f"remote {name!r}: {exc}") from exc
        r = Remote(
            self,
            name,
            fetch,
            from_env(name, config),
            fallback=fallback,
            derive=derive,
            fetch_sync=fetch_sync,
        )
        self._remotes[name] = r
        return r

    @property
    def remotes(self) -> Mapping[str, Remote]:
        """Every registered remote, by name."""
        return dict(self._remotes)

    def notifier(
        self,
        name: str,
        send: Send,
        *,
        store: StateStore | None = None,
        terminal: Callable[[Any], bool] | None = None,
        problem: Callable[[Any], bool] | None = None,
        confirm: int = 1,
        notify_initial: bool = True,
    ) -> ChangeNotifier:
        """Register and return a :class:`~freshkeep.notify.ChangeNotifier` on this keeper's
        clock; it shows in :meth:`snapshot_stats`."""
        from freshkeep.notify import ChangeNotifier

        return ChangeNotifier(
            name,
            send,
            store=store,
            terminal=terminal,
            problem=problem,
            confirm=confirm,
            notify_initial=notify_initial,
            keeper=self,
        )

    @property
    def notifiers(self) -> Mapping[str, ChangeNotifier]:
        """Every registered notifier, by name."""
        return dict(self._notifiers)

    def _add_notifier(self, notifier: ChangeNotifier) -> None:
        if notifier.name in self._notifiers:
            raise DuplicateNameError(f"a notifier named {notifier.name!r} is already registered")
        self._notifiers[notifier.name] = notifier

    @property
    def artifacts(self) -> Mapping[str, ArtifactCache]:
        """Every artifact cache registered on this keeper (``ArtifactCache(..., keeper=)``)."""
        return dict(self._artifacts)

    def _add_artifacts(self, cache: ArtifactCache) -> None:
        if cache.name in self._artifacts:
            raise DuplicateNameError(f"an artifact cache named {cache.name!r} is registered")
        self._artifacts[cache.name] = cache

    # -- revisions -------------------------------------------------------------------------

    def committed(self, revisions: Mapping[str, Revision]) -> None:
        """Apply revisions committed by this process (read-your-writes), without publishing."""
        self.stats.commits += 1
        self.tracker.apply(revisions, local=True)

    async def publish(self, revisions: Mapping[str, Revision]) -> None:
        """Apply revisions committed by this process and publish them to the bus."""
        self.committed(revisions)
        await self.bus.publish(revisions, origin=self.instance_id)

    def publish_nowait(self, revisions: Mapping[str, Revision]) -> None:
        """:meth:`publish` from synchronous code."""
        self.committed(revisions)
        self.bus.publish_nowait(revisions, origin=self.instance_id)

    async def bump(self, *sources: str) -> dict[str, Revision]:
        """Bump ``sources`` in a transaction of their own, then publish: for writes freshkeep's
        hooks cannot see (raw SQL on another connection, files, remote systems)."""
        if not sources:
            return {}
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

    def _on_bus(self, revisions: Mapping[str, Revision], origin: str) -> None:
        if origin == self.instance_id:
            return  # applied already, as this process's own commit
        self.stats.remote_revisions += 1
        self.tracker.apply(revisions)

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
        if self._bus_remover is not None:
            self._bus_remover()
            self._bus_remover = None
        self.tracker.close()
        await self.bus.aclose()
        if self.shared is not None:
            await self.shared.aclose()

    def snapshot_stats(self) -> dict[str, Any]:
        """Counters of the keeper and every view, remote, notifier and artifact cache, as plain
        data; with the status of the shared store and of a network bus (reachable, outages,
        last error)."""
        bus_status = getattr(self.bus, "status", None)
        hits = self.store.hits_by_view()  # one pass over the entries for every view
        return {
            "instance": self.instance_id,
            "probe": self.probe,
            "resync_interval": self.tracker.resync_interval,
            "probes": self.tracker.probes,
            "commits": self.stats.commits,
            "remote_revisions": self.stats.remote_revisions,
            "probe_errors": self.stats.probe_errors,
            "store": {
                "entries": len(self.store),
                "bytes": self.store.bytes,
                "evictions": self.store.evictions,
                "rejected": self.store.rejected,
            },
            "shared": self.shared.status() if self.shared is not None else None,
            "bus": bus_status() if callable(bus_status) else {"kind": "local"},
            "bus_down": self._bus_is_down,
            "views": {
                name: v.snapshot_stats(store_hits=hits.get(name, 0))
                for name, v in self._views.items()
            },
            "remotes": {name: r.snapshot_stats() for name, r in self._remotes.items()},
            "notifiers": {name: n.snapshot_stats() for name, n in self._notifiers.items()},
            "artifacts": {name: a.snapshot_stats() for name, a in self._artifacts.items()},
        }
