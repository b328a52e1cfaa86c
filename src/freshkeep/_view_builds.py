"""How a :class:`~freshkeep.views.View` builds: through the shared store (L2) and its build
lock when the keeper has one, section by section, with retry backoff after a failure."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Hashable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import orjson

from freshkeep._view_replica import ReplicaStats, build_on_replica
from freshkeep._view_types import BuildContext, Section, ViewObserver, ViewStats
from freshkeep.core import tracing
from freshkeep.core.backoff import Backoff, backoff
from freshkeep.core.changes import Rebuild
from freshkeep.core.entry import Chunks, Entry, SectionEntry, Status, body_bytes, encode, to_plain
from freshkeep.core.partitions import EVERY, split_source
from freshkeep.core.policy import Policy, is_expired
from freshkeep.core.revision import Revision
from freshkeep.exceptions import ConfigurationError, EncodeError, FreshkeepError

if TYPE_CHECKING:
    from freshkeep.core.clock import Clock
    from freshkeep.core.revision import RevisionTracker
    from freshkeep.keeper import Keeper
    from freshkeep.ports import Lock, SharedStore
    from freshkeep.sql.replica import ReadReplica
    from freshkeep.stores.memory import MemoryStore

log = logging.getLogger("freshkeep.views")

_MAX_RETRIES = 10_000
"""How many keys' retry backoffs of failed builds a view keeps (the expired go first)."""

