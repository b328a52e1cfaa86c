"""The :class:`ChangeNotifier`: one notification per confirmed change of a subject's state."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import orjson

from freshkeep.core.clock import SYSTEM_CLOCK, Clock
from freshkeep.core.component import Component, Kind, Snapshot
from freshkeep.exceptions import ConfigurationError
from freshkeep.notify._store import MemoryStateStore, StateStore, canonical

if TYPE_CHECKING:
    from freshkeep.keeper import Keeper

log = logging.getLogger("freshkeep.notify")

NoticeKind = Literal["new", "change", "recovered"]
Outcome = Literal["sent", "deduped", "skipped", "pending", "failed", "baseline", "error"]
"""What :meth:`ChangeNotifier.observe` did: ``sent`` a notification; ``deduped`` (the state is
the confirmed one); ``skipped`` (a terminal state); ``pending`` (hysteresis: not yet seen enough
times); ``failed`` (the send raised; retried on the next observation); ``baseline`` (a first
state recorded without sending); ``error`` (the state store could not be read)."""


@dataclass(frozen=True, slots=True)
class Notice:
    """What a notifier's ``send`` is given."""

    notifier: str
    subject: str
    state: Any
    previous: Any
    """The last confirmed state (decoded from JSON), ``None`` for a subject's first notice."""
    kind: NoticeKind
    """``new`` (no confirmed state before), ``change``, or ``recovered`` (a problem state
    ended: the previous state was a problem, this one is not)."""


Send = Callable[[Notice], Any]
"""``send(notice)``, sync or ``async``; raising means the notification was not delivered."""


@dataclass(slots=True)
class NotifierStats:
    """Counters of one notifier (read by health checks and metrics)."""

    observations: int = 0
    sent: int = 0
    recovered: int = 0
    """Sends of kind ``recovered`` (also counted in ``sent``)."""
    deduped: int = 0
    skipped: int = 0
    pending: int = 0
    failed: int = 0
    flaps: int = 0
    """Changes seen fewer than ``confirm`` times in a row before the state moved again."""
    baseline: int = 0
    store_errors: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    last_sent_at: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class NotifierSnapshot(Snapshot):
    """A notifier's counters now (:meth:`ChangeNotifier.snapshot`)."""

    notifier: str
    """The notifier's name (as ``name``: the key of the stats JSON)."""
    store: str
    """The class of its state store."""
    confirm: int
    subjects: int
    """Subjects with a confirmed state."""
    observations: int
    sent: int
    recovered: int
    deduped: int
    skipped: int
    pending: int
    failed: int
    flaps: int
    baseline: int
    store_errors: int
    unsaved: int
    """Confirmed states not saved yet (their store failed)."""
    last_error: str | None
    last_error_at: float | None
    last_sent_at: float | None


