"""How a :class:`~freshkeep.views.View` refreshes outside a plain read (a base class of it):
a client's forced refresh, a refresh in the background, the rebuild that a push from another
process starts (``refresh_on_push``), and a read that fails."""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

from freshkeep.core.entry import Entry, Read, Status
from freshkeep.core.policy import Policy, may_serve_on_error
from freshkeep.core.revision import Revision, is_older
from freshkeep.exceptions import BuildError, UnavailableError

if TYPE_CHECKING:
    from freshkeep._view_types import ViewObserver, ViewStats
    from freshkeep.core.revision import RevisionTracker
    from freshkeep.core.singleflight import SingleFlight
    from freshkeep.stores.memory import MemoryStore

log = logging.getLogger("freshkeep.views")


class ViewRefresh:
    """Refreshes of :class:`~freshkeep.views.View` outside a plain read (a base class of it)."""

    name: str
    policy: Policy
    keyed: bool
    per_principal: bool
    stats: ViewStats
    observers: list[ViewObserver]
    _tracker: RevisionTracker
    _store: MemoryStore
    _mono: Callable[[], float]
    _probe_always: bool
    _none_key: Hashable
    _section_sources: dict[str, tuple[str, ...]]
    _retry_at: dict[Hashable, tuple[float, int]]
    _flights: SingleFlight[Hashable, tuple[Entry, Status]]
    _lookup: Callable[[Hashable], Entry | None]
    client_refresh: str
    client_refresh_interval: float
    _forced: dict[Hashable, float]

    if TYPE_CHECKING:

        def _cache_key(self, key: Hashable, principal: str | None) -> Hashable: ...

        def _count(self, status: Status) -> None: ...

        async def _build(self, *args: Any) -> tuple[Entry, Status]: ...

    # -- forced refreshes -----------------------------------------------------------------------

    def may_force(
        self, key: Hashable = None, *, principal: str | None = None, authorized: bool = False
    ) -> bool:
        """Whether a client's request to rebuild ``key`` now (``?refresh=true``,
        ``Cache-Control: no-cache``) is honoured, under the view's ``client_refresh``:

        - ``limited`` (the default): yes for an ``authorized`` client (the admin token);
          for anyone else at most once per ``client_refresh_interval`` per entry (this call
          counts as that one when it answers yes);
        - ``any``: yes; ``authorized``: only for an authorized client; ``never``: no.

        A forced rebuild joins a build of the entry already in flight. When the answer is no,
        serve a normal read: it is validated against the current revisions, which is what
        ``no-cache`` asks of a cache (RFC 9111, 5.2.1.4). ``view.get(refresh=True)`` in
        your own code is not limited.
        """
        mode = self.client_refresh
        if mode == "any" or (authorized and mode != "never"):
            return True
        if mode != "limited":
            return False
        ck = self._cache_key(key, principal)
        now = self._mono()
        forced = self._forced
        last = forced.get(ck)
        if last is not None and now - last < self.client_refresh_interval:
            return False
        if len(forced) >= 10_000:  # bounded: forget what is past its interval
            horizon = now - self.client_refresh_interval
            for k in [k for k, t in forced.items() if t <= horizon]:
                del forced[k]
        forced[ck] = now
        return True

    # -- refreshes and failed reads -------------------------------------------------------

    def _on_failed_read(self, ck: Hashable, exc: BaseException) -> Read:
        entry = self._store.peek(ck)
        age = self._mono() - entry.confirmed_mono if entry is not None else 0.0
        if entry is not None and may_serve_on_error(entry, age=age, policy=self.policy):
            self._count("error-stale")
            if self.observers:
                self._observe_stale("error-stale", age)
            return Read("error-stale", entry, error=exc)
        if isinstance(exc, UnavailableError):
            raise exc
        raise BuildError(
            f"view {self.name!r} could not be built and no value within stale_if_error "
            f"({self.policy.stale_if_error:g}s) exists: {exc!r}",
            view=self.name,
            key=ck,
        ) from exc

    def _refresh_in_background(
        self, ck: Hashable, key: Hashable, principal: str | None, sections: tuple[str, ...]
    ) -> None:
        if self._flights.running(ck) is not None:
            return
        retry = self._retry_at.get(ck)
        if retry is not None and self._mono() < retry[0]:
            return
        self._flights.start(ck, partial(self._build, ck, key, principal, sections, False))
        self.stats.background_refreshes += 1

    def _refresh_pushed(self, changed: Mapping[str, Revision]) -> None:
        """``refresh_on_push``: start rebuilding the sections of the unkeyed entry that the
        revisions another process pushed move, so that a read after the push finds them built
        or joins their build. Keyed and per-principal entries wait for their reads."""
        if self.keyed or self.per_principal or self._probe_always:
            return
        ck = self._none_key
        entry = self._lookup(ck)
        if entry is None:
            return
        current = self._tracker.current
        sections = tuple(
            name
            for name, srcs in self._section_sources.items()
            if any(s in changed for s in srcs)
            and any(
                is_older(built, now)
                for built, now in zip(entry.sections[name].fingerprint, current(srcs), strict=True)
            )
        )
        if sections:
            self._refresh_in_background(ck, None, None, sections)

    def _observe_stale(self, status: Status, age: float) -> None:
        for observer in self.observers:
            try:
                observer.stale_served(self.name, status, age)
            except Exception:
                log.exception("an observer of view %r failed", self.name)
