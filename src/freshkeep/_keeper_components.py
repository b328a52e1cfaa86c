"""The components of a :class:`~freshkeep.keeper.Keeper` (a base class of it): registering
and finding them, and making views, remotes and notifiers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar, cast, overload

from freshkeep._view_types import ClientRefresh, SourcesOf
from freshkeep.cached import Cached, cached
from freshkeep.core.component import KINDS, Component, Kind
from freshkeep.core.partitions import Partitioned
from freshkeep.core.policy import Policy
from freshkeep.core.shared_cache import SharedCache
from freshkeep.exceptions import (
    ConfigurationError,
    DuplicateNameError,
    DuplicateViewError,
    UnknownViewError,
)
from freshkeep.remote import NO_FALLBACK, Remote, RemoteConfig
from freshkeep.remote._config import from_env
from freshkeep.settings import Settings
from freshkeep.views import (
    Builder,
    PrincipalView,
    Probe,
    Section,
    View,
    ViewObserver,
)

if TYPE_CHECKING:
    from freshkeep.artifacts import ArtifactCache
    from freshkeep.jobs import QueueComponent
    from freshkeep.keeper import Keeper
    from freshkeep.notify import ChangeNotifier, Send, StateStore
    from freshkeep.processing import Pipeline
    from freshkeep.remote import Derive, Fetch
    from freshkeep.sql.replica import ReadReplica

C = TypeVar("C", bound=Component)
P = ParamSpec("P")
R = TypeVar("R")


class KeeperComponents:
    """Every view, remote, notifier, artifact cache, pipeline, job queue, bus and shared store
    of a keeper, by kind and name."""

    settings: Settings
    default_policy: Policy

    if TYPE_CHECKING:

        def _apply_probe(self, v: View) -> None: ...

        def _check_view_sources(self, name: str, sources: Iterable[str]) -> None: ...

    def _init_components(self) -> None:
        self._views: dict[str, View] = {}
        self.view_observers: list[ViewObserver] = []
        """Observers added to every view registered from now on (e.g. by the metrics)."""
        self._remotes: dict[str, Remote] = {}
        self._notifiers: dict[str, ChangeNotifier] = {}
        self._artifacts: dict[str, ArtifactCache] = {}
        self._pipelines: dict[str, Pipeline] = {}
        self._jobs: dict[str, QueueComponent] = {}
        self._buses: dict[str, Component] = {}
        self._stores: dict[str, Component] = {}
        self._registry: dict[Kind, dict[str, Any]] = {
            "view": self._views,
            "remote": self._remotes,
            "notifier": self._notifiers,
            "artifacts": self._artifacts,
            "pipeline": self._pipelines,
            "jobs": self._jobs,
            "bus": self._buses,
            "store": self._stores,
        }
        assert tuple(self._registry) == KINDS

    # -- components ------------------------------------------------------------------------

    def register(self, component: C) -> C:
        """Register ``component`` (a view, remote, notifier, artifact cache, pipeline, job
        queue, bus or shared store: a :class:`~freshkeep.core.component.Component`) under its
        ``name`` among those of its ``kind``, and return it: the health checks, the metrics
        and the dashboard find it (views, remotes, notifiers and artifact caches also show in
        :meth:`snapshot`).

        Raises :class:`~freshkeep.exceptions.DuplicateNameError` when a component of that
        kind is registered under that name (:class:`~freshkeep.exceptions.DuplicateViewError`
        for a view), :class:`~freshkeep.exceptions.ConfigurationError` for anything that is
        not a component, an unknown kind or an empty name.
        """
        if not isinstance(component, Component):
            raise ConfigurationError(
                f"cannot register {component!r}: not a freshkeep Component (a view, remote, "
                "notifier, artifact cache, pipeline, job queue, bus or shared store)"
            )
        kind, name = component.kind, component.name
        registry = self._registry.get(kind)
        if registry is None:
            raise ConfigurationError(
                f"cannot register {component!r}: unknown component kind {kind!r} "
                f"(known: {', '.join(KINDS)})"
            )
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"a {kind} name must be a non-empty string, not {name!r}")
        if name in registry:
            error = DuplicateViewError if kind == "view" else DuplicateNameError
            raise error(f"a {kind} named {name!r} is already registered")
        if isinstance(component, View):
            if component.keeper is not self:
                raise ConfigurationError(f"view {name!r} belongs to another keeper")
            component.observers.extend(self.view_observers)
            self._apply_probe(component)
        registry[name] = component
        return component

    @overload
    def components(self, kind: Literal["view"]) -> Mapping[str, View]: ...
    @overload
    def components(self, kind: Literal["remote"]) -> Mapping[str, Remote]: ...
    @overload
    def components(self, kind: Literal["notifier"]) -> Mapping[str, ChangeNotifier]: ...
    @overload
    def components(self, kind: Literal["artifacts"]) -> Mapping[str, ArtifactCache]: ...
    @overload
    def components(self, kind: Literal["pipeline"]) -> Mapping[str, Pipeline]: ...
    @overload
    def components(self, kind: Literal["jobs"]) -> Mapping[str, QueueComponent]: ...
    @overload
    def components(self, kind: Kind) -> Mapping[str, Component]: ...

    def components(self, kind: Kind) -> Mapping[str, Component]:
        """The components of ``kind`` registered on this keeper, by name (a copy)."""
        try:
            return dict(self._registry[kind])
        except KeyError:
            raise ConfigurationError(
                f"unknown component kind {kind!r} (known: {', '.join(KINDS)})"
            ) from None

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

    # -- views ---------------------------------------------------------------------------

    def view(
        self,
        name: str,
        build: Builder | None = None,
        *,
        sources: Iterable[str | Partitioned] | SourcesOf = (),
        sections: Mapping[str, Section] | None = None,
        policy: Policy | None = None,
        probe: Probe | None = None,
        per_principal: bool = False,
        public: bool = False,
        version: str = "",
        labels: Mapping[str, str] | None = None,
        client_refresh: ClientRefresh | None = None,
        shared_cache: SharedCache | None = None,
        replica: object | None = None,
    ) -> View:
        """Register and return a view.

        Either one ``build`` with its ``sources``, or ``sections``: ``{name: Section(build,
        sources)}`` whose dict values are merged into one JSON object. ``per_principal``
        keys entries by the reader; ``public`` declares the value the same for everyone.
        ``version`` is part of the ETag: change it when a builder's output changes for the
        same data, so clients holding an old ETag get the new output. ``labels`` map read
        statuses to the words the status header says (``{"hit": "hit-revision"}``), for
        clients of a service that used other words; ``FRESHKEEP_STATUS_LABELS`` sets them for
        every view. ``client_refresh`` says who may force a rebuild over HTTP
        (:meth:`View.may_force`; ``FRESHKEEP_CLIENT_REFRESH`` by default). ``shared_cache``
        (a public view only) lets shared HTTP caches serve it within its policy's bounds
        (:class:`~freshkeep.core.shared_cache.SharedCache`). ``replica``
        builds each section on a PostgreSQL read replica, its revisions and its data in one
        snapshot: a SQLAlchemy ``AsyncEngine`` on the replica (with the keeper's
        ``SQLAlchemyRevisions`` engine as the primary to fall back to) or a
        :class:`~freshkeep.sql.replica.ReadReplica`; anything else raises
        :class:`~freshkeep.exceptions.ConfigurationError`. See :mod:`freshkeep.sql.replica`.
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
            cast("Keeper", self),
            name,
            sections,
            policy=policy if policy is not None else self.default_policy,
            probe=probe,
            per_principal=per_principal,
            public=public,
            version=version,
            labels=labels,
            client_refresh=client_refresh,
            retry_backoff=self.settings.retry_backoff,
            max_retry_backoff=self.settings.max_retry_backoff,
            shared_cache=shared_cache,
            replica=None if replica is None else self._replica(replica),
        )
        self._check_view_sources(name, (*v.sources, *(p.table for p in v.partitions)))
        for p in v.partitions:
            cast("Keeper", self).partition(p)
        return self.register(v)

    def _replica(self, replica: object) -> ReadReplica:
        from freshkeep.sql.replica import as_replica
        from freshkeep.sql.revisions import SQLAlchemyRevisions

        revisions = cast("Keeper", self).revisions
        primary = revisions.engine if isinstance(revisions, SQLAlchemyRevisions) else None
        s = self.settings
        return as_replica(replica, primary=primary, wait=s.replica_wait, timeout=s.replica_timeout)

    def cached(
        self,
        *,
        sources: Iterable[str | Partitioned] | SourcesOf,
        policy: Policy | None = None,
        key: Callable[..., Hashable] | None = None,
        name: str | None = None,
        per_principal: bool = False,
        public: bool = False,
        probe: Probe | None = None,
        version: str = "",
        client_refresh: ClientRefresh | None = None,
    ) -> Callable[[Callable[P, Awaitable[R]]], Cached[P, R]]:
        """Decorate an ``async def`` so that its value is kept fresh by a view (registered
        under ``name``, default the function's qualified name) built by calling it::

            @keeper.cached(sources=[table_source(Order, by="customer_id")])
            async def orders_of(customer_id: int) -> list[dict[str, Any]]: ...

        A call returns the function's value (decoded from the view's JSON); the key is made
        from the arguments with the defaults filled in (:class:`TypeError` for an argument
        that cannot be hashed, unless ``key=`` makes the key from the arguments);
        ``per_principal=True`` keys entries by the function's ``principal`` parameter too.
        ``f.view`` is the :class:`View` (to serve, invalidate, read its stats), ``await
        f.read(...)`` the :class:`~freshkeep.Read` with its status. The other arguments are
        those of :meth:`view`. See :mod:`freshkeep.cached`.
        """
        return cached(
            cast("Keeper", self),
            sources=sources,
            policy=policy,
            key=key,
            name=name,
            per_principal=per_principal,
            public=public,
            probe=probe,
            version=version,
            client_refresh=client_refresh,
        )

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
        defaults: Mapping[Any, Any] | None = None,
        fallback_item: Callable[[Any, Any], Any] | None = None,
    ) -> Remote:
        """Register and return a remote value: ``fetch(key)`` (sync or async) per key, kept
        ``ttl`` seconds (``0``: for the process lifetime), stale on error, with backoff.

        ``fallback`` is served while nothing was ever fetched for a key and the fetch fails
        (leave it out to raise ``RemoteUnavailableError`` instead). ``derive(value)`` returns
        named lookups computed from the same fetch. ``swr`` serves an expired value and
        refreshes it in the background. ``max_stale`` bounds how old a value may be served
        (default: no bound). ``fetch_sync`` serves :meth:`Remote.get_sync` when ``fetch`` is
        async. ``defaults`` (key -> item) backfills the keys a fetched mapping left out and
        the fields its items lack; ``fallback_item(key, item)`` returns the item to keep
        (completed when it lacks a field). Every setting is overridable by
        ``FRESHKEEP_REMOTE_<NAME>_*`` (see
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
        return self.register(
            Remote(
                cast("Keeper", self),
                name,
                fetch,
                from_env(name, config),
                fallback=fallback,
                derive=derive,
                fetch_sync=fetch_sync,
                defaults=defaults,
                fallback_item=fallback_item,
            )
        )

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
        clock; it shows in :meth:`snapshot`."""
        from freshkeep.notify import ChangeNotifier

        return ChangeNotifier(
            name,
            send,
            store=store,
            terminal=terminal,
            problem=problem,
            confirm=confirm,
            notify_initial=notify_initial,
            keeper=cast("Keeper", self),
        )

    @property
    def notifiers(self) -> Mapping[str, ChangeNotifier]:
        """Every registered notifier, by name."""
        return dict(self._notifiers)

    @property
    def artifacts(self) -> Mapping[str, ArtifactCache]:
        """Every artifact cache registered on this keeper (``ArtifactCache(..., keeper=)``)."""
        return dict(self._artifacts)

    @property
    def pipelines(self) -> Mapping[str, Pipeline]:
        """Every processing pipeline registered on this keeper (:meth:`register`, or
        ``keeper.health.watch_processor(pipeline, ...)``)."""
        return dict(self._pipelines)

    @property
    def jobs(self) -> Mapping[str, QueueComponent]:
        """Every job queue registered on this keeper (:meth:`register`, or
        ``keeper.health.watch_jobs(queue)``)."""
        return dict(self._jobs)