class ChangeNotifier(Component):
    """Sends a notification only when a subject's state differs from its last *confirmed* one.

    ``observe(subject, state)`` is called on every reconciliation tick; it sends through
    ``send`` only on a change, and records the new state as confirmed only once ``send``
    returned, so a failed send is retried on the next tick instead of being lost.

    - ``terminal(state) -> bool``: states never notified (counted as ``skipped``).
    - ``problem(state) -> bool``: when a problem state ends, the notice is of kind
      ``recovered``.
    - ``confirm=N``: hysteresis; a new state is notified after ``N`` consecutive
      observations of it. A change that does not last that long counts as a flap.
    - ``notify_initial=False``: a subject's first state is recorded at once, without a
      notification (outcome ``baseline``).
    - ``store``: where confirmed states live (:class:`MemoryStateStore` by default); with a
      persistent store, a restart does not send everything again. States are JSON.
    - ``keeper``: register on a keeper, so the notifier shows in its stats.

    One process should run a given notifier name at a time: each instance remembers the states
    it confirmed, so two instances observing the same subjects would both send.
    """

    kind: ClassVar[Kind] = "notifier"

    def __init__(
        self,
        name: str,
        send: Send,
        *,
        store: StateStore | None = None,
        terminal: Callable[[Any], bool] | None = None,
        problem: Callable[[Any], bool] | None = None,
        confirm: int = 1,
        notify_initial: bool = True,
        clock: Clock | None = None,
        keeper: Keeper | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"a notifier name must be a non-empty string, not {name!r}")
        if isinstance(confirm, bool) or not isinstance(confirm, int) or confirm < 1:
            raise ConfigurationError(f"confirm must be an int >= 1, not {confirm!r}")
        self.name = name
        self.store: StateStore = store if store is not None else MemoryStateStore()
        self.terminal = terminal
        self.problem = problem
        self.confirm = confirm
        self.notify_initial = notify_initial
        self.stats = NotifierStats()
        self._send = send
        self._clock: Clock = (
            clock if clock is not None else keeper.clock if keeper is not None else SYSTEM_CLOCK
        )
        self._confirmed: dict[str, bytes | None] = {}
        self._pending: dict[str, tuple[bytes, int]] = {}
        self._unsaved: set[str] = set()
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}
        if keeper is not None:
            keeper.register(self)

    async def observe(self, subject: str | int, state: Any) -> Outcome:
        """Observe ``subject`` in ``state``; notify if that is a confirmed change.

        Never raises for a failing ``send`` or store (they are counted); raises
        ``EncodeError`` for a state that is not JSON-encodable.
        """
        key = _subject(subject)
        enc = canonical(state)
        self.stats.observations += 1
        lock = self._lock(key)
        try:
            async with lock:
                return await self._observe(key, state, enc)
        finally:
            self._unlock(key)

    async def _observe(self, key: str, state: Any, enc: bytes) -> Outcome:
        s = self.stats
        try:
            confirmed = await self._confirmed_state(key)
        except Exception as exc:
            self._error(exc, "reading the state store")
            s.store_errors += 1
            return "error"
        if key in self._unsaved and confirmed is not None:
            await self._save(key, confirmed)
        if enc == confirmed:
            if self._pending.pop(key, None) is not None:
                s.flaps += 1
            s.deduped += 1
            return "deduped"
        if self.terminal is not None and self.terminal(state):
            self._pending.pop(key, None)
            s.skipped += 1
            return "skipped"
        if confirmed is None and not self.notify_initial:
            self._pending.pop(key, None)
            await self._confirm(key, enc)
            s.baseline += 1
            return "baseline"
        if self.confirm > 1:
            seen, count = self._pending.get(key, (b"", 0))
            if seen == enc:
                count += 1
            else:
                if count:
                    s.flaps += 1
                count = 1
            self._pending[key] = (enc, count)
            if count < self.confirm:
                s.pending += 1
                return "pending"
        previous = None if confirmed is None else orjson.loads(confirmed)
        kind: NoticeKind = "new" if confirmed is None else "change"
        if (
            self.problem is not None
            and confirmed is not None
            and self.problem(previous)
            and not self.problem(state)
        ):
            kind = "recovered"
        try:
            result = self._send(Notice(self.name, key, state, previous, kind))
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            s.failed += 1
            self._error(exc, f"sending the notice for {key!r}")
            return "failed"
        self._pending.pop(key, None)
        s.sent += 1
        s.recovered += kind == "recovered"
        s.last_sent_at = self._clock.time()
        await self._confirm(key, enc)
        return "sent"

    async def preload(self) -> int:
        """Read every confirmed state of this notifier from the store in one call (instead of
        one read per subject on its first observation); return how many were read."""
        states = await self.store.get_all(self.name)
        for key, enc in states.items():
            self._confirmed.setdefault(key, enc)
        return len(states)

    async def confirmed(self, subject: str | int) -> Any:
        """The last confirmed state of ``subject`` (decoded), or ``None``."""
        enc = await self._confirmed_state(_subject(subject))
        return None if enc is None else orjson.loads(enc)

    async def forget(self, subject: str | int) -> None:
        """Drop ``subject``'s confirmed state (a deleted task): its next state is ``new``."""
        key = _subject(subject)
        self._confirmed.pop(key, None)
        self._pending.pop(key, None)
        self._unsaved.discard(key)
        await self.store.delete(self.name, key)

    def snapshot(self) -> NotifierSnapshot:
        """The notifier's counters now."""
        s = self.stats
        return NotifierSnapshot(
            name=self.name,
            notifier=self.name,
            store=type(self.store).__name__,
            confirm=self.confirm,
            subjects=sum(1 for v in self._confirmed.values() if v is not None),
            observations=s.observations,
            sent=s.sent,
            recovered=s.recovered,
            deduped=s.deduped,
            skipped=s.skipped,
            pending=s.pending,
            failed=s.failed,
            flaps=s.flaps,
            baseline=s.baseline,
            store_errors=s.store_errors,
            unsaved=len(self._unsaved),
            last_error=s.last_error,
            last_error_at=s.last_error_at,
            last_sent_at=s.last_sent_at,
        )

    # -- internals --------------------------------------------------------------------------

    async def _confirmed_state(self, key: str) -> bytes | None:
        try:
            return self._confirmed[key]
        except KeyError:
            pass
        enc = await self.store.get(self.name, key)
        return self._confirmed.setdefault(key, enc)

    async def _confirm(self, key: str, enc: bytes) -> None:
        self._confirmed[key] = enc
        await self._save(key, enc)

    async def _save(self, key: str, enc: bytes) -> None:
        try:
            await self.store.set(self.name, key, enc, self._clock.time())
        except Exception as exc:
            # Confirmed in this process (no re-send here); saved again on the next observation.
            self._unsaved.add(key)
            self.stats.store_errors += 1
            self._error(exc, f"saving the state of {key!r}")
        else:
            self._unsaved.discard(key)

    def _error(self, exc: BaseException, doing: str) -> None:
        s = self.stats
        s.last_error = f"{type(exc).__name__}: {exc}"
        s.last_error_at = self._clock.time()
        log.warning("notifier %r: %s failed: %s", self.name, doing, s.last_error)

    def _lock(self, key: str) -> asyncio.Lock:
        lock, users = self._locks.get(key) or (asyncio.Lock(), 0)
        self._locks[key] = (lock, users + 1)
        return lock

    def _unlock(self, key: str) -> None:
        lock, users = self._locks[key]
        if users <= 1:
            del self._locks[key]
        else:
            self._locks[key] = (lock, users - 1)


def _subject(subject: str | int) -> str:
    if isinstance(subject, bool) or not isinstance(subject, str | int):
        raise ConfigurationError(f"a subject must be a str or an int, not {subject!r}")
    return str(subject)
