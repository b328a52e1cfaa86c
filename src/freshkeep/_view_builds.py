"""How a :class:`~freshkeep.views.View` builds: through the shared store (L2) and its build
lock when the keeper has one, section by section, with retry backoff after a failure."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any

from freshkeep._view_types import BuildContext, Section, ViewObserver, ViewStats
from freshkeep.core.backoff import Backoff, backoff
from freshkeep.core.entry import Entry, SectionEntry, Status, encode, to_plain
from freshkeep.core.policy import Policy, is_expired
from freshkeep.exceptions import EncodeError, FreshkeepError

if TYPE_CHECKING:
    from freshkeep.core.clock import Clock
    from freshkeep.core.revision import RevisionTracker
    from freshkeep.keeper import Keeper
    from freshkeep.ports import Lock, SharedStore
    from freshkeep.stores.memory import MemoryStore

log = logging.getLogger("freshkeep.views")


class ViewBuilds:
    """The build path of :class:`~freshkeep.views.View` (a base class of it): never on the hit
    path."""

    name: str
    sources: tuple[str, ...]
    version: str
    sections: dict[str, Section]
    per_principal: bool
    policy: Policy
    stats: ViewStats
    observers: list[ViewObserver]
    _keeper: Keeper
    _tracker: RevisionTracker
    _store: MemoryStore
    _clock: Clock
    _mono: Callable[[], float]
    _section_sources: dict[str, tuple[str, ...]]
    _section_keys: dict[str, frozenset[str]]
    _retry_at: dict[Hashable, tuple[float, int]]
    _retry_backoff: float
    _max_retry_backoff: float
    _policies: dict[str, Policy] | None
    _capped: bool

    def _identity(self, key: Hashable, principal: str | None) -> Hashable:
        return (principal, key) if self.per_principal else key

    async def _build(
        self,
        ck: Hashable,
        key: Hashable,
        principal: str | None,
        sections: tuple[str, ...],
        refresh: bool,
    ) -> tuple[Entry, Status]:
        tracker = self._tracker
        if refresh and tracker.has_source:
            await tracker.resync(self.sources)  # a forced refresh reads fresh revisions
        base = self._store.peek(ck)
        parts: dict[str, SectionEntry] = dict(base.sections) if base is not None else {}
        wanted = set(sections) | (set(self.sections) - set(parts))
        shared = self._keeper.shared
        if shared is None:
            return await self._build_sections(ck, key, principal, parts, wanted)
        skey = self._shared_key(shared, key, principal)
        if skey is None:
            return await self._build_sections(ck, key, principal, parts, wanted)
        if not refresh and self._adopt(await shared.get(skey), parts, wanted) and not wanted:
            # Another instance built all of it: a hit from the shared store.
            self.stats.shared_hits += 1
            return self._store_built(ck, key, principal, parts), "hit"
        lock, token = self._keeper.build_lock, None
        if lock is not None:
            try:
                token = await lock.acquire(skey, self._keeper.lock_lease)
            except FreshkeepError:
                token = None  # the lock's store is down: build here
            else:
                if token is None:  # another instance is building it: wait for its entry
                    self.stats.shared_waits += 1
                    landed, token = await self._wait_for_shared(shared, lock, skey, parts, wanted)
                    if landed:
                        self.stats.shared_hits += 1
                        return self._store_built(ck, key, principal, parts), "hit"
                elif not refresh and self._adopt(await shared.get(skey), parts, wanted):
                    # It landed between our look and our lock: take it rather than rebuild.
                    if not wanted:
                        await lock.release(skey, token)
                        token = None
                        self.stats.shared_hits += 1
                        return self._store_built(ck, key, principal, parts), "hit"
        try:
            entry, status = await self._build_sections(ck, key, principal, parts, wanted)
            await shared.put(skey, entry)  # compare-and-set: a late build never wins
            return entry, status
        finally:
            if lock is not None and token is not None:
                try:
                    await lock.release(skey, token)
                except FreshkeepError:
                    pass  # the lease expires by itself

    def _shared_key(self, shared: SharedStore, key: Hashable, principal: str | None) -> str | None:
        try:
            return shared.key_for(self.name, self._identity(key, principal), version=self.version)
        except FreshkeepError:
            return None  # a key with no stable form across processes stays in this process

    def _adopt(self, other: Entry | None, parts: dict[str, SectionEntry], wanted: set[str]) -> bool:
        """Take from ``other`` (built by another instance) the wanted sections that match the
        current revisions; return whether any was taken."""
        if other is None or other.sources != self._section_sources or other.version != self.version:
            return False
        taken = False
        for name in list(wanted):
            part = other.sections.get(name)
            if (
                part is not None
                and part.fingerprint == self._tracker.current(self._section_sources[name])
                and not self._expired(name, part)
            ):
                parts[name] = part
                wanted.discard(name)
                taken = True
        return taken

    def _expired(self, name: str, part: SectionEntry) -> bool:
        """Whether ``part`` is older than its section's ``max_age``."""
        if not self._capped:
            return False
        policy = (self._policies or {}).get(name, self.policy)
        return is_expired(part.built_at, policy, self._clock.time())

    async def _wait_for_shared(
        self,
        shared: SharedStore,
        lock: Lock,
        skey: str,
        parts: dict[str, SectionEntry],
        wanted: set[str],
    ) -> tuple[bool, str | None]:
        """Wait (bounded by ``lock_wait``) for another instance's build of the wanted sections.

        Returns ``(True, None)`` when it landed. When the holder let go without storing what
        this read needs (it built from older revisions, or failed), the lock is taken here:
        ``(False, token)``, and the caller builds. ``(False, None)``: time is up, or the lock's
        store is down: the caller builds without the lock.
        """
        deadline = self._mono() + self._keeper.lock_wait
        poll = Backoff(0.01, 0.2)
        while self._mono() < deadline:
            await asyncio.sleep(poll.next())
            self._adopt(await shared.get(skey), parts, wanted)
            if not wanted:
                return True, None
            try:
                token = await lock.acquire(skey, self._keeper.lock_lease)
            except FreshkeepError:
                return False, None
            if token is not None:
                self._adopt(await shared.get(skey), parts, wanted)  # it may have just landed
                if not wanted:
                    await lock.release(skey, token)
                    return True, None
                return False, token
        return False, None

    def _store_built(
        self, ck: Hashable, key: Hashable, principal: str | None, parts: dict[str, SectionEntry]
    ) -> Entry:
        entry = Entry(
            self.name,
            self._identity(key, principal),
            {n: parts[n] for n in self.sections},
            self._section_sources,
            self.version,
        )
        self._retry_at.pop(ck, None)
        return self._store.put(ck, entry)

    async def _build_sections(
        self,
        ck: Hashable,
        key: Hashable,
        principal: str | None,
        parts: dict[str, SectionEntry],
        wanted: set[str],
    ) -> tuple[Entry, Status]:
        tracker = self._tracker
        built = len(wanted)
        multi = len(self.sections) > 1
        for name, section in self.sections.items():
            if name not in wanted:
                continue
            # Rule 3: the revisions are read before the data.
            fingerprint = tracker.current(section.sources)
            built_at, built_mono = self._clock.time(), self._mono()
            ctx = BuildContext(
                self.name,
                name,
                key,
                principal,
                dict(zip(section.sources, fingerprint, strict=True)),
            )
            started = time.perf_counter()
            value = to_plain(await section.build(ctx))
            elapsed = time.perf_counter() - started
            if multi:
                self._check_section_value(name, value)
            parts[name] = SectionEntry(encode(value), fingerprint, built_at, built_mono)
            s = self.stats
            s.builds[name] = s.builds.get(name, 0) + 1
            s.build_seconds[name] = elapsed
            s.last_build_at = built_at
            s.failing_since = None
            if self.observers:
                self._observe_build(name, elapsed)
        status: Status = "miss" if built == len(self.sections) else "section"
        return self._store_built(ck, key, principal, parts), status

    def _observe_build(self, section: str, seconds: float) -> None:
        for observer in self.observers:
            try:
                observer.build_finished(self.name, section, seconds)
            except Exception:
                log.exception("an observer of view %r failed", self.name)

    def _check_section_value(self, name: str, value: Any) -> None:
        if not isinstance(value, dict):
            raise EncodeError(
                f"section {name!r} of view {self.name!r} must return a dict (its keys are merged "
                f"into the view's JSON object), not {type(value).__name__}"
            )
        keys = frozenset(value)
        for other, other_keys in self._section_keys.items():
            if other != name and keys & other_keys:
                dup = ", ".join(sorted(map(str, keys & other_keys)))
                raise EncodeError(
                    f"sections {other!r} and {name!r} of view {self.name!r} both return {dup}"
                )
        self._section_keys[name] = keys

    def _on_error(self, ck: Hashable, exc: BaseException) -> None:
        s = self.stats
        s.build_errors += 1
        s.last_error = f"{type(exc).__name__}: {exc}"
        s.last_error_at = self._clock.time()
        if s.failing_since is None:
            s.failing_since = s.last_error_at
        prev = self._retry_at.get(ck)
        attempt = 1 if prev is None else prev[1] + 1
        delay = backoff(attempt, self._retry_backoff, self._max_retry_backoff)
        self._retry_at[ck] = (self._mono() + delay, attempt)
        log.warning("build of view %r failed: %s", self.name, s.last_error)