DELTA = "freshkeep.delta"
"""An entry's memo: the sections a delta brought up to date when it was stored."""


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
    _probe_always: bool
    _write_backs: dict[Hashable, asyncio.Task[None]]
    """Per key, the storing of its last build in the shared store, while it runs."""
    keyed: bool
    replica: ReadReplica | None
    _replica_stats: ReplicaStats
    apply_deltas: bool

    # -- the sources of a key ------------------------------------------------------------------

    def _sources_of(self, key: Hashable) -> dict[str, tuple[str, ...]]:
        """The sources of each section of ``key``'s entry."""
        if not self.keyed:
            return self._section_sources
        return {name: section.for_key(key) for name, section in self.sections.items()}

    @staticmethod
    def _all_sources(by_section: Mapping[str, Sequence[str]]) -> tuple[str, ...]:
        return tuple(sorted({s for srcs in by_section.values() for s in srcs}))

    async def _learn(self, sources: Sequence[str], *, fresh: bool = False) -> dict[str, Revision]:
        """Make the keeper follow ``sources`` (their revisions are read from the database the
        first time, and at every resync after); return their revisions. ``fresh``: read them
        from the database now whatever is known (``probe="always"``)."""
        tracker = self._tracker
        new = [s for s in sources if s not in tracker.sources]
        if new:
            self._keeper._check_view_sources(self.name, new)
            self._check_partitions(new)
            tracker.add(new)
        if tracker.has_source and (fresh or new):
            await tracker.resync(sources if fresh else new)
        return dict(zip(sources, tracker.current(sources), strict=True))

    def _check_partitions(self, sources: Sequence[str]) -> None:
        """A partition the keeper was not told of would never be bumped by the write hooks
        (they move every partition of its table instead): refuse it, naming the fix."""
        for s in sources:
            table, part = split_source(s)
            if part is None or part == EVERY:
                continue
            column = part.partition("#")[0]
            if not any(p.column == column for p in self._keeper.partitions_of(table)):
                raise ConfigurationError(
                    f"view {self.name!r} depends on {s!r}, a partition of {table} by {column!r} "
                    f"this keeper does not know: declare it with keeper.partition("
                    f"table_source(<table>, by={column!r}))"
                )

    async def _learn_found(self, sources: tuple[str, ...]) -> Mapping[str, Revision]:
        return await self._learn(sources, fresh=self._probe_always)

    @staticmethod
    def _covers(entry: Entry, wanted: Mapping[str, Sequence[str]]) -> set[str]:
        """The sections of ``entry`` whose sources include those ``wanted`` now (a key whose
        sources changed since it was built must be rebuilt)."""
        have = entry.sources
        return {
            name
            for name, srcs in wanted.items()
            if name in have and (have[name] == srcs or set(srcs) <= set(have[name]))
        }

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
        attributes: tracing.Attributes = {
            "freshkeep.view": self.name,
            "freshkeep.view.sections": len(sections),
        }
        with tracing.span("freshkeep.view.build", attributes) as span:
            entry, status = await self._build_entry(ck, key, principal, sections, refresh)
            span.set_attribute("freshkeep.view.outcome", status)  # hit: the shared store's
            return entry, status

    async def _build_entry(
        self,
        ck: Hashable,
        key: Hashable,
        principal: str | None,
        sections: tuple[str, ...],
        refresh: bool,
    ) -> tuple[Entry, Status]:
        tracker = self._tracker
        wants = self._sources_of(key)
        if refresh and tracker.has_source:
            # a forced refresh reads fresh revisions
            await tracker.resync(self._all_sources(wants) if self.keyed else self.sources)
        base = self._store.peek(ck)
        # A forced rebuild, or a section dropped by hand, is rebuilt: never a delta.
        forced = set(self.sections) if refresh else set(base.invalid if base else ())
        parts: dict[str, SectionEntry] = {}
        have: dict[str, tuple[str, ...]] = {}
        if base is not None:
            for name in self._covers(base, wants) if self.keyed else base.sections:
                parts[name], have[name] = base.sections[name], base.sources[name]
        wanted = set(sections) | (set(self.sections) - set(parts))
        shared = self._keeper.shared
        skey = None if shared is None else self._shared_key(shared, key, principal)
        if shared is None or skey is None:
            return await self._build_sections(
                ck, key, principal, parts, have, wants, wanted, forced
            )
        if (
            base is not None
            and not refresh
            and not base.invalid
            and self.apply_deltas
            and wanted <= parts.keys()
            and self.delta_ready(base, sorted(wanted))
        ):
            # Every wanted section is brought up to date by changes this process knows: no
            # shared-store look and no lock (a delta costs less than the round trips; one that
            # falls back builds without the lock, as when the lock's store is down). The
            # entry is stored for the others in the background, after the key's last one.
            entry, status = await self._build_sections(
                ck, key, principal, parts, have, wants, wanted, forced
            )
            store = self._write_back(shared, skey, entry, None, None)
            self._in_background(ck, _after(self._write_backs.get(ck), store))
            return entry, status
        pending = self._write_backs.get(ck)
        if pending is not None:  # the last build of the key is still being stored
            await asyncio.wait([pending])
        take = self._adopt
        # Sections dropped by hand are rebuilt here, not taken from another instance's entry.
        refresh = refresh or bool(base is not None and base.invalid)
        lock, token, answered = self._keeper.build_lock, None, False
        look = None if refresh else shared.get(skey)
        if lock is not None:
            # Look and lock at once: a build waits for one round trip, not two. An entry that
            # lands between the two is built again here (compare-and-set keeps the newer).
            grab = _acquire(lock, skey, self._keeper.lock_lease)
            found, (token, answered) = await _look_and_lock(look, grab, lock, skey)
        else:
            found = await _done(look)
        if await take(found, parts, have, wants, wanted) and not wanted:
            # Another instance built all of it: a hit from the shared store.
            if token is not None:
                self._in_background(ck, _release(lock, skey, token))
            self.stats.shared_hits += 1
            return self._store_built(ck, key, principal, parts, have), "hit"
        if lock is not None and answered and token is None:
            # Another instance is building it: wait for its entry.
            self.stats.shared_waits += 1
            landed, token = await self._wait_for_shared(
                shared, lock, skey, parts, have, wants, wanted
            )
            if landed:
                self.stats.shared_hits += 1
                return self._store_built(ck, key, principal, parts, have), "hit"
        try:
            entry, status = await self._build_sections(
                ck, key, principal, parts, have, wants, wanted, forced
            )
        except BaseException:
            await _release(lock, skey, token)
            raise
        # The entry is in this process's store: the reads waiting for it are answered now,
        # while it is stored for the other instances and the lock let go, in the background
        # (the next build of the key waits for that; wait_idle() too).
        self._in_background(ck, self._write_back(shared, skey, entry, lock, token))
        return entry, status

    def _in_background(self, ck: Hashable, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` (the end of a build of ``ck`` its reads need not wait for)."""
        task = asyncio.get_running_loop().create_task(work)
        self._write_backs[ck] = task
        task.add_done_callback(partial(_forget, self._write_backs, ck))

    async def _write_back(
        self, shared: SharedStore, skey: str, entry: Entry, lock: Lock | None, token: str | None
    ) -> None:
        try:
            await shared.put(skey, entry)  # compare-and-set: a late build never wins
        except Exception:
            log.exception("storing an entry of view %r in the shared store failed", self.name)
        finally:
            await _release(lock, skey, token)

    def _shared_key(self, shared: SharedStore, key: Hashable, principal: str | None) -> str | None:
        try:
            return shared.key_for(self.name, self._identity(key, principal), version=self.version)
        except FreshkeepError:
            return None  # a key with no stable form across processes stays in this process

    async def _adopt(
        self,
        other: Entry | None,
        parts: dict[str, SectionEntry],
        have: dict[str, tuple[str, ...]],
        wants: Mapping[str, tuple[str, ...]],
        wanted: set[str],
    ) -> bool:
        """Take from ``other`` (built by another instance) the wanted sections that match the
        current revisions; return whether any was taken."""
        if other is None or other.version != self.version:
            return False
        if not self.keyed and other.sources != self._section_sources:
            return False
        covered = self._covers(other, wants) if self.keyed else set(other.sections)
        if self.keyed:  # its build may have found sources this process does not follow yet
            found = {s for name in covered & wanted for s in other.sources[name]}
            await self._learn(sorted(found))
        taken = False
        for name in list(wanted):
            part = other.sections.get(name)
            srcs = other.sources.get(name, ())
            if (
                part is not None
                and name in covered
                and part.fingerprint == self._tracker.current(srcs)
                and not self._expired(name, part)
            ):
                parts[name], have[name] = part, tuple(srcs)
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
        have: dict[str, tuple[str, ...]],
        wants: Mapping[str, tuple[str, ...]],
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
            await self._adopt(await shared.get(skey), parts, have, wants, wanted)
            if not wanted:
                return True, None
            try:
                token = await lock.acquire(skey, self._keeper.lock_lease)
            except FreshkeepError:
                return False, None
            if token is not None:
                # it may have just landed
                await self._adopt(await shared.get(skey), parts, have, wants, wanted)
                if not wanted:
                    await lock.release(skey, token)
                    return True, None
                return False, token
        return False, None

    def _store_built(
        self,
        ck: Hashable,
        key: Hashable,
        principal: str | None,
        parts: dict[str, SectionEntry],
        have: Mapping[str, tuple[str, ...]],
    ) -> Entry:
        entry = Entry(
            self.name,
            self._identity(key, principal),
            {n: parts[n] for n in self.sections},
            {n: have[n] for n in self.sections} if self.keyed else self._section_sources,
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
        have: dict[str, tuple[str, ...]],
        wants: Mapping[str, tuple[str, ...]],
        wanted: set[str],
        forced: set[str] | frozenset[str] = frozenset(),
    ) -> tuple[Entry, Status]:
        tracker = self._tracker
        built = len(wanted)
        multi = len(self.sections) > 1
        applied: list[str] = []
        for name, section in self.sections.items():
            if name not in wanted:
                continue
            if section.apply is not None and name in parts and self.apply_deltas:
                if name in forced:
                    self._fallback("refresh")
                else:
                    part = await self._delta(name, section, parts[name], have.get(name), wants)
                    if part is not None:
                        parts[name] = part
                        applied.append(name)
                        continue
            # Rule 3: the revisions are read before the data.
            srcs = wants[name]
            fingerprint = tracker.current(srcs)
            built_at, built_mono = self._clock.time(), self._mono()
            revisions = dict(zip(srcs, fingerprint, strict=True))
            started = time.perf_counter()
            with tracing.span(
                "freshkeep.view.section",
                {"freshkeep.view": self.name, "freshkeep.view.section": name},
            ):
                if self.replica is None:
                    ctx = BuildContext(
                        self.name, name, key, principal, revisions, self._learn_found
                    )
                    value = to_plain(await section.build(ctx))
                else:  # the revisions and the data of one snapshot of the replica
                    raw, ctx = await build_on_replica(
                        self.replica,
                        self._replica_stats,
                        tracker,
                        self._learn_found,
                        section,
                        self.name,
                        name,
                        key,
                        principal,
                        srcs,
                    )
                    value = to_plain(raw)
                    revisions = dict(ctx.revisions)
                    fingerprint = tuple(revisions[s] for s in srcs)
            elapsed = time.perf_counter() - started
            if multi:
                self._check_section_value(name, value)
            if ctx.found:  # sources the builder found: read before the data they cover
                revisions.update(ctx.found)
                srcs = tuple(sorted(revisions))
                fingerprint = tuple(revisions[s] for s in srcs)
                self.keyed = True  # from now on, entries carry their own sources
            parts[name] = SectionEntry(encode(value), fingerprint, built_at, built_mono)
            have[name] = srcs
            s = self.stats
            s.builds[name] = s.builds.get(name, 0) + 1
            s.build_seconds[name] = elapsed
            s.last_build_at = built_at
            s.failing_since = None
            if self.observers:
                self._observe_build(name, elapsed)
        status: Status = "miss" if built == len(self.sections) else "section"
        entry = self._store_built(ck, key, principal, parts, have)
        if applied:
            entry.memo[DELTA] = tuple(applied)
        return entry, status

    # -- deltas ----------------------------------------------------------------------------

    def _fallback(self, reason: str) -> None:
        fallbacks = self.stats.delta_fallbacks
        fallbacks[reason] = fallbacks.get(reason, 0) + 1

    def delta_ready(self, entry: Entry, sections: Sequence[str]) -> bool:
        """Whether every one of ``sections`` of ``entry`` can be brought up to date by
        applying changes this process knows (so it is cheaper to do now than to serve stale)."""
        log_ = self._keeper.changes
        for name in sections:
            section = self.sections.get(name)
            part = entry.sections.get(name)
            if section is None or section.apply is None or part is None or name in entry.invalid:
                return False
            srcs = entry.sources[name]
            if self._expired(name, part):
                return False
            changes, _ = log_.between(srcs, part.fingerprint, self._tracker.current(srcs))
            if changes is None:
                return False
        return True

    async def _delta(
        self,
        name: str,
        section: Section,
        part: SectionEntry,
        srcs: tuple[str, ...] | None,
        wants: Mapping[str, tuple[str, ...]],
    ) -> SectionEntry | None:
        """``part`` brought up to the current revisions by ``section.apply``, or ``None``
        (counted by reason) when that cannot be done exactly: the section is rebuilt."""
        if srcs != wants[name]:
            self._fallback("sources")
            return None
        if self._expired(name, part):
            self._fallback("expired")
            return None
        # Rule 3 holds: the revisions the value will carry are read before the changes.
        now = self._tracker.current(srcs)
        changes, reason = self._keeper.changes.between(srcs, part.fingerprint, now)
        if changes is None:
            self._fallback(reason or "gap")
            return None
        assert section.apply is not None
        started = time.perf_counter()
        try:
            current = part.body if section.encoded else orjson.loads(body_bytes(part.body))
            value = to_plain(await section.apply(current, changes))
            body = value if isinstance(value, Chunks) else encode(value)
            if len(self.sections) > 1 and not isinstance(value, bytes | bytearray | Chunks):
                self._check_section_value(name, value)
        except Rebuild:
            self._fallback("apply")
            return None
        except Exception:
            log.exception("applying changes to section %r of view %r failed", name, self.name)
            self._fallback("apply")
            return None
        s = self.stats
        s.deltas[name] = s.deltas.get(name, 0) + 1
        s.delta_seconds[name] = time.perf_counter() - started
        # built_at stays the last rebuild's (max_age caps what no change shows); the value
        # is confirmed current now.
        return SectionEntry(body, now, part.built_at, self._mono())

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
        retry_at = self._retry_at
        prev = retry_at.pop(ck, None)
        attempt = 1 if prev is None else prev[1] + 1
        delay = backoff(attempt, self._retry_backoff, self._max_retry_backoff)
        now = self._mono()
        if len(retry_at) >= _MAX_RETRIES:  # bounded: forget the expired, then the oldest
            for k in [k for k, (at, _) in retry_at.items() if at <= now]:
                del retry_at[k]
            while len(retry_at) >= _MAX_RETRIES:
                del retry_at[next(iter(retry_at))]
        retry_at[ck] = (now + delay, attempt)
        log.warning("build of view %r failed: %s", self.name, s.last_error)


async def _release(lock: Lock | None, name: str, token: str | None) -> None:
    if lock is not None and token is not None:
        try:
            await lock.release(name, token)
        except FreshkeepError:
            pass  # the lease expires by itself


async def _after(prior: asyncio.Task[None] | None, work: Coroutine[Any, Any, None]) -> None:
    """``work`` once ``prior`` (the last storing of the same key) is done."""
    if prior is not None:
        await asyncio.wait([prior])
    await work


def _forget(tasks: dict[Hashable, asyncio.Task[None]], key: Hashable, task: object) -> None:
    if tasks.get(key) is task:
        del tasks[key]


async def _acquire(lock: Lock, name: str, lease: float) -> tuple[str | None, bool]:
    """The lock's token (``None``: another holder has it) and whether the lock answered."""
    try:
        return await lock.acquire(name, lease), True
    except FreshkeepError:
        return None, False  # the lock's store is down: build here


async def _done(look: Awaitable[Entry | None] | None) -> Entry | None:
    return None if look is None else await look


async def _look_and_lock(
    look: Awaitable[Entry | None] | None,
    grab: Awaitable[tuple[str | None, bool]],
    lock: Lock,
    name: str,
) -> tuple[Entry | None, tuple[str | None, bool]]:
    """The look in the shared store and the lock's answer, both in flight at once; a look that
    raises lets go of a lock it took first."""
    found, grabbed = await asyncio.gather(_done(look), grab, return_exceptions=True)
    if isinstance(grabbed, BaseException):
        raise grabbed
    if isinstance(found, BaseException):
        await _release(lock, name, grabbed[0])
        raise found
    return found, grabbed
